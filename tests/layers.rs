//! The layers of ARCHITECTURE.md hold: no module of the library imports one drawn above it.
//!
//! ARCHITECTURE.md draws the layers between `<!-- layers:begin -->` and `<!-- layers:end -->`,
//! highest first; a line may start with a band name (`binary`, `application`, `model`,
//! `leaves`) and then lists modules. A module may use modules on its own line or below. Every
//! module declared in `src/lib.rs` must be drawn, and every drawn module must exist, so the
//! drawing cannot drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const BANDS: &[&str] = &["binary", "application", "model", "leaves"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module name → level (0 = lowest), from the drawing.
fn drawn_layers() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let begin = text
        .find("<!-- layers:begin -->")
        .expect("ARCHITECTURE.md has a <!-- layers:begin --> marker");
    let end = text
        .find("<!-- layers:end -->")
        .expect("ARCHITECTURE.md has a <!-- layers:end --> marker");
    let lines: Vec<Vec<String>> = text[begin..end]
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with("```") && !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .filter(|w| !BANDS.contains(w) && *w != "main.rs")
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect();
    assert!(!lines.is_empty(), "the layer drawing is empty");
    let mut levels = BTreeMap::new();
    let n = lines.len();
    for (i, words) in lines.into_iter().enumerate() {
        for w in words {
            assert!(
                levels.insert(w.clone(), n - 1 - i).is_none(),
                "{w} is drawn twice"
            );
        }
    }
    levels
}

/// The modules `src/lib.rs` declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for lib.rs and main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root().join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every top-level module a line of code names through `crate::` (comments skipped), with
/// `crate::{a::X, b}` groups expanded.
fn crate_uses(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = line.split(" //").next().unwrap_or(line);
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let close = group.find('}').unwrap_or(group.len());
                for item in group[..close].split(',') {
                    let id = ident_at(item.trim());
                    if !id.is_empty() {
                        out.push(id.to_string());
                    }
                }
            } else {
                let id = ident_at(rest);
                if !id.is_empty() {
                    out.push(id.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_module_is_drawn_once_and_every_drawn_module_exists() {
    let drawn: BTreeSet<String> = drawn_layers().into_keys().collect();
    let declared = declared_modules();
    let missing: Vec<_> = declared.difference(&drawn).collect();
    let extra: Vec<_> = drawn.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "modules not drawn in ARCHITECTURE.md's layers: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "ARCHITECTURE.md draws modules src/lib.rs does not declare: {extra:?}"
    );
}

#[test]
fn no_module_imports_one_above_it() {
    let levels = drawn_layers();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(&own) = levels.get(&module) else {
            continue; // reported by the other test
        };
        let code = std::fs::read_to_string(file).expect("readable source");
        for used in crate_uses(&code) {
            if used == module {
                continue;
            }
            match levels.get(&used) {
                Some(&level) if level > own => violations.push(format!(
                    "{} ({module}, layer {own}) uses crate::{used} (layer {level})",
                    file.strip_prefix(root()).unwrap_or(file).display()
                )),
                _ => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers of ARCHITECTURE.md:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_parser_sees_groups_and_skips_comments() {
    let code =
        "use crate::{conf::X, run};\n// crate::bench\nlet a = crate::memory::Y; // crate::oom\n";
    assert_eq!(crate_uses(code), ["conf", "run", "memory"]);
}
