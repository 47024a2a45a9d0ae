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

/// The module path of a source file (`src/scenario.rs` → `[scenario]`, `src/run/mod.rs` →
/// `[run]`, `src/run/report.rs` → `[run, report]`; empty for lib.rs and main.rs).
fn module_path(path: &Path) -> Vec<String> {
    let Ok(rel) = path.strip_prefix(root().join("src")) else {
        return Vec::new();
    };
    let mut parts: Vec<String> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|c| c.strip_suffix(".rs").unwrap_or(c).to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// The code with comments (line, doc and nested block comments), string literals (plain,
/// byte and raw) and char literals blanked out, so none of them is read as an import.
fn strip_comments_and_literals(code: &str) -> String {
    fn at(c: &[char], i: usize) -> char {
        c.get(i).copied().unwrap_or('\0')
    }
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && at(&c, i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(&c, i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(&c, i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(&c, i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (at(&c, i + 1) == '"' || at(&c, i + 1) == '#')
            && !c[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string r"…", r#"…"#: it ends at '"' followed by as many '#'.
            let mut k = i + 1;
            let mut hashes = 0;
            while c.get(k) == Some(&'#') {
                hashes += 1;
                k += 1;
            }
            if c.get(k) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            k += 1;
            while k < c.len() {
                if c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) {
                    k += 1 + hashes;
                    break;
                }
                k += 1;
            }
            i = k;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (at(&c, i + 1) == '\\' || at(&c, i + 2) == '\'') {
            // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
            continue;
        }
        match ch {
            ':' if c.get(i + 1) == Some(&':') => {
                out.push(Tok::PathSep);
                i += 1;
            }
            '{' => out.push(Tok::Open),
            '}' => out.push(Tok::Close),
            ',' => out.push(Tok::Comma),
            c if c.is_whitespace() => {}
            c => out.push(Tok::Other(c)),
        }
        i += 1;
    }
    out
}

/// Skips a balanced `{ … }` starting at `i` (an `Open`); returns the index after it.
fn skip_group(t: &[Tok], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        match t[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Resolves the path tree at `t[i..]` relative to module `base`, pushing the top-level module
/// of every path it names onto `out`; returns the index after the tree. `super` climbs one
/// module, `{…}` groups (nested to any depth) resolve each item against the same base.
fn resolve_tree(t: &[Tok], mut i: usize, base: &[String], out: &mut Vec<String>) -> usize {
    let mut base = base.to_vec();
    loop {
        match t.get(i) {
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match t.get(i) {
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        None => return i,
                        Some(_) => {
                            let next = resolve_tree(t, i, &base, out);
                            // An item that is not a path (a stray token): step over it.
                            i = next.max(i + 1);
                        }
                    }
                }
            }
            Some(Tok::Ident(id)) if id == "super" => {
                base.pop();
                i += 1;
            }
            Some(Tok::Ident(id)) if id == "self" => i += 1,
            Some(Tok::Ident(id)) => {
                // The first named segment fixes the top-level module; the rest of the path
                // (more segments, a group, `as NAME`) stays inside it.
                out.push(base.first().cloned().unwrap_or_else(|| id.clone()));
                i += 1;
                return skip_rest(t, i);
            }
            // A glob: of a module inside a top-level one, it uses that one; at the root
            // (`crate::*`) it names no module.
            Some(Tok::Other('*')) => {
                if let Some(top) = base.first() {
                    out.push(top.clone());
                }
                return i + 1;
            }
            _ => return skip_rest(t, i),
        }
        match t.get(i) {
            Some(Tok::PathSep) => i += 1,
            _ => {
                // `self` or `super` alone (in a group, `use super::{self}`): the module itself.
                if let Some(top) = base.first() {
                    out.push(top.clone());
                }
                return i;
            }
        }
    }
}

/// Steps over the rest of a path after its first segment.
fn skip_rest(t: &[Tok], mut i: usize) -> usize {
    loop {
        match t.get(i) {
            Some(Tok::PathSep) | Some(Tok::Other('*')) => i += 1,
            Some(Tok::Ident(id)) if id == "as" => i += 2,
            Some(Tok::Ident(_)) if matches!(t.get(i.wrapping_sub(1)), Some(Tok::PathSep)) => i += 1,
            Some(Tok::Open) if matches!(t.get(i.wrapping_sub(1)), Some(Tok::PathSep)) => {
                i = skip_group(t, i)
            }
            _ => return i,
        }
    }
}

/// Every top-level module the code of a file whose module path is `file_module` names through
/// `crate::` or `super::` (its own included), with comments and string literals skipped,
/// groups expanded however nested and however many lines they span, and `super` resolved
/// through the file's path and the inline `mod NAME { … }` blocks around it.
fn crate_uses(code: &str, file_module: &[&str]) -> Vec<String> {
    let t = tokens(&strip_comments_and_literals(code));
    let mut out = Vec::new();
    // Inline modules open at this point: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let is_path_start = matches!(t.get(i + 1), Some(Tok::PathSep))
            && !matches!(t.get(i.wrapping_sub(1)), Some(Tok::PathSep));
        match &t[i] {
            Tok::Ident(id) if id == "crate" && is_path_start => {
                i = resolve_tree(&t, i + 2, &[], &mut out);
            }
            Tok::Ident(id) if id == "super" && is_path_start => {
                let base: Vec<String> = file_module
                    .iter()
                    .map(|s| s.to_string())
                    .chain(inline.iter().map(|(n, _)| n.clone()))
                    .collect();
                i = resolve_tree(&t, i, &base, &mut out);
            }
            Tok::Ident(id) if id == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) = (t.get(i + 1), t.get(i + 2)) {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Open => {
                depth += 1;
                i += 1;
            }
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Pairs of modules drawn on the same line that depend on each other, directly or through
/// other modules of that line: a cycle the drawing's "own line" rule would let through.
fn same_line_cycles(
    levels: &BTreeMap<String, usize>,
    uses: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(String, String)> {
    let same_line =
        |a: &String, b: &String| levels.get(a).is_some() && levels.get(a) == levels.get(b);
    // Reachability over same-line edges only.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for n in uses.get(&m).into_iter().flatten() {
                if n != &m && same_line(&m, n) && seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        seen
    };
    let mut cycles = Vec::new();
    for a in uses.keys() {
        for b in reach(a) {
            if a < &b && reach(&b).contains(a) {
                cycles.push((a.clone(), b));
            }
        }
    }
    cycles
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

/// Every library source file under `src/` with its module path (lib.rs and main.rs left out).
fn library_files() -> Vec<(PathBuf, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let m = module_path(&f);
            (f, m)
        })
        .filter(|(_, m)| !m.is_empty())
        .collect()
}

/// Each file's top-level module and the top-level modules it uses (its own left out).
fn file_uses() -> Vec<(PathBuf, String, Vec<String>)> {
    library_files()
        .into_iter()
        .map(|(file, path)| {
            let code = std::fs::read_to_string(&file).expect("readable source");
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let module = path[0].clone();
            let mut used = crate_uses(&code, &parts);
            used.retain(|u| *u != module);
            used.sort();
            used.dedup();
            (file, module, used)
        })
        .collect()
}

#[test]
fn no_module_imports_one_above_it() {
    let levels = drawn_layers();
    let mut violations = Vec::new();
    for (file, module, used) in file_uses() {
        let Some(&own) = levels.get(&module) else {
            continue; // reported by the other test
        };
        for used in used {
            match levels.get(&used) {
                Some(&level) if level > own => violations.push(format!(
                    "{} ({module}, layer {own}) uses crate::{used} (layer {level})",
                    file.strip_prefix(root()).unwrap_or(&file).display()
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
fn modules_on_one_line_do_not_use_each_other() {
    let levels = drawn_layers();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut evidence: BTreeMap<(String, String), String> = BTreeMap::new();
    for (file, module, used) in file_uses() {
        for u in used {
            evidence
                .entry((module.clone(), u.clone()))
                .or_insert_with(|| {
                    file.strip_prefix(root())
                        .unwrap_or(&file)
                        .display()
                        .to_string()
                });
            uses.entry(module.clone()).or_default().insert(u);
        }
    }
    // The check is only as good as the parser: it must see what `run` plainly imports.
    assert!(
        uses.get("run")
            .is_some_and(|u| u.contains("conf") && u.contains("stage")),
        "the parser misses run's imports: {:?}",
        uses.get("run")
    );
    let cycles: Vec<String> = same_line_cycles(&levels, &uses)
        .into_iter()
        .map(|(a, b)| {
            let via = |x: &String, y: &String| {
                evidence
                    .get(&(x.clone(), y.clone()))
                    .map_or_else(|| "through others of the line".to_string(), |f| format!("in {f}"))
            };
            format!(
                "{a} and {b} (drawn on one line) depend on each other: {a} uses {b} {}, {b} uses {a} {}",
                via(&a, &b),
                via(&b, &a)
            )
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "cycles within a line of ARCHITECTURE.md's layers (draw one below the other):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_parser_sees_groups_and_skips_comments() {
    let code =
        "use crate::{conf::X, run};\n// crate::bench\nlet a = crate::memory::Y; // crate::oom\n";
    assert_eq!(crate_uses(code, &["x"]), ["conf", "run", "memory"]);
}

#[test]
fn the_parser_skips_block_and_doc_comments_and_literals() {
    let code = r####"
/// See [`crate::bench`].
//! crate::sweep
/* crate::oom /* nested crate::run */ crate::scenario */
let s = "crate::stage";
let r = r#"crate::timeline "quoted" crate::external"#;
let c = '"'; let q = '\''; fn f<'a>(x: &'a str) {}
let m = crate::memory::X;
"####;
    assert_eq!(crate_uses(code, &["x"]), ["memory"]);
}

#[test]
fn the_parser_joins_groups_over_lines_and_nested_groups() {
    let code = "use crate::{\n    conf::{ByteUnit,\n        format_mib},\n    layout::{Layout, LayoutJson as L},\n    run, // crate::oom\n};\nuse crate::{a::{b::{C, D}, E}, f::*};\nfn g() -> crate::exit::ExitStatus { todo!() }\n";
    assert_eq!(
        crate_uses(code, &["x"]),
        ["conf", "layout", "run", "a", "f", "exit"]
    );
}

#[test]
fn super_in_a_top_level_file_is_the_crate_root() {
    // In a top-level module's file (foo.rs, or foo/mod.rs): `super::bar` is module bar.
    let code = "use super::bar::X;\nuse super::{baz, qux::Y};\nmod tests {\n    use super::*;\n    use super::inner::Z;\n    use super::super::conf;\n}\nuse super::exit;\n";
    assert_eq!(
        crate_uses(code, &["foo"]),
        ["bar", "baz", "qux", "foo", "foo", "conf", "exit"]
    );
}

#[test]
fn super_super_in_a_nested_file_reaches_its_top_level_module() {
    // In a nested module's file (foo/bar.rs): `super` is foo, `super::super` the crate root.
    let code = "use super::Sibling;\nuse super::super::conf::K;\nuse super::{super::layout, Other};\npub(super) fn f() {}\n";
    assert_eq!(
        crate_uses(code, &["foo", "bar"]),
        ["foo", "conf", "layout", "foo"]
    );
    // Deeper: three levels up from foo::bar::baz is the root.
    assert_eq!(
        crate_uses("use super::super::super::memory;", &["foo", "bar", "baz"]),
        ["memory"]
    );
    assert_eq!(
        module_path(&root().join("src/run/plot/labels.rs")),
        ["run", "plot", "labels"]
    );
    assert_eq!(
        module_path(&root().join("src/run/report.rs")),
        ["run", "report"]
    );
    assert_eq!(module_path(&root().join("src/run/mod.rs")), ["run"]);
    assert_eq!(module_path(&root().join("src/scenario.rs")), ["scenario"]);
    assert!(module_path(&root().join("src/lib.rs")).is_empty());
}

#[test]
fn a_cycle_within_a_line_is_found() {
    let levels: BTreeMap<String, usize> = [("a", 1), ("b", 1), ("c", 1), ("d", 0)]
        .map(|(m, l)| (m.to_string(), l))
        .into();
    let uses = |edges: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            m.entry(a.to_string()).or_default().insert(b.to_string());
        }
        m
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        same_line_cycles(&levels, &uses(&[("a", "b"), ("b", "a"), ("a", "d")])),
        [pair("a", "b")]
    );
    // Through a third module of the same line.
    assert_eq!(
        same_line_cycles(&levels, &uses(&[("a", "b"), ("b", "c"), ("c", "a")])),
        [pair("a", "b"), pair("a", "c"), pair("b", "c")]
    );
    // One way only, or a cycle through a lower line (which the layers test reports): none.
    assert!(same_line_cycles(&levels, &uses(&[("a", "b"), ("b", "c")])).is_empty());
    assert!(same_line_cycles(&levels, &uses(&[("a", "d"), ("d", "a")])).is_empty());
}
