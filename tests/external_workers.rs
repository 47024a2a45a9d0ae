//! Python stages end to end through the real binary: worker processes (the spillway worker and
//! a real `python3`), RLIMIT_AS from `spark.executor.pyspark.memory`, the ExternalMerger's
//! spill threshold `spark.python.worker.memory`, and the YARN-style container monitor.
//!
//! After every run: no worker process is left (every pid the report lists is gone) and the
//! local directory holds no file (spill files, the worker script, the private directory).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod skip_support;
use skip_support::skip;

struct Run {
    code: i32,
    stderr: String,
    report: Value,
    /// `timeline.csv`, empty when the run wrote none.
    timeline: String,
}

/// Runs `stages` (TOML `[[stages]]` entries) with `conf`, in a fresh local and output dir.
fn run(conf: &[(&str, &str)], stages: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut text = String::from("name = \"external\"\n[conf]\n");
    for (k, v) in conf {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    text.push_str(&format!("\"spark.local.dir\" = \"{}\"\n", local.display()));
    text.push_str(stages);
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("SPILLWAY_LOG", "warn")
        .env_remove("SPARK_LOCAL_DIRS")
        .env_remove("SPARK_EXECUTOR_DIRS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/report.json"))
            .unwrap_or_else(|e| panic!("no report.json ({e}); stderr:\n{stderr}")),
    )
    .unwrap();
    let timeline = std::fs::read_to_string(dir.path().join("out/timeline.csv")).unwrap_or_default();
    assert_no_workers_left(&report);
    assert_empty(&local);
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr,
        report,
        timeline,
    }
}

/// Every worker the report lists is gone (or its pid now belongs to another program).
fn assert_no_workers_left(report: &Value) {
    let workers = report["external"]["workers"].as_array().unwrap();
    assert_eq!(
        workers.len() as u64,
        report["external"]["workers_started"].as_u64().unwrap(),
        "every started worker was retired and recorded"
    );
    for w in workers {
        let pid = w["pid"].as_u64().unwrap();
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(
                !cmd.contains("spillway_worker.py") && !cmd.contains("spillway worker"),
                "worker {pid} still running: {cmd}"
            );
        }
        assert!(!w["exit"].as_str().unwrap().is_empty(), "{w}");
    }
}

fn assert_empty(local: &Path) {
    let left: Vec<_> = walk(local);
    assert!(
        left.is_empty(),
        "left behind under {}: {left:?}",
        local.display()
    );
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn python3_present() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import resource"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("no working python3 with the resource module on this host");
    }
    ok
}

fn stage(report: &Value, i: usize) -> &Value {
    &report["stages"][i]
}

const SMALL: &[(&str, &str)] = &[
    ("spark.executor.memory", "512m"),
    ("spark.executor.cores", "2"),
];

fn udf_and_aggregate(worker: &str) {
    let r = run(
        SMALL,
        &format!(
            "[[stages]]\nkind = \"python\"\ntasks = 4\nbytes_per_task = \"24m\"\n\
             records_per_task = 20000\ndistinct_keys = 5000\nworker = \"{worker}\"\n"
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = stage(&r.report, 0);
    assert_eq!(s["kind"], "python");
    assert_eq!(s["numCompleteTasks"], 4, "{}", r.report["failures"]);
    assert_eq!(s["verified"], true);
    assert_eq!(r.report["verification"]["ok"], true);
    let x = &r.report["external"];
    assert_eq!(x["python_stages"][0]["worker"], worker);
    // One worker per running task, reused: at most 2 (cores) for 4 tasks x 2 requests.
    let started = x["workers_started"].as_u64().unwrap();
    assert!((1..=2).contains(&started), "{x}");
    let tasks: u64 = x["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tasks"].as_u64().unwrap())
        .sum();
    assert_eq!(tasks, 8, "{x}");
    // Without spark.executor.pyspark.memory no worker limits itself.
    for w in x["workers"].as_array().unwrap() {
        assert_eq!(w["memory_limit_mb"], -1, "{w}");
        assert_eq!(w["rlimit_set"], false, "{w}");
        assert_eq!(w["exit"], "exit status: 0", "{w}");
        // The UDF's 24 MiB were resident in the worker.
        assert!(w["peak_rss_bytes"].as_u64().unwrap() >= 24 << 20, "{w}");
    }
    assert!(
        x["peak_workers_rss_bytes"].as_u64().unwrap() >= 24 << 20,
        "{x}"
    );
    assert_eq!(x["overhead_budget_bytes"], 384u64 << 20);
    let csv = r.report["timeline"]["csv"].as_str().unwrap();
    assert_eq!(csv, "timeline.csv");
    // The timeline samples the workers' RSS that the pool measured (each task's result is a
    // check, so at least the last sample has seen live workers).
    let peak_sampled = column_max(&r.timeline, "workers_rss");
    assert!(
        peak_sampled > 0,
        "workers_rss never sampled:\n{}",
        r.timeline
    );
    assert!(
        peak_sampled <= x["peak_workers_rss_bytes"].as_u64().unwrap(),
        "{peak_sampled} > the pool's peak: {x}"
    );
}

/// The largest value of `column` in a CSV with a header line.
fn column_max(csv: &str, column: &str) -> u64 {
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    let i = header
        .split(',')
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no {column} in {header}"));
    lines
        .filter_map(|l| l.split(',').nth(i)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn spillway_worker_runs_udf_and_aggregation() {
    udf_and_aggregate("spillway");
}

#[test]
fn python3_worker_runs_udf_and_aggregation() {
    if python3_present() {
        udf_and_aggregate("python3");
    }
}

/// spark.executor.pyspark.memory=512m on 2 cores: PYSPARK_EXECUTOR_MEMORY_MB=256, so a 400 MiB
/// UDF is a MemoryError in that worker; the run goes on, a new worker runs the next task.
fn memory_error_then_recovery(worker: &str) {
    let conf = [
        ("spark.executor.memory", "512m"),
        ("spark.executor.cores", "2"),
        ("spark.executor.pyspark.memory", "512m"),
    ];
    let r = run(
        &conf,
        &format!(
            "[[stages]]\nkind = \"python\"\ntasks = 1\nbytes_per_task = \"400m\"\nworker = \"{worker}\"\nexpect = \"failure\"\n\
             [[stages]]\nkind = \"python\"\ntasks = 1\nbytes_per_task = \"64m\"\nworker = \"{worker}\"\n"
        ),
    );
    assert_eq!(
        r.code, 0,
        "a declared MemoryError is a result: {}",
        r.stderr
    );
    let rep = &r.report;
    assert_eq!(stage(rep, 0)["numFailedTasks"], 1);
    assert_eq!(stage(rep, 1)["numCompleteTasks"], 1, "{}", rep["failures"]);
    let f = &rep["failures"].as_array().unwrap()[0];
    assert_eq!(f["error"], "PythonException");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("MemoryError"), "{msg}");
    assert!(msg.contains("udf of 419430400 bytes"), "{msg}");
    assert!(msg.contains("RLIMIT_AS 268435456 bytes"), "{msg}");
    assert!(msg.contains("PYSPARK_EXECUTOR_MEMORY_MB=256"), "{msg}");
    let x = &rep["external"];
    assert_eq!(x["pyspark_memory_mb_per_worker"], 256);
    assert_eq!(
        x["workers_started"], 2,
        "the failed worker was replaced: {x}"
    );
    assert_eq!(x["workers_failed"], 1);
    let workers = x["workers"].as_array().unwrap();
    for w in workers {
        assert_eq!(w["memory_limit_mb"], 256, "{w}");
        assert_eq!(w["rlimit_as_soft_bytes"], 268435456u64, "{w}");
        assert_eq!(w["rlimit_set"], true, "{w}");
    }
    let failed = workers
        .iter()
        .find(|w| w["failed_with"] == "MemoryError")
        .unwrap();
    // PySpark's worker exits with -1 after reporting the exception; no signal, no abort.
    assert_eq!(failed["exit"], "exit status: 255", "{failed}");
    assert_eq!(failed["tasks"], 0);
    let good = workers.iter().find(|w| w["failed_with"].is_null()).unwrap();
    assert_eq!(good["tasks"], 1);
    // The layout counts pyspark memory in the container (spark.yarn.isPython defaults to it).
    assert_eq!(x["container_bytes"], (512u64 + 384 + 512) << 20);
}

#[test]
fn spillway_worker_memory_error_past_rlimit_as() {
    memory_error_then_recovery("spillway");
}

#[test]
fn python3_worker_memory_error_past_rlimit_as() {
    if python3_present() {
        memory_error_then_recovery("python3");
    }
}

/// The ExternalMerger spills past spark.python.worker.memory and the merged result verifies;
/// with a large threshold it does not spill.
fn spill_threshold(worker: &str, threshold: &str, keys: u64) -> Value {
    let conf = [
        ("spark.executor.memory", "512m"),
        ("spark.executor.cores", "1"),
        ("spark.python.worker.memory", threshold),
    ];
    let r = run(
        &conf,
        &format!(
            "[[stages]]\nkind = \"python\"\ntasks = 1\nbytes_per_task = 0\n\
             records_per_task = {keys}\ndistinct_keys = {keys}\nworker = \"{worker}\"\n"
        ),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = stage(&r.report, 0).clone();
    assert_eq!(s["numCompleteTasks"], 1, "{}", r.report["failures"]);
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["recordsOut"].as_u64().unwrap() > keys / 2, "{s}");
    s
}

#[test]
fn python3_merger_spills_past_python_worker_memory() {
    if !python3_present() {
        return;
    }
    // CPython holds ~150 bytes per (int -> tuple) entry: 300k keys are ~45 MiB > 32m.
    let s = spill_threshold("python3", "32m", 300_000);
    assert!(s["spillCount"].as_u64().unwrap() > 0, "{s}");
    assert!(s["diskBytesSpilled"].as_u64().unwrap() > 0, "{s}");
    let s = spill_threshold("python3", "2g", 300_000);
    assert_eq!(s["spillCount"], 0, "{s}");
    assert_eq!(s["diskBytesSpilled"], 0, "{s}");
}

#[test]
fn spillway_merger_spills_past_python_worker_memory() {
    // A Rust map holds ~32 bytes per entry, so the threshold is lower than for CPython to
    // spill the same keys.
    let s = spill_threshold("spillway", "8m", 300_000);
    assert!(s["spillCount"].as_u64().unwrap() > 0, "{s}");
    assert!(s["diskBytesSpilled"].as_u64().unwrap() > 0, "{s}");
    let s = spill_threshold("spillway", "1.5g", 300_000);
    assert_eq!(s["spillCount"], 0, "{s}");
}

/// A 512 MiB heap with 64 MiB overhead is a 576 MiB container; the executor holds ~310 MiB
/// (reserved memory is touched) and a worker's 400 MiB UDF takes the total past it.
fn container(policy: &str, worker: &str) -> Run {
    let conf = [
        ("spark.executor.memory", "512m"),
        ("spark.executor.cores", "1"),
        ("spark.executor.memoryOverhead", "64m"),
        ("spillway.container.monitor", policy),
    ];
    run(
        &conf,
        &format!(
            "[[stages]]\nkind = \"python\"\ntasks = 2\nbytes_per_task = \"400m\"\nworker = \"{worker}\"\n\
             [[stages]]\nkind = \"python\"\ntasks = 1\nbytes_per_task = \"1m\"\nworker = \"{worker}\"\n"
        ),
    )
}

#[test]
fn container_monitor_kills_like_yarn() {
    let r = container("kill", "spillway");
    assert_ne!(r.code, 0, "a killed container fails the run");
    assert!(
        r.stderr
            .contains("Container killed by YARN for exceeding physical memory limits."),
        "{}",
        r.stderr
    );
    let rep = &r.report;
    let c = &rep["external"]["container_monitor"];
    assert_eq!(c["killed"], true, "{c}");
    assert_eq!(c["kill"]["exit_status"], -104);
    let limit = c["limit_bytes"].as_u64().unwrap();
    assert_eq!(limit, 576 << 20);
    let total = c["kill"]["total_rss_bytes"].as_u64().unwrap();
    assert!(total > limit, "{c}");
    // The monitor may catch the worker while it is still filling its 400 MiB.
    assert!(c["kill"]["workers_rss_bytes"].as_u64().unwrap() > 0, "{c}");
    let failures = rep["failures"].as_array().unwrap();
    let f = failures
        .iter()
        .find(|f| f["error"] == "CONTAINER_KILLED_PHYSICAL_MEMORY")
        .unwrap_or_else(|| panic!("{failures:?}"));
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("of 576 MB physical memory used"), "{msg}");
    assert!(
        msg.contains("Consider boosting spark.executor.memoryOverhead"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{total} bytes resident")), "{msg}");
    // The task that was running lost its executor; nothing after it ran.
    assert!(
        failures.iter().any(|f| f["error"] == "ExecutorLostFailure"),
        "{failures:?}"
    );
    assert_eq!(rep["stages"].as_array().unwrap().len(), 1);
    assert_eq!(rep["verification"]["ok"], false);
    for w in rep["external"]["workers"].as_array().unwrap() {
        assert_eq!(w["exit"], "signal: 9 (SIGKILL)", "{w}");
    }
}

#[test]
fn container_monitor_warns_like_yarn() {
    let r = container("warn", "spillway");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("beyond the 'PHYSICAL' memory limit. Current usage:")
            && r.stderr.contains("of 576 MB physical memory used"),
        "{}",
        r.stderr
    );
    let c = &r.report["external"]["container_monitor"];
    assert_eq!(c["killed"], false, "{c}");
    assert!(c["times_exceeded"].as_u64().unwrap() >= 1, "{c}");
    assert!(
        c["peak_total_rss_bytes"].as_u64().unwrap() > 576 << 20,
        "{c}"
    );
    assert_eq!(r.report["stages"].as_array().unwrap().len(), 2);
    assert_eq!(r.report["verification"]["ok"], true);
    assert!(r.report["failures"].as_array().unwrap().is_empty());
}

#[test]
fn container_monitor_kills_python3_workers() {
    if !python3_present() {
        return;
    }
    let r = container("kill", "python3");
    assert_ne!(r.code, 0);
    assert_eq!(r.report["external"]["container_monitor"]["killed"], true);
}

#[test]
fn unknown_worker_and_policy_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.toml");
    std::fs::write(&p, "[[stages]]\nkind = \"python\"\nworker = \"jython\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["run", p.to_str().unwrap(), "--out"])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jython"));
    std::fs::write(
        &p,
        "[[stages]]\nkind = \"python\"\ntasks = 1\nbytes_per_task = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args([
            "run",
            p.to_str().unwrap(),
            "--conf",
            "spillway.container.monitor=maybe",
            "--out",
        ])
        .arg(dir.path().join("o2"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
