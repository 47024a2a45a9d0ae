//! Tables in the docs that the code generates stay current: `docs/report.md` holds the stage
//! kinds and their keys as `spillway::stage::docs_table()` prints them. Run with
//! `SPILLWAY_BLESS=1` to rewrite the table after changing a kind.

use std::path::PathBuf;
use std::process::Command;

mod skip_support;
use skip_support::skip;

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

/// The Spark replay (`scripts/spark/replay.py`) keeps its own table of the kinds it can replay:
/// each must have exactly the registry's keys and defaults.
#[test]
fn the_spark_replay_knows_the_registry_s_keys_and_defaults() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .current_dir(root.join("scripts/spark"))
        .args([
            "-c",
            "import json, replay; print(json.dumps(replay.STAGE_DEFAULTS))",
        ])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return skip(&format!(
                "python3 cannot import scripts/spark/replay.py (it needs Python >= 3.11): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return skip(&format!("no python3 ({e})")),
    };
    let table: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("replay.STAGE_DEFAULTS as JSON");
    assert!(!table.is_empty());
    for (kind, keys) in &table {
        let def = spillway::stage::kind(kind)
            .unwrap_or_else(|| panic!("replay.py knows a kind {kind} the registry does not"));
        let keys = keys.as_object().expect("a kind's keys");
        let names: Vec<&str> = def.keys.iter().map(|k| k.name).collect();
        let mut theirs: Vec<&str> = keys.keys().map(String::as_str).collect();
        let mut ours = names.clone();
        theirs.sort_unstable();
        ours.sort_unstable();
        assert_eq!(theirs, ours, "the keys of {kind}");
        for key in def.keys {
            let replay = match &keys[key.name] {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            };
            assert_eq!(
                replay.as_deref(),
                key.default,
                "the default of {kind}.{} in scripts/spark/replay.py",
                key.name
            );
        }
    }
}
