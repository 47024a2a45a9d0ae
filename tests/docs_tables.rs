//! Tables in the docs that the code generates stay current: `docs/report.md` holds the stage
//! kinds and their keys as `spillway::stage::docs_table()` prints them. Run with
//! `SPILLWAY_BLESS=1` to rewrite the table after changing a kind.

use std::path::PathBuf;

const BEGIN: &str = "<!-- stage-kinds:begin -->\n";
const END: &str = "<!-- stage-kinds:end -->";

#[test]
fn the_stage_kinds_table_in_docs_report_md_is_the_registry_s() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/report.md");
    let text = std::fs::read_to_string(&path).expect("docs/report.md");
    let a = text.find(BEGIN).expect("the stage-kinds:begin marker") + BEGIN.len();
    let b = text.find(END).expect("the stage-kinds:end marker");
    let want = spillway::stage::docs_table();
    if std::env::var_os("SPILLWAY_BLESS").is_some() {
        let new = format!("{}{}{}", &text[..a], want, &text[b..]);
        std::fs::write(&path, new).expect("docs/report.md is writable");
        return;
    }
    assert_eq!(
        &text[a..b],
        want,
        "docs/report.md's stage-kinds table differs from the registry (src/stage/); \
         rerun with SPILLWAY_BLESS=1 to rewrite it"
    );
}
