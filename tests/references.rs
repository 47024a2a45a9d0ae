//! Every reference in the repository points into the repository: a reader who meets a
//! citation in a comment, a script or a document can open what it names.
//!
//! Scans every tracked text file (`git ls-files`: `.rs`, `.md`, `.py`, `.sh`, `.toml`, `.txt`
//! and `.ci/run`) and fails, naming `file:line`, when a file
//! - names a document that does not ship with the repository (the background notes the
//!   project was designed from, or the directory beside the checkout that holds them);
//! - cites a specification section other than as `docs/spark-model.md §n`;
//! - mentions a repository path (in backticks, or starting with `docs/`, `src/`, `tests/`,
//!   `scripts/`, `benches/`) that is not tracked (paths git ignores, such as fuzz work
//!   directories, are outputs and allowed);
//! - cites `docs/spark-model.md §n` (or a range `§n–§m`, or a list `§n, §m`) with no heading
//!   for the label in `docs/spark-model.md`;
//! - cites `docs/reliability.md` test plan items that the document's "Fault-test plan" lacks;
//! - cites a quoted section title of a `docs/` document (`docs/report.md "Scenario file"`)
//!   that has no heading with that title.
//!
//! The forbidden names are assembled from pieces below, so this file does not flag itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod skip_support;

const MODEL_DOC: &str = "docs/spark-model.md";
const RELIABILITY_DOC: &str = "docs/reliability.md";

/// Names of documents outside the repository, and the outside directory, built from pieces.
fn forbidden() -> Vec<String> {
    vec![
        ["..", "/shared"].concat(),
        ["DES", "IGN.md"].concat(),
        ["RELIA", "BILITY.md"].concat(),
        ["PE", "ERS.md"].concat(),
        ["ST", "YLE.md"].concat(),
        ["spark-memory", "-spec"].concat(),
    ]
}

/// Path prefixes that name repository paths even outside backticks.
const BARE_PREFIXES: [&str; 5] = ["docs/", "src/", "tests/", "scripts/", "benches/"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tracked files, or `None` outside a git checkout.
fn tracked_files(root: &Path) -> Option<Vec<String>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(
        text.split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn is_scanned(path: &str) -> bool {
    path == ".ci/run"
        || [".rs", ".md", ".py", ".sh", ".toml", ".txt"]
            .iter()
            .any(|ext| path.ends_with(ext))
}

/// The tracked files and every directory that holds one.
struct Tree {
    entries: BTreeSet<String>,
    top_level: BTreeSet<String>,
}

impl Tree {
    fn new(files: &[String]) -> Tree {
        let mut entries = BTreeSet::new();
        let mut top_level = BTreeSet::new();
        for f in files {
            entries.insert(f.clone());
            let mut dir = f.as_str();
            while let Some(i) = dir.rfind('/') {
                dir = &dir[..i];
                entries.insert(dir.to_string());
            }
            top_level.insert(f.split('/').next().unwrap_or(f).to_string());
        }
        Tree { entries, top_level }
    }

    fn contains(&self, path: &str) -> bool {
        let p = path.trim_end_matches('/');
        p.is_empty() || self.entries.contains(p)
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// The path starting at `start`, without sentence punctuation at its end.
fn path_at(text: &str, start: usize) -> &str {
    let end = text[start..]
        .char_indices()
        .find(|&(_, c)| !is_path_char(c))
        .map_or(text.len(), |(i, _)| start + i);
    text[start..end].trim_end_matches(['.', ',', '-'])
}

/// Whether `i` starts a word: the text before it is not part of a path.
fn starts_word(text: &str, i: usize) -> bool {
    text[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !is_path_char(c))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Skips spaces, and at a line break the next line's indentation and comment leader, so a
/// citation wrapped across comment lines reads as one.
fn skip_space(text: &str, mut i: usize) -> usize {
    loop {
        let rest = &text[i..];
        let trimmed = rest.trim_start_matches([' ', '\t']);
        i += rest.len() - trimmed.len();
        if let Some(after) = trimmed.strip_prefix('\n') {
            i += 1;
            let body = after.trim_start_matches([' ', '\t']);
            i += after.len() - body.len();
            for leader in ["//!", "///", "//", "#", "*"] {
                if body.starts_with(leader) {
                    i += leader.len();
                    break;
                }
            }
            continue;
        }
        return i;
    }
}

/// A section label right after a `§` at `i`: digits, dot-separated digit groups, an optional
/// lowercase letter ("4.1c"). Returns the label and the offset after it.
fn label_at(text: &str, i: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut j = i;
    let digits = |j: usize| bytes[j..].iter().take_while(|b| b.is_ascii_digit()).count();
    let n = digits(j);
    if n == 0 {
        return None;
    }
    j += n;
    while j + 1 < bytes.len() && bytes[j] == b'.' && bytes[j + 1].is_ascii_digit() {
        j += 1 + digits(j + 1);
    }
    if j < bytes.len()
        && bytes[j].is_ascii_lowercase()
        && bytes.get(j + 1).is_none_or(|b| !b.is_ascii_alphanumeric())
    {
        j += 1;
    }
    Some((text[i..j].to_string(), j))
}

/// The labels cited after a `docs/spark-model.md` that ends at `i`: `§n`, `§n–§m`,
/// `§n, §m and §k`.
fn model_labels(text: &str, i: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut j = skip_space(text, i);
    loop {
        if !text[j..].starts_with('§') {
            return out;
        }
        let Some((label, end)) = label_at(text, j + '§'.len_utf8()) else {
            return out;
        };
        out.push(label);
        j = end;
        let sep = ["–§", "-§", ", §", " and §", "/§"]
            .iter()
            .find(|s| text[j..].starts_with(**s));
        match sep {
            Some(s) => j += s.len() - '§'.len_utf8(),
            None => return out,
        }
    }
}

/// The test-plan items cited after a `docs/reliability.md` that ends at `i`:
/// "test plan item 1", "test plan 14–17", "items 19 and 22", "tests 14, 17", "item 13".
fn plan_items(text: &str, i: usize) -> Vec<u32> {
    let mut j = skip_space(text, i);
    let mut named = false;
    if text[j..].starts_with("test plan") {
        j = skip_space(text, j + "test plan".len());
        named = true;
    }
    let mut out = Vec::new();
    let mut range_from: Option<u32> = None;
    loop {
        for word in ["items ", "item ", "tests ", "test "] {
            if text[j..].starts_with(word) {
                j = skip_space(text, j + word.len());
                named = true;
                break;
            }
        }
        let n = text[j..].bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || !named {
            return out;
        }
        let Ok(v) = text[j..j + n].parse::<u32>() else {
            return out;
        };
        match range_from.take() {
            Some(from) => out.extend(from..=v),
            None => out.push(v),
        }
        j += n;
        let mut next = None;
        for sep in ["–", "-", ",", " and "] {
            if text[j..].starts_with(sep) {
                next = Some(sep);
                break;
            }
        }
        let Some(sep) = next else { return out };
        let after = skip_space(text, j + sep.len());
        let continues = ["items ", "item ", "tests ", "test "]
            .iter()
            .any(|w| text[after..].starts_with(w))
            || text[after..].starts_with(|c: char| c.is_ascii_digit());
        if !continues {
            return out;
        }
        if sep == "–" || sep == "-" {
            range_from = out.pop();
        }
        j = after;
    }
}

/// Labels that have a heading in the model document.
fn heading_labels(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with('#')) {
        for (i, _) in line.match_indices('§') {
            if let Some((label, _)) = label_at(line, i + '§'.len_utf8()) {
                out.insert(label);
            }
        }
    }
    out
}

/// Labels the model document defines: its headings, and list items that open with a label
/// (`- §18.1 Writer choice: ...`, for the sections it summarises).
fn defined_labels(doc: &str) -> BTreeSet<String> {
    let mut out = heading_labels(doc);
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("- §")
            && let Some((label, _)) = label_at(rest, 0)
        {
            out.insert(label);
        }
    }
    out
}

/// Labels the model document cites within itself ("(§4.1a, §6.3)") that it does not define.
fn undefined_internal_labels(doc: &str) -> Vec<(usize, String)> {
    let defined = defined_labels(doc);
    doc.match_indices('§')
        .filter_map(|(i, _)| label_at(doc, i + '§'.len_utf8()))
        .filter(|(label, _)| !defined.contains(label))
        .map(|(label, end)| (line_of(doc, end), label))
        .collect()
}

/// The item numbers of the reliability document's "Fault-test plan".
fn plan_item_numbers(doc: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with('#') {
            inside = line.contains("Fault-test plan");
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((n, _)) = line.split_once(". ")
            && let Ok(v) = n.parse::<u32>()
        {
            out.insert(v);
        }
    }
    out
}

/// Section titles of a document: its heading lines without the `#`s.
fn headings(doc: &str) -> Vec<String> {
    doc.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .collect()
}

struct Checker {
    root: PathBuf,
    tree: Tree,
    forbidden: Vec<String>,
    model_headings: BTreeSet<String>,
    plan_items: BTreeSet<u32>,
    problems: Vec<String>,
}

impl Checker {
    fn flag(&mut self, file: &str, text: &str, offset: usize, what: String) {
        self.problems
            .push(format!("{file}:{}: {what}", line_of(text, offset)));
    }

    fn ignored_by_git(&self, path: &str) -> bool {
        Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(["check-ignore", "-q", "--no-index", path])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn check_path(&mut self, file: &str, text: &str, offset: usize, path: &str) {
        // `tests/memory_*.rs`, `fuzz/corpus/<target>/`: a pattern; some entry must match it.
        let pattern = text[offset + path.len()..].starts_with(['*', '<', '{']);
        let known = if pattern {
            self.tree.entries.iter().any(|e| e.starts_with(path))
        } else {
            self.tree.contains(path)
        };
        if path.contains("..") || known || self.ignored_by_git(path) {
            return;
        }
        self.flag(
            file,
            text,
            offset,
            format!("`{path}` is not a file or directory of the repository"),
        );
    }

    fn check_file(&mut self, file: &str, text: &str) {
        for word in self.forbidden.clone() {
            for (i, _) in text.match_indices(word.as_str()) {
                self.flag(
                    file,
                    text,
                    i,
                    format!("refers to `{word}`, which is not in the repository"),
                );
            }
        }
        let spec = ["spec", " §"].concat();
        for (i, _) in text.match_indices(spec.as_str()) {
            if !text[..i].trim_end().ends_with(MODEL_DOC) {
                self.flag(
                    file,
                    text,
                    i,
                    format!("cites a section as \"{spec}\"; cite `{MODEL_DOC} §n`"),
                );
            }
        }

        // Paths inside backticks, paired line by line (a code fence's three backticks must
        // not shift the pairs of the lines after it).
        let mut line_start = 0;
        for line in text.split_inclusive('\n') {
            let mut offset = line_start;
            for (k, span) in line.split('`').enumerate() {
                let at = offset;
                offset += span.len() + 1;
                if k % 2 == 0 {
                    continue;
                }
                let first = span.split('/').next().unwrap_or("");
                let names_repo_path =
                    self.tree.top_level.contains(first) && (span.contains('/') || first == span);
                if names_repo_path {
                    let path = path_at(text, at).to_string();
                    self.check_path(file, text, at, &path);
                }
            }
            line_start += line.len();
        }
        // Paths with a known prefix anywhere.
        for prefix in BARE_PREFIXES {
            for (i, _) in text.match_indices(prefix) {
                if starts_word(text, i) && !text[..i].ends_with('`') {
                    let path = path_at(text, i).to_string();
                    self.check_path(file, text, i, &path);
                }
            }
        }

        // Section labels of the model document.
        for (i, _) in text.match_indices(MODEL_DOC) {
            for label in model_labels(text, i + MODEL_DOC.len()) {
                if !self.model_headings.contains(&label) {
                    self.flag(
                        file,
                        text,
                        i,
                        format!("cites {MODEL_DOC} §{label}, which has no heading there"),
                    );
                }
            }
        }
        // Test-plan items of the reliability document.
        for (i, _) in text.match_indices(RELIABILITY_DOC) {
            for item in plan_items(text, i + RELIABILITY_DOC.len()) {
                if !self.plan_items.contains(&item) {
                    self.flag(
                        file,
                        text,
                        i,
                        format!("cites {RELIABILITY_DOC} test plan item {item}, which it lacks"),
                    );
                }
            }
        }
        // Quoted section titles of docs/ documents.
        for (i, _) in text.match_indices("docs/") {
            if !starts_word(text, i) {
                continue;
            }
            let doc = path_at(text, i).to_string();
            let after = &text[i + doc.len()..];
            let rest = after.strip_prefix(',').unwrap_or(after);
            let Some(quoted) = rest.strip_prefix(" \"") else {
                continue;
            };
            let Some(title) = quoted.split('"').next().filter(|t| !t.contains('\n')) else {
                continue;
            };
            let Ok(body) = std::fs::read_to_string(self.root.join(&doc)) else {
                continue; // a missing document is flagged as a path above
            };
            if !headings(&body).iter().any(|h| h.contains(title)) {
                self.flag(
                    file,
                    text,
                    i,
                    format!("cites {doc} \"{title}\", which has no such heading"),
                );
            }
        }
    }
}

#[test]
fn every_reference_points_into_the_repository() {
    let root = root();
    let Some(files) = tracked_files(&root) else {
        return skip_support::skip("not a git checkout (git ls-files failed)");
    };
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
    };
    let model = read(MODEL_DOC);
    let reliability = read(RELIABILITY_DOC);
    let mut checker = Checker {
        tree: Tree::new(&files),
        root: root.clone(),
        forbidden: forbidden(),
        model_headings: heading_labels(&model),
        plan_items: plan_item_numbers(&reliability),
        problems: Vec::new(),
    };
    assert!(
        checker.plan_items.len() >= 22,
        "{RELIABILITY_DOC} lists {} fault-test plan items, expected 1..=22",
        checker.plan_items.len()
    );
    for (line, label) in undefined_internal_labels(&model) {
        checker.problems.push(format!(
            "{MODEL_DOC}:{line}: cites §{label}, which it neither heads nor lists"
        ));
    }
    let mut scanned = 0;
    for file in files.iter().filter(|f| is_scanned(f)) {
        // A tracked file deleted in the working tree is git's business, not a reference.
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        checker.check_file(file, &text);
        scanned += 1;
    }
    assert!(scanned > 50, "only {scanned} files scanned");
    assert!(
        checker.problems.is_empty(),
        "{} reference(s) point outside the repository or at nothing:\n{}",
        checker.problems.len(),
        checker.problems.join("\n")
    );
}

#[test]
fn citations_are_parsed_as_written() {
    let m = MODEL_DOC;
    assert_eq!(model_labels(&format!("{m} §5.3b."), m.len()), ["5.3b"]);
    assert_eq!(model_labels(&format!("{m} §3–§4."), m.len()), ["3", "4"]);
    assert_eq!(
        model_labels(&format!("{m} §1, §5.7, §12.1–§12.5 with"), m.len()),
        ["1", "5.7", "12.1", "12.5"]
    );
    assert_eq!(
        model_labels(&format!("{m}\n//! §6.3 through"), m.len()),
        ["6.3"]
    );
    assert!(model_labels(&format!("{m} says"), m.len()).is_empty());

    let r = RELIABILITY_DOC;
    let items = |s: &str| plan_items(&format!("{r}{s}"), r.len());
    assert_eq!(items(" test plan items 19 and 22):"), [19, 22]);
    assert_eq!(
        items(" test plan item 1,\n//! item 20's parser part"),
        [1, 20]
    );
    assert_eq!(items(" test plan 14–17): each"), [14, 15, 16, 17]);
    assert_eq!(items(" tests 14, 17): a"), [14, 17]);
    assert_eq!(items(" items 1, 20, 21):"), [1, 20, 21]);
    assert_eq!(items(" item 12) for"), [12]);
    assert!(items(" \"Nothing lost\"").is_empty());
    assert!(items(", 2 cores").is_empty());
}

#[test]
fn labels_headings_and_plan_items_are_found() {
    let doc = "# Title\n## §4 Storage\n### §4.1 Acquire\n#### §4.1c Evict\ntext §9\n";
    let labels = heading_labels(doc);
    assert!(labels.contains("4") && labels.contains("4.1") && labels.contains("4.1c"));
    assert!(
        !labels.contains("9"),
        "a label outside a heading is not a heading"
    );

    let plan =
        "## Other\n1. not this\n## Fault-test plan\n\n1. **One.** x\n2. **Two.**\n   3. no\n";
    assert_eq!(plan_item_numbers(plan), BTreeSet::from([1, 2]));

    // Built from pieces: these paths do not exist, and the scan must not find them here.
    let p = |rest: &str| format!("{}/{rest}", "src");
    let tree = Tree::new(&[p("a/b.rs"), "README.md".to_string()]);
    assert!(tree.contains(&p("a/")) && tree.contains(&p("a/b.rs")) && tree.contains("README.md"));
    assert!(!tree.contains(&p("a/c.rs")));
    assert_eq!(path_at(&format!("see {}.", p("a/b.rs")), 4), p("a/b.rs"));
    assert_eq!(path_at(&format!("`{}`", p("x/*.toml")), 1), p("x/"));
}
