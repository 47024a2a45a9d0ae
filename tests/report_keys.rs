//! `docs/report.md` documents every key of report.json, and only keys report.json has.
//!
//! The docs' key tables are read as data: under `## report.json`, each `### <section>` table
//! whose header starts with `key` lists, in its first column, the backticked keys of that
//! section (`### Top level` at the root, any other heading names the top-level key it
//! describes; `a.b` and `a[].b` are nested keys, `a[]` is the array `a`), and the `layout`
//! object is the table of `## "layout --json"`. A key whose type holds `→` is a map (`conf`,
//! `params`, `events`, `stat`): its entries are data, not keys.
//!
//! Two reports are checked against them, both ways and with each value's documented type
//! (and the real run's timeline.csv header against the `## timeline.csv` table):
//! - a typed `Report` with every optional part present (every `Option` is `Some`, every list
//!   of objects has an entry), so the keys only the rare paths write (a container kill, an
//!   executor-level failure, the `--cgroup` section) are covered;
//! - the report.json of a real run (a cache, a scan, and a UDF stage that fails as it declares),
//!   which must also read back into `Report`.
//!
//! A documented key may be absent only when its row, or the row of a key it is nested in, says
//! `optional` or `only`, or when what it is nested in is an empty list or null in that report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use spillway::external::{ContainerKill, PythonStageInfo, WorkerKind, WorkerRecord};
use spillway::machine::LoadAverage;
use spillway::pressure::CgroupVersion;
use spillway::pressure::report::{CgroupReport, ChildOutcome};
use spillway::run::{FailureReport, RddReport, Report, TaskReport};
use spillway::storage::block_manager::ReadFrom;

/// One documented key: its type and whether its row marks it conditional.
#[derive(Debug)]
struct DocKey {
    ty: String,
    conditional: bool,
    line: usize,
}

fn report_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/report.md");
    std::fs::read_to_string(&path).expect("docs/report.md")
}

/// The cells of a Markdown table row; `|` inside backticks (`\|x\|`) is escaped in the docs.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The backticked words of a cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The columns of the `## timeline.csv` table, in order (a row may name several).
fn timeline_columns(doc: &str) -> Vec<String> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("timeline.csv"))
        .expect("docs/report.md has a timeline.csv section");
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .flat_map(|l| backticked(&cells(l)[0]))
        .collect()
}

fn says_conditional(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("optional") || w.eq_ignore_ascii_case("only"))
}

/// Every documented key path (`stages[].stageId`, `external.workers[].pid`) of report.json. A
/// `###` heading names the top-level key its table is under (an array's keys are under
/// `name[]`); `report` tells which headings are arrays.
fn documented_keys(doc: &str, report: &Value) -> BTreeMap<String, DocKey> {
    let mut keys = BTreeMap::new();
    let mut part = "";
    let mut heading = String::new();
    let mut in_key_table = false;
    let lines: Vec<&str> = doc.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            part = match h.trim() {
                "report.json" => "report",
                "\"layout --json\"" => "layout",
                _ => "",
            };
            heading.clear();
            in_key_table = false;
            continue;
        }
        if part.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            heading = h.trim().to_string();
            in_key_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let row = cells(line);
        if lines.get(i + 1).is_some_and(|n| n.starts_with("|---")) {
            in_key_table = row.first().is_some_and(|c| c == "key");
            continue;
        }
        if !in_key_table || line.starts_with("|---") {
            continue;
        }
        let prefix = if part == "layout" {
            "layout.".to_string()
        } else if heading == "Top level" {
            String::new()
        } else {
            // The report tells whether the section is a list; a section this report lacks
            // (`cgroup` without `--cgroup`) goes by its row in `### Top level`.
            let is_array = match report.get(&heading) {
                Some(v) => v.is_array(),
                None => match keys.get(&heading) {
                    Some(DocKey { ty, .. }) => ty.starts_with("array"),
                    None => panic!(
                        "docs/report.md:{}: section `### {heading}` is not a key of report.json \
                         nor of the `### Top level` table",
                        i + 1
                    ),
                },
            };
            if is_array {
                format!("{heading}[].")
            } else {
                format!("{heading}.")
            }
        };
        assert!(
            row.len() >= 3,
            "docs/report.md:{}: a key row needs key, type and meaning",
            i + 1
        );
        let names = backticked(&row[0]);
        assert!(
            !names.is_empty(),
            "docs/report.md:{}: no backticked key in the first column",
            i + 1
        );
        for name in names {
            let path = format!("{prefix}{}", name.trim_end_matches("[]"));
            let key = DocKey {
                ty: row[1].clone(),
                conditional: says_conditional(&row[1]) || says_conditional(&row[2]),
                line: i + 1,
            };
            if let Some(old) = keys.insert(path.clone(), key) {
                panic!(
                    "docs/report.md:{}: `{path}` is documented twice (also line {})",
                    i + 1,
                    old.line
                );
            }
        }
    }
    keys
}

/// Whether a documented type is a map: its entries are data, not keys.
fn is_map(ty: &str) -> bool {
    ty.contains('→')
}

/// Every key path of `v`, with its value. Entries of maps (by the docs) are not walked.
fn key_paths<'a>(
    v: &'a Value,
    prefix: &str,
    docs: &BTreeMap<String, DocKey>,
    out: &mut BTreeMap<String, Vec<&'a Value>>,
) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.entry(path.clone()).or_default().push(child);
                if !docs.get(&path).is_some_and(|d| is_map(&d.ty)) {
                    key_paths(child, &path, docs, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), docs, out);
            }
        }
        _ => {}
    }
}

/// Whether `v` is of the documented type `ty` (`int, bytes`, `string or null`, `array of int`,
/// `object string → int`, `float, ms`, `int (signed)`, ...).
fn type_matches(ty: &str, v: &Value) -> bool {
    let base = ty.split(',').next().unwrap_or("").trim();
    let (base, nullable) = match base.strip_suffix(" or null") {
        Some(b) => (b, true),
        None => (base, false),
    };
    if v.is_null() {
        return nullable;
    }
    let word = base.split_whitespace().next().unwrap_or("");
    match word {
        "int" => v.is_i64() || v.is_u64(),
        "float" => v.is_number(),
        "string" => v.is_string(),
        "bool" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => {
            let Some(items) = v.as_array() else {
                return false;
            };
            match base.strip_prefix("array of ") {
                Some(of) => items.iter().all(|i| type_matches(of, i)),
                None => true,
            }
        }
        _ => false,
    }
}

/// Whether the documented `path` may be missing from a report whose keys are `found`: its row
/// or an enclosing key's row says optional/only, or what encloses it is empty or null there.
fn may_be_absent(
    path: &str,
    docs: &BTreeMap<String, DocKey>,
    found: &BTreeMap<String, Vec<&Value>>,
) -> bool {
    let mut p = path;
    loop {
        if docs.get(p).is_some_and(|d| d.conditional) {
            return true;
        }
        let Some(cut) = p.rfind('.') else {
            return false;
        };
        p = p[..cut].trim_end_matches("[]");
        if let Some(values) = found.get(p) {
            // The nearest enclosing key that is there: nothing below an empty list or a null.
            return values
                .iter()
                .all(|v| v.is_null() || v.as_array().is_some_and(|a| a.is_empty()))
                || docs.get(p).is_some_and(|d| d.conditional);
        }
    }
}

/// The mismatches between the docs and one serialized report, as readable lines.
fn mismatches(what: &str, report: &Value) -> Vec<String> {
    let doc = report_md();
    let docs = documented_keys(&doc, report);
    let mut found = BTreeMap::new();
    key_paths(report, "", &docs, &mut found);
    let mut problems = Vec::new();
    for (path, values) in &found {
        match docs.get(path) {
            None => problems.push(format!(
                "{what}: `{path}` is in report.json but not documented in docs/report.md"
            )),
            Some(d) => {
                for v in values {
                    if !type_matches(&d.ty, v) {
                        problems.push(format!(
                            "{what}: `{path}` is {v} but docs/report.md:{} says `{}`",
                            d.line, d.ty
                        ));
                    }
                }
            }
        }
    }
    for (path, d) in &docs {
        if !found.contains_key(path) && !may_be_absent(path, &docs, &found) {
            problems.push(format!(
                "{what}: docs/report.md:{} documents `{path}`, which report.json lacks \
                 (and the row does not say it is optional or only sometimes there)",
                d.line
            ));
        }
    }
    problems
}

/// A report with every optional part present and every list of objects holding one entry.
fn full_report() -> Report {
    let mut r = Report {
        interrupted: Some("SIGINT".into()),
        unexpected_stages: vec![0],
        stages_finished: vec![0],
        tasks: vec![TaskReport {
            read_from: Some(ReadFrom::Memory),
            error: Some("java.lang.OutOfMemoryError".into()),
            ..TaskReport::default()
        }],
        stages: vec![Default::default()],
        failures: vec![FailureReport {
            stage_id: Some(0),
            task_id: Some(0),
            limit_bytes: Some(1),
            peak_usage_bytes: Some(1),
            oom_kill: Some(1),
            exit_status: Some(137),
            ..FailureReport::default()
        }],
        plots: vec!["timeline.svg".into()],
        cgroup: Some(CgroupReport {
            version: CgroupVersion::V2,
            path: "/sys/fs/cgroup/x".into(),
            pressure_path: Some("/sys/fs/cgroup/x/memory.pressure".into()),
            limit_bytes: 1,
            limit_source: "container".into(),
            peak_usage_bytes: 1,
            sampled_peak_usage_bytes: 1,
            oom_kill: 0,
            psi_some_total_us: 0,
            psi_full_total_us: 0,
            events: [("oom".to_string(), 0)].into(),
            stat: [("anon".to_string(), 0)].into(),
            samples: 1,
            child_pid: 1,
            outcome: ChildOutcome::Exited { code: 0 },
            exit_status: 0,
        }),
        ..Report::default()
    };
    r.conf.insert("spark.executor.memory".into(), "1g".into());
    r.machine.cpu_brand = Some("cpu".into());
    r.machine.physical_cores = Some(1);
    r.machine.logical_cpus = Some(1);
    r.machine.total_memory_bytes = Some(1);
    r.machine.available_memory_bytes = Some(1);
    r.machine.load_average = Some(LoadAverage::default());
    r.machine.os_name = Some("os".into());
    r.machine.os_version = Some("1".into());
    r.machine.kernel_version = Some("6".into());
    r.stages[0].params.insert("rdd".into(), 1.into());
    r.storage.rdds.push(RddReport::default());
    r.memory.cgroup = Some("V2 /".into());
    r.verification.stages_failed_verification.push(0);
    let e = &mut r.external;
    e.pyspark_memory_mb_per_worker = Some(1);
    e.python = Some("/usr/bin/python3 (Python 3)".into());
    e.python_stages.push(PythonStageInfo {
        stage_id: 0,
        worker: WorkerKind::Python3,
        reason: "python3 found".into(),
    });
    e.workers.push(WorkerRecord {
        pid: 1,
        kind: WorkerKind::Python3,
        tasks: 1,
        peak_rss_bytes: 1,
        memory_limit_mb: -1,
        rlimit_as_soft_bytes: Some(1),
        rlimit_set: true,
        rlimit_warning: Some("warning".into()),
        exit: "exit status: 0".into(),
        failed_with: Some("PYTHON_WORKER_FAILED".into()),
    });
    e.container_monitor.kill = Some(ContainerKill {
        total_rss_bytes: 1,
        executor_rss_bytes: 1,
        workers_rss_bytes: 0,
        container_bytes: 1,
        exit_status: -104,
        message: "Container killed".into(),
    });
    r
}

#[test]
fn a_report_with_every_optional_part_matches_the_docs_both_ways() {
    let report = serde_json::to_value(full_report()).expect("Report serializes");
    let problems = mismatches("a full Report", &report);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn a_real_run_s_report_matches_the_docs_both_ways() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let scenario = dir.path().join("keys.toml");
    // A cache and a scan that fit, and a UDF that needs more user memory than 512m leaves
    // ((512 − 300) MiB × 0.4): the failure it declares.
    std::fs::write(
        &scenario,
        r#"
name = "report-keys"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "1"

[[stages]]
kind = "cache"
rdd = 1
partitions = 1
partition_bytes = "1m"

[[stages]]
kind = "scan"
rdd = 1

[[stages]]
kind = "udf"
tasks = 1
bytes_per_task = "400m"
expect = "failure"
"#,
    )
    .expect("the scenario is written");
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", dir.path())
        .output()
        .expect("spillway runs");
    assert_eq!(
        run.status.code(),
        Some(0),
        "a declared failure that happens is a result; stderr:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json is written");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    let printed: Value = serde_json::from_slice(&run.stdout).expect("--json prints the report");
    assert_eq!(printed, report, "--json prints what report.json holds");

    // The run did what the scenario says, so its report has the keys of each path.
    assert_eq!(report["complete"], true);
    assert_eq!(report["unexpected_stages"], serde_json::json!([]));
    assert_eq!(report["tasks"][1]["readFrom"], "memory", "the scan's task");
    assert_eq!(report["tasks"][2]["status"], "FAILED", "the UDF's task");
    assert_eq!(report["failures"][0]["error"], "java.lang.OutOfMemoryError");

    let problems = mismatches("a real run", &report);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    // timeline.csv has exactly the documented columns, in the documented order.
    let csv = std::fs::read_to_string(out.join("timeline.csv")).expect("timeline.csv is written");
    let header: Vec<String> = csv
        .lines()
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(header, timeline_columns(&report_md()));

    // The typed `Report` reads it back without losing or adding a key.
    let typed: Report = serde_json::from_value(report.clone()).expect("report.json reads back");
    let again = serde_json::to_value(&typed).expect("Report serializes");
    let docs = documented_keys(&report_md(), &report);
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    key_paths(&report, "", &docs, &mut before);
    key_paths(&again, "", &docs, &mut after);
    assert_eq!(
        before.keys().collect::<BTreeSet<_>>(),
        after.keys().collect::<BTreeSet<_>>()
    );
}

#[test]
fn the_checker_finds_an_undocumented_key_and_a_missing_one() {
    let mut report = serde_json::to_value(full_report()).expect("Report serializes");
    report["memory"]["undocumented_bytes"] = 1.into();
    report["stages"][0]
        .as_object_mut()
        .expect("a stage is an object")
        .remove("numTasks");
    report["machine"]["loadAverage"]["oneMinute"] = "high".into();
    let problems = mismatches("a broken report", &report).join("\n");
    assert!(
        problems.contains("`memory.undocumented_bytes` is in report.json but not documented"),
        "{problems}"
    );
    assert!(
        problems.contains("documents `stages[].numTasks`, which report.json lacks"),
        "{problems}"
    );
    assert!(
        problems.contains("`machine.loadAverage.oneMinute` is \"high\""),
        "{problems}"
    );
}
