"""Secrets are neither indexed nor shown: the name and content rules of ``sources``.

The tokens below are made up (random letters of the right shape), or are the
documented examples of their providers; none is live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.records import display_path
from rcm_dask.search import SearchIndex
from rcm_dask.sources import is_sensitive_name, sensitive_content
from rcm_dask.stores.manifest import Manifest
from rcm_dask.testing import HashEmbedder

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example
SLACK_HOOK = "https://hooks.slack.com/services/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"
PEM_BODY = "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"

PASSWORD = "password literal"
AWS_KEY_ID = "AWS access key id"

# (Rust source, label of the secret it holds or None)
CONTENT_CASES: list[tuple[str, str | None]] = [
    # JWTs
    (f'const T: &str = "{JWT}";', "JWT"),
    (f'req.header("Authorization", "Bearer {JWT}");', "JWT"),
    ("// unsigned (alg none): eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.", None),
    ('let claims = "eyJzdWIiOiIxMjM0NTY3ODkwIn0"; // a payload alone', None),
    # AWS secret access keys
    (
        f'const CFG: &str = "[default]\\naws_secret_access_key = {AWS_SECRET}\\n";',
        "AWS secret access key",
    ),
    (f'std::env::set_var("AWS_SECRET_ACCESS_KEY", "{AWS_SECRET}");', "AWS secret access key"),
    (f'r#"{{"SecretAccessKey": "{AWS_SECRET}"}}"#', "AWS secret access key"),
    (f'builder.secret_access_key("{AWS_SECRET}")', "AWS secret access key"),
    ('let k = env::var("AWS_SECRET_ACCESS_KEY")?;', None),
    ("// aws_secret_access_key = " + "X" * 40, None),
    ('aws_secret_access_key: "<your secret access key>"', None),
    # Slack webhooks
    (f'const HOOK: &str = "{SLACK_HOOK}";', "Slack webhook URL"),
    ('"https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"', None),
    ('"https://hooks.slack.com/services/T00INTRO/B00INTRO/introplaceholder"', None),
    ('"https://hooks.slack.com/services/T.../B.../xxx"', None),
    # AWS key ids cut into literals
    ('const K: &str = concat!("AKIA", "QYLPMN5HFIQR7XYA");', AWS_KEY_ID),
    ('concat!(\n    "AKIA",\n    "QYLP",\n    "MN5HFIQR7XYA",\n)', AWS_KEY_ID),
    ('concat!("key=", "ASIA", "QYLPMN5HFIQR7XYA")', AWS_KEY_ID),
    ('["AKIA", "QYLPMN5HFIQR7XYA"].concat()', AWS_KEY_ID),
    ('["AKIA", "QYLPMN5H", "FIQR7XYA"].join("")', AWS_KEY_ID),
    ('let k = "AKIA".to_owned() + "QYLPMN5HFIQR7XYA";', AWS_KEY_ID),
    ('let k = String::from("AKIA") + &"QYLPMN5HFIQR7XYA";', AWS_KEY_ID),
    ('let k = "AKIA" + "QYLPMN5HFIQR7XYA";', AWS_KEY_ID),
    ('format!("{}{}", "AKIA", "QYLPMN5HFIQR7XYA")', AWS_KEY_ID),
    ('const K: &str = "AKIAQYLPMN5HFIQR7XYA";', AWS_KEY_ID),
    ('concat!("AKIA", env!("AWS_KEY_REST"))', None),
    ('concat!("AKIA", "SHORT")', None),
    ('concat!("AKIA", "QYLPMN5HFIQR7XYA", "MORE")', None),  # 24 letters: no key id
    ('const PREFIXES: [&str; 5] = ["AKIA", "ASIA", "AROA", "AIDA", "ANPA"];', None),
    ('match id { "AKIA" | "ASIA" => long_term(id), _ => other(id) }', None),
    # password, token and key literals
    ('const DB_PASSWORD: &str = "pr0d-Hunter2!";', PASSWORD),
    ('let cfg = Config { user: "app", password: "s3cr3t-P4ss" };', PASSWORD),
    ('let api_key = "k8Jd92LmQz0PxV7r";', PASSWORD),
    ('const SECRET_TOKEN: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a0";', PASSWORD),
    ('static AUTH_TOKEN: &\'static str = "Zq81mXc0Lp2";', PASSWORD),
    ('let secretKey = "k8Jd92LmQz0PxV7r";', PASSWORD),
    ('let pwd: String = String::from("Tr0ub4dor&3");', PASSWORD),
    ('Login { password: Some("Tr0ub4dor&3".into()) }', PASSWORD),
    ('const CONFIG: &str = r#"{"password": "Tr0ub4dor&3"}"#;', PASSWORD),
    ('const CONFIG: &str = "{\\"apiKey\\": \\"k8Jd92LmQz0PxV7r\\"}";', PASSWORD),
    ('const TOML: &str = r#"\n[db]\npassword = "Tr0ub4dor&3"\n"#;', PASSWORD),
    ('const HEADERS: &str = r#"{"x-api-key": "k8Jd92LmQz0PxV7r"}"#;', PASSWORD),
    # ... and what is not one
    ('let password = env::var("DB_PASSWORD")?;', None),
    ('let password = std::env::var("DB_PASSWORD").unwrap_or_default();', None),
    ("pub struct Login { pub user: String, pub password: String }", None),
    ("struct Db { password: Option<String>, api_key: &'static str }", None),
    ('Login { password: "" }', None),
    ('Login { password: "password" }', None),
    ('Login { password: "changeme" }', None),
    ('Login { password: "changeme123" }', None),
    ('Login { password: "xxxxxxxx" }', None),
    ('Login { password: "********" }', None),
    ('Login { password: "<password>" }', None),
    ('Login { password: "${DB_PASSWORD}" }', None),
    ('Login { password: "{{password}}" }', None),
    ('let line = format!("password={}", password);', None),
    ('return Err("invalid password: too short");', None),
    ('let token = "a1b2c3";', None),  # fewer than 8 characters
    ('const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";', None),
    ('const API_KEY_ENV: &str = "OPENAI_API_KEY";', None),
    ('let api_key = "OPENAI_API_KEY_2";', None),
    ('let pwd = "/home/user/src2";', None),
    ('let tokens = "a1b2c3d4e5f6";', None),
    ('let tokenizer = "bert-base-uncased-v2";', None),
    ('let token = "stress-token-abc123";', None),
    ('const TEST_API_KEY: &str = "sk-proj-TEST-abc123";', None),
    ('let password_file = "secrets/db-pass2.txt";', None),
    ('const PASSWORD_OID: &str = "2.5.4.35";', None),
    ('let ts: TokenStream = "foo::bar(1);".parse()?;', None),
    ('if password == "hunter2hunter2" {}', None),  # a comparison, not an assignment
    # private key blocks: a body, not a header named in code or docs
    (f'const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\\n{PEM_BODY}\\n";', "private key block"),
    (
        f'const KEY: &str = "-----BEGIN PRIVATE KEY-----\\n\\\n    {PEM_BODY}\\n\\\n";',
        "private key block",
    ),
    (f"/// -----BEGIN EC PRIVATE KEY-----\n/// {PEM_BODY}\n", "private key block"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        "private key block",
    ),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A\n",
        "private key block",
    ),
    ('if !key.starts_with(b"-----BEGIN PRIVATE KEY-----") { return Err(NotPkcs8) }', None),
    ("/// The output has a header of `-----BEGIN RSA PRIVATE KEY-----`.", None),
    ('r"-----BEGIN PRIVATE KEY-----"\nconsistent!(click_1, r"x");', None),
    (
        'let pem = b"-----BEGIN RSA PRIVATE KEY-----\\n\\\n    -----END RSA PRIVATE KEY-----\\n";',
        None,
    ),
    # the formats recognized before
    ('const T: &str = "ghp_' + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5" + '";', "GitHub token"),
    ('const T: &str = "xoxb-' + "123456789012-abcdefghijkl" + '";', "Slack token"),
    ('const K: &str = "AIza' + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q" + '";', "Google API key"),
    ('const K: &str = "sk_live_' + "4eC39HqLyjWDarjtT1zdp7dc" + '";', "Stripe live key"),
    ('const K: &str = "sk_test_' + "4eC39HqLyjWDarjtT1zdp7dc" + '";', None),
    ('const K: &str = "XAKIAQYLPMN5HFIQR7XYA";', None),  # not at a word start
    ("fn main() {}", None),
]


@pytest.mark.parametrize(("source", "label"), CONTENT_CASES)
def test_sensitive_content(source: str, label: str | None) -> None:
    assert sensitive_content(source.encode()) == (label or "")


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("x.key.rs", True),
        ("src/deploy.key.rs", True),
        ("server.pem.rs", True),
        ("client.p12.rs", True),
        ("release.keystore.rs", True),
        ("tls.key", True),
        ("id_rsa.rs", True),
        (".env", True),
        ("credentials", True),  # the AWS shared credentials file
        ("credentials.json", True),
        ("secrets.toml", True),
        ("secrets.key.rs", True),
        # modules named for what they handle: plain code, their content is checked
        ("credentials.rs", False),
        ("src/aws_credentials.rs", False),
        ("secrets.rs", False),
        ("key.rs", False),
        ("keys.rs", False),
        ("private_key.rs", False),
        ("lib.register_all.rs", False),
        ("keyword.rs", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert is_sensitive_name(name) is sensitive


def test_secret_files_are_neither_indexed_nor_searchable(tmp_path: Path) -> None:
    """A crate where one file holds a JWT, one is named ``x.key.rs`` and one holds a
    password literal: the three are skipped as sensitive, the rest is indexed."""
    root = tmp_path / "crate"
    src = root / "src"
    src.mkdir(parents=True)
    (src / "lib.rs").write_text(
        "pub mod auth;\n\n/// Adds one.\npub fn add_one(x: u32) -> u32 {\n    x + 1\n}\n"
    )
    (src / "auth.rs").write_text(
        "/// The session of the demo user.\n"
        f'pub fn zebra_session() -> &\'static str {{\n    "{JWT}"\n}}\n'
    )
    (src / "x.key.rs").write_text("pub fn quokka_key() -> u8 {\n    7\n}\n")
    (src / "db.rs").write_text(
        'pub const DB_PASSWORD: &str = "pr0d-Hunter2!";\n\npub fn wombat_connect() {}\n'
    )
    (src / "credentials.rs").write_text(
        "/// Reads the key from the environment.\npub fn koala_credentials() -> Option<String> {\n"
        '    std::env::var("AWS_SECRET_ACCESS_KEY").ok()\n}\n'
    )
    idx = tmp_path / "idx"
    stats = index(str(root), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())

    assert stats.skipped["sensitive"] == 3
    shown = stats.skipped_examples["sensitive"]
    for path in ("src/auth.rs", "src/x.key.rs", "src/db.rs"):
        assert any(display_path(path) in e for e in shown), shown
    m = Manifest(idx, readonly=True)
    try:
        files = {f.path for f in m.files()}
    finally:
        m.close()
    assert files == {"src/lib.rs", "src/credentials.rs"}
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        paths = {p["path"] for p in s.bm25.iter_payloads()}
        assert paths == {"src/lib.rs", "src/credentials.rs"}
        for query in ("zebra_session", "quokka_key", "wombat_connect", JWT.split(".")[0]):
            hits = s.search(query, mode="bm25", limit=10)
            assert {h.path for h in hits} <= {"src/lib.rs", "src/credentials.rs"}, query
        assert [h.path for h in s.search("koala_credentials", mode="bm25", limit=1)] == [
            "src/credentials.rs"
        ]
        assert [h.path for h in s.search("add_one", mode="bm25", limit=1)] == ["src/lib.rs"]
