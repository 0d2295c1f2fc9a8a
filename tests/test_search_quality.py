"""benchmarks/search_quality: the metrics on hand-computed cases, the question set
against the real chunker, and the runner end to end on a one-file scope."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "search_quality"


def _load(name: str) -> ModuleType:
    """Import a module of the benchmark folder by path (benchmarks are not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # run.py and check_questions.py import evalset
    if name == "evalset":
        return importlib.import_module(name)  # one module object, shared with the scripts
    module_name = f"search_quality_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


evalset = _load("evalset")
A, B, C, X = ("a.rs", "A"), ("a.rs", "B"), ("b.rs", "C"), ("x.rs", "X")
LOG2_3 = math.log2(3)


@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "expected"),
    [
        ([[X], [X], [A]], {A: 2}, 10, 1 / 3),
        ([[X], [B], [A]], {A: 2, B: 1}, 10, 1 / 2),  # a grade-1 item counts as a hit
        ([[X], [X], [A]], {A: 2}, 2, 0.0),  # beyond the cut-off
        ([], {A: 2}, 10, 0.0),
        ([[A, B]], {A: 2, B: 1}, 10, 1.0),  # a file covering two items
    ],
)
def test_reciprocal_rank(ranked, relevant, k, expected) -> None:  # type: ignore[no-untyped-def]
    assert evalset.reciprocal_rank(ranked, relevant, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "expected"),
    [
        ([[A], [X], [C]], {A: 2, B: 1, C: 1}, 10, 2 / 3),
        ([[A], [X], [C]], {A: 2, B: 1, C: 1}, 2, 1 / 3),
        ([[A], [A]], {A: 2, B: 1}, 10, 1 / 2),  # a repeat finds nothing new
        ([[A, B]], {A: 2, B: 1}, 10, 1.0),
        ([[X]], {}, 10, 0.0),
    ],
)
def test_recall(ranked, relevant, k, expected) -> None:  # type: ignore[no-untyped-def]
    assert evalset.recall(ranked, relevant, k) == pytest.approx(expected)


IDEAL_2_1 = 2 + 1 / LOG2_3  # grades 2 and 1 at ranks 1 and 2


@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "expected"),
    [
        ([[A], [B]], {A: 2, B: 1}, 10, 1.0),
        # the grade-1 item first: (1 + 2/log2 3) / (2 + 1/log2 3)
        ([[B], [A]], {A: 2, B: 1}, 10, (1 + 2 / LOG2_3) / IDEAL_2_1),
        # X, A, B: 2/log2 3 + 1/log2 4 over the ideal = 0.66967
        ([[X], [A], [B]], {A: 2, B: 1}, 10, (2 / LOG2_3 + 0.5) / IDEAL_2_1),
        ([[X], [A], [B]], {A: 2, B: 1}, 2, (2 / LOG2_3) / IDEAL_2_1),
        # one file holding both items earns one item's best grade
        ([[A, B]], {A: 2, B: 1}, 10, 2 / IDEAL_2_1),
        ([[A], [A], [B]], {A: 2, B: 1}, 10, (2 + 0.5) / IDEAL_2_1),  # a repeat earns 0
        ([[X]], {A: 2}, 10, 0.0),
    ],
)
def test_ndcg(ranked, relevant, k, expected) -> None:  # type: ignore[no-untyped-def]
    assert evalset.ndcg(ranked, relevant, k) == pytest.approx(expected)


def test_ndcg_hand_value() -> None:
    assert evalset.ndcg([[X], [A], [B]], {A: 2, B: 1}) == pytest.approx(0.66967, abs=1e-5)


def test_percentile() -> None:
    assert evalset.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert evalset.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert math.isnan(evalset.percentile([], 50))


def test_validate_reports_every_problem() -> None:
    good = evalset.Question("q1", "where?", {("a/src/x.rs", "x::f"): 2}, "a", "where")
    questions = [
        good,
        evalset.Question("q1", "where else?", {("a/src/x.rs", "x::g"): 2}, "a", "where"),
        evalset.Question("q2", "which?", {("a/src/x.rs", "x::f"): 1}, "b", "guess"),
        evalset.Question("q3", "WHERE?", {("a/src/y.rs", "y::f"): 3}, "a", "how"),
    ]
    problems = evalset.validate(questions, {"a/src/x.rs": {"x::f"}})
    text = "\n".join(problems)
    assert "duplicate id q1" in text
    assert "duplicate question 'where?'" in text
    assert "q1: a/src/x.rs has no chunk 'x::g'" in text
    assert "q2: unknown kind 'guess'" in text
    assert "q2: no item of grade 2" in text
    assert "q2: crate 'b' holds none of its items" in text
    assert "q3: no file a/src/y.rs" in text
    assert "q3: grade 3" in text
    assert "only 4 questions" in text
    assert evalset.validate([good] * 1, {"a/src/x.rs": {"x::f"}}) == [
        f"only 1 questions; the set needs {evalset.MIN_QUESTIONS}"
    ]


def test_question_set_matches_the_chunker(rust_src: Path) -> None:
    """Every relevant item is a chunk the project's chunker makes for its file."""
    check = _load("check_questions")
    questions = evalset.load_questions()
    assert check.check(questions, rust_src / "library") == []
    assert len(questions) >= evalset.MIN_QUESTIONS
    assert len({q.crate for q in questions}) >= 3
    assert len({q.area for q in questions}) >= 8
    unnamed = sum(not q.mentions_identifier for q in questions)
    assert 0.3 <= unnamed / len(questions) <= 0.7


def test_check_questions_cli(rust_src: Path, tmp_path: Path) -> None:
    """The validator's command: counts and exit 0 on the set, the misses and exit 1 on a bad one."""
    script = BENCH / "check_questions.py"
    lib = str(rust_src / "library")
    ok = subprocess.run(
        [sys.executable, str(script), "--library", lib], check=False, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "by crate:" in ok.stdout and "by kind:" in ok.stdout
    bad = tmp_path / "bad.jsonl"
    line = json.loads((BENCH / "questions.jsonl").read_text().splitlines()[0])
    line["relevant"][0]["qualname"] += "_nope"
    bad.write_text(json.dumps(line) + "\n")
    out = subprocess.run(
        [sys.executable, str(script), "--library", lib, "--questions", str(bad)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert f"{line['id']}: {line['relevant'][0]['path']} has no chunk" in out.stdout


def test_exclude_patterns_leave_only_the_scope(tmp_path: Path) -> None:
    from rcm_dask.sources import discover_sources, open_root

    run = _load("run")
    for rel in (
        "a/src/lib.rs",
        "a/src/x/mod.rs",
        "a/src/x/tests.rs",
        "a/src/skip/y.rs",
        "a/tests/t.rs",
        "b/src/lib.rs",
        "top.rs",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("fn f() {}\n")
    scope = run.Scope("t", ("a/src",), ("a/src/skip",), ("tests.rs",))
    patterns = run.exclude_patterns(tmp_path, scope)
    found = discover_sources(open_root(str(tmp_path)), exclude=tuple(patterns)).files
    assert [f.path for f in found] == ["a/src/lib.rs", "a/src/x/mod.rs"]


def _runner_command(rust_src: Path, scope: str, out: Path, *options: str) -> list[str]:
    """The documented run.py command on one scope of rust-src, writing into ``out``."""
    library = ["--library", str(rust_src / "library"), "--scope", scope]
    return [sys.executable, str(BENCH / "run.py"), *library, *options, "--out", str(out)]


def test_runner_end_to_end_on_one_file(rust_src: Path, tmp_path: Path) -> None:
    """The documented command on a one-file scope, real Tantivy and Qdrant, fake vectors."""
    out = tmp_path / "out"
    cmd = _runner_command(
        rust_src, "alloc/src/collections/binary_heap.rs", out, "--embedder", "hash", "--warmup", "1"
    )
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "last_run.json").read_text())
    wanted = [
        q.id
        for q in evalset.load_questions()
        if {p for p, _ in q.relevant} == {"alloc/src/collections/binary_heap.rs"}
    ]
    assert [r["id"] for r in result["questions"]] == wanted and len(wanted) >= 3
    assert result["questions_used"] == len(wanted)
    assert result["scope"]["files"] == 1 and result["index"]["files"] == 1
    for method in ("file-bm25", "bm25", "vector", "hybrid"):
        s = result["summary"][method]
        for metric in ("mrr", "recall", "ndcg"):
            assert 0.0 <= s[metric] <= 1.0
        assert 0.0 < s["p50_ms"] <= s["p95_ms"]
    # one file: the baseline returns it first for every question
    assert result["summary"]["file-bm25"]["mrr"] == 1.0
    assert result["summary"]["file-bm25"]["recall"] == 1.0
    # the chunk searches rank items: BM25 finds some of them among ~250 chunks
    assert result["summary"]["bm25"]["mrr"] > 0.0
    assert "| hybrid |" in done.stdout
    assert "hash embedder" in (out / "REPORT_RUST_SRC.md").read_text()


@pytest.mark.slow
def test_runner_with_a_real_model(rust_src: Path, tmp_path: Path, tiny_model: Path) -> None:
    """The same command through the real embedding path (a tiny local model)."""
    out = tmp_path / "out"
    cmd = _runner_command(rust_src, "core/src/cell.rs", out, "--model", str(tiny_model))
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "last_run.json").read_text())
    assert result["questions_used"] >= 3
    assert result["model"].startswith(tiny_model.name)
    assert all(r["scores"]["vector"]["ndcg"] >= 0.0 for r in result["questions"])
    assert result["summary"]["vector"]["p50_ms"] > 0.0


# --------------------------------------------------------------------------- twelve crates


def test_crate_set_shape_split_and_no_reserved_crates() -> None:
    crates_run = _load("crates_run")
    questions = crates_run.load_crate_questions()
    crates = {q.crate for q in questions}
    assert len(questions) >= 200 and len(crates) >= 8
    assert crates == set(crates_run.TUNING) | set(crates_run.HELD_BACK)
    assert not set(crates_run.TUNING) & set(crates_run.HELD_BACK)  # whole crates held back
    reserved = ("tokio", "serde", "axum", "burn")
    assert not any(r in c for c in crates for r in reserved)
    assert not any(r in q.question.lower() for q in questions for r in reserved)
    kinds = [q.kind for q in questions]
    assert kinds.count("symbol") / len(kinds) == pytest.approx(0.15, abs=0.03)
    assert kinds.count("behaviour") / len(kinds) == pytest.approx(0.5, abs=0.05)
    assert all(2 in q.files.values() for q in questions)


def test_file_level_metrics_count_a_file_once_at_its_first_rank() -> None:
    crates_run = _load("crates_run")
    relevant = {"a.rs": 2, "b.rs": 1}
    ideal = 2 + 1 / LOG2_3
    # a.rs at 1; its second hit earns nothing and pushes b.rs to rank 3
    assert crates_run.file_ndcg(["a.rs", "a.rs", "b.rs"], relevant) == pytest.approx(
        (2 + 1 / 2) / ideal
    )
    assert crates_run.file_ndcg(["a.rs", "b.rs"], relevant) == pytest.approx(1.0)
    assert crates_run.file_ndcg(["x.rs"], relevant) == 0.0
    assert crates_run.file_mrr(["x.rs", "x.rs", "b.rs"], relevant) == pytest.approx(1 / 3)
    items = {("a.rs", "f"): 2}
    assert crates_run.item_ndcg([("a.rs", "g"), ("a.rs", "f")], items) == pytest.approx(1 / LOG2_3)


# --------------------------------------------------------------------------- commit subjects


def _commits_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "search_quality_commits_build", BENCH / "commits" / "build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_quality_commits_build"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("subject", "paths", "expected"),
    [
        ("walk: skip unreadable folders quietly", ["src/walk.rs"], ("src/walk.rs",)),
        ("Fix panic on empty glob in ignore", ["a.rs", "tests/x.rs"], ("a.rs",)),
        ("Fix panic on empty glob (#123)", ["a.rs"], ("a.rs",)),
        ("Fix panic", ["a.rs"], ()),  # too short to ask
        ("Bump version to 1.2.3", ["a.rs"], ()),
        ("globset-0.4.20", ["a.rs"], ()),
        ("Reformatted with `cargo fmt` everywhere", ["a.rs"], ()),
        ("ci: run the tests on windows", ["a.rs"], ()),
        ("Fix a typo in the docs of walk", ["a.rs"], ()),
        ("Add tests for the parser edge cases", ["tests/parse.rs", "benches/b.rs"], ()),
        ("Split the parser into three modules", ["a.rs", "b.rs", "c.rs"], ()),
        ("Move the parser to its own file", ["gone.rs"], ()),  # not in the snapshot
        ("Update README with examples", ["README.md"], ()),
        ("globset: fix compilation when serde is enabled", ["a.rs"], ()),  # reserved
        ("Port the scheduler to Tokio tasks", ["a.rs"], ()),
    ],
)
def test_commit_subjects_that_make_questions(
    subject: str, paths: list[str], expected: tuple[str, ...]
) -> None:
    build = _commits_build()
    snapshot = {"src/walk.rs", "a.rs", "b.rs", "c.rs", "tests/x.rs"}
    assert build.qualifies(subject, paths, snapshot) == expected


def test_commit_question_set_is_well_formed() -> None:
    build = _commits_build()
    rows = [
        json.loads(line)
        for line in (BENCH / "commits" / "questions.jsonl").read_text().splitlines()
    ]
    assert len(rows) >= 240 and len({r["id"] for r in rows}) == len(rows)
    repos = {r["repo"] for r in rows}
    assert len(repos) >= 6 and not any(w in r for r in repos for w in build.RESERVED)
    for repo in repos:  # halves by whole repository
        assert len({r["half"] for r in rows if r["repo"] == repo}) == 1
    assert {r["half"] for r in rows} == {"tuning", "held-back"}
    for r in rows:
        assert 1 <= len(r["files"]) <= 2 and not any(map(build.is_test_path, r["files"]))
        assert all(f.endswith(".rs") for f in r["files"]) and len(r["question"].split()) >= 4
        assert not build.RESERVED_WORD.search(r["question"]), r["question"]


def test_commit_runner_end_to_end_on_a_small_repository(tmp_path: Path) -> None:
    """``commits/run.py`` as documented, on a git repository made here: the snapshot is
    exported from git, indexed (real Tantivy and Qdrant, fake vectors) and asked; each
    question's changed file is scored in every method."""
    repo = tmp_path / "demo"
    (repo / "src").mkdir(parents=True)
    files = {
        "src/channel.rs": "/// A bounded channel.\npub fn send_blocking(msg: u8) { wait_for_room(); }\n"
        "fn wait_for_room() { /* the sender sleeps until a receiver takes a message */ }\n",
        "src/config.rs": "/// Settings read from a TOML file.\n"
        "pub fn parse_toml_config(text: &str) -> Option<u8> { text.parse().ok() }\n",
        "src/lib.rs": "pub mod channel;\npub mod config;\n",
    }
    for rel, text in files.items():
        (repo / rel).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    snapshot = head.stdout.strip()
    questions = tmp_path / "questions.jsonl"
    rows = [
        ("demo-1", "Make the sender wait for room in a full bounded channel", "src/channel.rs"),
        ("demo-2", "Parse the TOML config text into settings", "src/config.rs"),
    ]
    questions.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "repo": "demo",
                    "snapshot": snapshot,
                    "commit": snapshot,
                    "question": q,
                    "files": [f],
                    "half": "tuning",
                    "names_a_file": False,
                }
            )
            + "\n"
            for i, q, f in rows
        )  # fmt: skip
    )
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, str(BENCH / "commits" / "run.py"), f"demo={repo}",
           "--questions", str(questions), "--embedder", "hash", "--work", str(work),
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "last_run.json").read_text())
    assert [r["id"] for r in result["rows"]] == ["demo-1", "demo-2"]
    assert sorted(p.name for p in (work / "demo" / "src" / "src").iterdir()) == sorted(
        Path(f).name for f in files
    )
    for method in ("file-bm25", "bm25", "hybrid (default)", "files (default)"):
        for r in result["rows"]:
            s = r["scores"][method]
            assert 0.0 <= s["mrr"] <= 1.0 and s["hit"] in (0.0, 1.0)
    # the words name each answer's file plainly: keyword methods find it first
    for method in ("file-bm25", "bm25", "files (default)"):
        assert result["summary"]["all"][method]["mrr"] == 1.0, method
    assert result["summary"]["all"]["n"] == 2 and "| all | 2 |" in done.stdout


def test_semble_runner_reads_paths_and_pairs_questions() -> None:
    """``peers/semble_run.py``'s own parts (semble itself is the ``peers`` extra and runs in
    the benchmark): result paths as ours are written, and the paired interval."""
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location(
        "search_quality_semble_run", BENCH / "peers" / "semble_run.py"
    )
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    hits = [SimpleNamespace(chunk=SimpleNamespace(file_path=p))
            for p in ("./src/a.rs", "src/b.rs", ".cargo/c.rs")]  # fmt: skip
    assert runner.file_paths(hits) == ["src/a.rs", "src/b.rs", ".cargo/c.rs"]
    low, high = runner.bootstrap([0.1] * 20)
    assert low == high == pytest.approx(0.1)
    low, high = runner.bootstrap([-1.0, 1.0] * 50)
    assert low < 0.0 < high
    assert runner.bootstrap([0.2, 0.4, 0.3] * 10) == runner.bootstrap([0.2, 0.4, 0.3] * 10)
