//! `--properties-file` reads what Java reads. `tests/data/java_properties_cases.txt` holds
//! `java.util.Properties.load(Reader)`'s own answers (Java 17, from
//! `scripts/java/regen-properties-cases.sh`) for hand-written and seeded random inputs; every
//! row must come out the same here. Java cannot run inside a property test, so the proptests
//! check what must hold whatever the input: no panic, only typed errors, and escaped pairs
//! written as `key=value` lines read back exactly.

use std::collections::BTreeMap;
use std::process::Command;

use proptest::prelude::*;
use spillway::conf::properties::{self, PropertiesError};

const CASES: &str = include_str!("data/java_properties_cases.txt");

/// The table's escaping (see `scripts/java/PropertiesProbe.java`), per UTF-16 code unit.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for unit in s.encode_utf16() {
        match unit {
            0x5C => out.push_str("\\\\"),
            0x21..=0x7E if unit != 0x22 => out.push(char::from(unit as u8)),
            _ => out.push_str(&format!("\\u{unit:04X}")),
        }
    }
    out
}

fn unescape(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("\\\\") {
            out.push(0x5C);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("\\u") {
            out.push(u16::from_str_radix(&r[..4], 16).expect("table escape"));
            rest = &r[4..];
        } else {
            out.push(c as u16);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn quoted(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not quoted: {s}"))
}

enum Expected {
    Pairs(Vec<(String, String)>),
    Malformed,
}

struct Case {
    name: String,
    input: String,
    expected: Expected,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut lines = CASES.lines().filter(|l| !l.starts_with('#')).peekable();
    while let Some(line) = lines.next() {
        let name = line.strip_prefix("case ").expect("case line").to_string();
        let input = quoted(
            lines
                .next()
                .and_then(|l| l.strip_prefix("in "))
                .expect("in"),
        );
        let input = String::from_utf16(&unescape(input)).expect("inputs are valid Unicode");
        let result = lines.next().expect("result line");
        let expected = if let Some(n) = result.strip_prefix("ok ") {
            let n: usize = n.parse().unwrap();
            let pairs = (0..n)
                .map(|_| {
                    let kv = lines
                        .next()
                        .and_then(|l| l.strip_prefix("kv "))
                        .expect("kv");
                    let (k, v) = kv.split_once(' ').expect("kv has two fields");
                    (quoted(k).to_string(), quoted(v).to_string())
                })
                .collect();
            Expected::Pairs(pairs)
        } else {
            assert_eq!(
                result, "err java.lang.IllegalArgumentException: Malformed \\uxxxx encoding.",
                "case {name}: an error the parser does not know"
            );
            Expected::Malformed
        };
        out.push(Case {
            name,
            input,
            expected,
        });
    }
    out
}

/// Java's `Properties` is a map: the last of duplicate keys wins; sorted by escaped key.
fn as_table(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    let map: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| (escape(&k), escape(&v)))
        .collect();
    map.into_iter().collect()
}

fn holds_unpaired_surrogate(escaped: &str) -> bool {
    char::decode_utf16(unescape(escaped)).any(|r| r.is_err())
}

#[test]
fn every_case_matches_java() {
    let cases = cases();
    assert!(
        cases.len() >= 400,
        "only {} cases in the table",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let got = properties::parse(&case.input);
        let ok = match (&case.expected, got.clone()) {
            (Expected::Malformed, Err(PropertiesError::MalformedUnicodeEscape { .. })) => true,
            // Java keeps a lone surrogate; spillway refuses it by name (a Rust string cannot
            // hold one).
            (Expected::Pairs(want), Err(PropertiesError::UnpairedSurrogate { .. })) => want
                .iter()
                .any(|(k, v)| holds_unpaired_surrogate(k) || holds_unpaired_surrogate(v)),
            (Expected::Pairs(want), Ok(pairs)) => *want == as_table(pairs),
            _ => false,
        };
        if !ok {
            let want = match &case.expected {
                Expected::Pairs(p) => format!("{p:?}"),
                Expected::Malformed => "Malformed \\uxxxx encoding.".into(),
            };
            let got = got.map(as_table);
            failures.push(format!(
                "{}: input {:?}\n  java:     {want}\n  spillway: {got:?}",
                case.name,
                escape(&case.input)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Java:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_the_rules() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    for rule in [
        "bare-cr",
        "crlf",
        "vertical-tab-is-not-whitespace",
        "nbsp-is-not-whitespace",
        "three-backslashes-continue",
        "four-backslashes-end-line",
        "continuation-tabs-ff",
        "comment-after-whitespace",
        "hash-mid-line",
        "escaped-equals-in-key",
        "malformed-unicode-short",
        "malformed-unicode-at-key-end",
        "unicode-lone-high-surrogate",
    ] {
        assert!(names.iter().any(|n| n == rule), "no case {rule}");
    }
    let generated = names.iter().filter(|n| n.starts_with("generated-")).count();
    assert!(generated >= 300, "{generated} generated cases");
}

#[test]
fn a_malformed_file_is_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spark-defaults.conf");
    std::fs::write(
        &path,
        "spark.executor.memory 1g\n# fine: \\uZZZZ\nspark.executor.cores \\u00G4\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["layout", "--properties-file"])
        .arg(&path)
        .env("SPILLWAY_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("line 3: Malformed \\uxxxx encoding."),
        "{stderr}"
    );
}

#[test]
fn values_are_trimmed_as_spark_trims_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spark-defaults.conf");
    // The value's trailing tab and form feed go (Spark's trimExceptCRLF); the non-breaking
    // space is no white space to Java or Spark, so "1g\u{a0}" stays and is a bad size.
    std::fs::write(&path, "spark.executor.memory =  1g\t\x0c\n").unwrap();
    let mut conf = spillway::conf::SparkConf::new();
    conf.load_properties_file(&path).unwrap();
    assert_eq!(conf.get("spark.executor.memory"), Some("1g"));
    std::fs::write(&path, "spark.executor.memory=1g\u{a0}\n").unwrap();
    let mut conf = spillway::conf::SparkConf::new();
    conf.load_properties_file(&path).unwrap();
    assert_eq!(conf.get("spark.executor.memory"), Some("1g\u{a0}"));
}

/// The characters that trip parsers up.
fn tricky() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '\\', '\\', '\r', '\n', ' ', '\t', '\x0c', '=', ':', '#', '!', 'u', '0', '4', 'a', 'D',
        'e', 'F', 'k', 'é', '\u{b}', '\u{a0}', '😀',
    ])
}

/// Java's `Properties.store` escaping of a key (or a value: only its leading spaces need it),
/// leaving non-ASCII characters as they are (spillway reads UTF-8).
fn store_escape(s: &str, is_key: bool) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            ' ' if is_key || i == 0 => out.push_str("\\ "),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_errors_name_a_real_line(
        text in prop::collection::vec(tricky(), 0..60).prop_map(|v| v.into_iter().collect::<String>())
    ) {
        let physical = 1 + text.matches('\n').count() + text.matches('\r').count();
        match properties::parse(&text) {
            Ok(pairs) => {
                for (_, v) in &pairs {
                    let t = properties::spark_trim(v);
                    prop_assert_eq!(properties::spark_trim(t), t);
                }
            }
            Err(PropertiesError::MalformedUnicodeEscape { line })
            | Err(PropertiesError::UnpairedSurrogate { line, .. }) => {
                prop_assert!((1..=physical).contains(&line), "line {} of {}", line, physical);
            }
        }
    }

    #[test]
    fn escaped_pairs_round_trip(
        pairs in prop::collection::vec(
            (prop::collection::vec(tricky(), 0..12), prop::collection::vec(tricky(), 0..12)),
            0..8,
        ),
        ends in prop::collection::vec(prop::sample::select(vec!["\n", "\r", "\r\n"]), 8),
        separators in prop::collection::vec(prop::sample::select(vec!["=", ":", " = ", "\t", " : "]), 8),
        comments in prop::collection::vec(any::<bool>(), 8),
    ) {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into_iter().collect(), v.into_iter().collect()))
            .collect();
        let mut text = String::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if comments[i] {
                text.push_str(" \t# a comment \\");
                text.push_str(ends[i]);
            }
            text.push_str(&store_escape(k, true));
            // An empty key needs '=' or ':' (after white space the value would be the key).
            text.push_str(if k.is_empty() { "=" } else { separators[i] });
            text.push_str(&store_escape(v, false));
            text.push_str(ends[i]);
        }
        prop_assert_eq!(properties::parse(&text), Ok(pairs), "text {:?}", text);
    }
}
