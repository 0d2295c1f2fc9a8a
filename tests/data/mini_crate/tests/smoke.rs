#[test]
fn parses_a_line() {
    let c = mini_crate::parse_toml_config("name = \"x\"").unwrap();
    assert_eq!(c.get("name"), Some("x"));
}
