//! End-to-end: `spillway layout` through the real binary (the acceptance of the layout work).

use std::process::{Command, Output};

fn spillway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .output()
        .expect("spillway runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = spillway(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn seed_example_as_json() {
    let v = json(&[
        "layout",
        "--conf",
        "spark.executor.memory=4g",
        "--conf",
        "spark.memory.fraction=0.75",
        "--conf",
        "spark.memory.storageFraction=0.5",
        "--json",
    ]);
    assert_eq!(v["unified"], 2_985_295_872i64);
    assert_eq!(v["storage_region"], 1_492_647_936i64);
    assert_eq!(v["execution_region"], 1_492_647_936i64);
    assert_eq!(v["user"], 995_098_624i64);
    assert_eq!(v["reserved"], 314_572_800i64);
    assert_eq!(v["container"], 4505i64 << 20);
    assert_eq!(v.as_object().unwrap().len(), 17);
}

#[test]
fn properties_file_then_conf_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spark-defaults.conf");
    std::fs::write(
        &file,
        "spark.executor.memory 2g\nspark.memory.fraction 0.5\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let v = json(&["layout", "--properties-file", path, "--json"]);
    assert_eq!(v["system_memory"], 2i64 << 30);
    assert_eq!(v["unified"], ((2i64 << 30) - 314_572_800) / 2);
    let v = json(&[
        "layout",
        "--properties-file",
        path,
        "--conf",
        "spark.executor.memory=3g",
        "--json",
    ]);
    assert_eq!(v["system_memory"], 3i64 << 30);
}

#[test]
fn system_memory_flag_stands_in_for_max_memory() {
    let v = json(&["layout", "--system-memory", "954728448", "--json"]);
    assert_eq!(v["system_memory"], 954_728_448i64);
    assert_eq!(v["unified"], 384_093_388i64);
}

#[test]
fn executor_memory_below_the_minimum_exits_2_with_both_numbers() {
    let out = spillway(&["layout", "--conf", "spark.executor.memory=400m"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("419430400"), "{err}");
    assert!(err.contains("471859200"), "{err}");
    assert!(err.contains("INVALID_EXECUTOR_MEMORY"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_values_exit_2_naming_key_and_value() {
    for (arg, needles) in [
        (
            "spark.memory.fraction=1.5",
            vec!["spark.memory.fraction", "1.5"],
        ),
        (
            "spark.executor.memory=4q",
            vec!["spark.executor.memory", "4q", "Invalid suffix"],
        ),
        (
            "spark.memory.offHeap.enabled=true",
            vec!["spark.memory.offHeap.size"],
        ),
        ("spark.executor.memory", vec!["without '='"]),
        (
            "spark.executor.cores=4294967296",
            vec!["spark.executor.cores", "4294967296", "should be int"],
        ),
        (
            "spark.executor.cores=0",
            vec!["'0' in spark.executor.cores is invalid", "positive"],
        ),
        (
            "spark.task.cpus=0",
            vec!["'0' in spark.task.cpus is invalid", "at least one core"],
        ),
        (
            "spark.shuffle.file.buffer=4g",
            vec!["spark.shuffle.file.buffer", "'4g'", "2097151"],
        ),
        (
            "spillway.timeline.intervalMs=5",
            vec!["spillway.timeline.intervalMs", "'5'", "10 to 1000"],
        ),
    ] {
        let out = spillway(&["layout", "--conf", arg]);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{arg}: {err}");
        }
    }
    let out = spillway(&["layout", "--system-memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--system-memory"));
}

#[test]
fn unknown_spark_keys_warn_but_run() {
    let out = spillway(&[
        "layout",
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "--json",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN SparkConf:") && err.contains("spark.sql.shuffle.partitions"),
        "{err}"
    );
}

#[test]
fn touch_makes_the_reserved_region_resident() {
    let out = spillway(&["layout", "--touch", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let regions = v["regions"].as_array().unwrap();
    let find = |name: &str| {
        regions
            .iter()
            .find(|r| r["region"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
            .clone()
    };
    let reserved = find("reserved");
    let resident = reserved["resident_bytes"].as_u64().unwrap() as f64;
    let model = 314_572_800f64;
    assert!(
        (resident - model).abs() / model < 0.01,
        "reserved resident {resident}"
    );
    // Nothing else has been written yet.
    assert!(find("user")["resident_bytes"].as_u64().unwrap() < 1 << 20);
    assert!(find("unified")["resident_bytes"].as_u64().unwrap() < 1 << 20);
    let text = spillway(&["layout", "--touch"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("reserved") && text.contains("100.0%"),
        "{text}"
    );
}

#[test]
fn help_prints_the_exit_status_table() {
    let out = spillway(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let table = text
        .split("Exit status:")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    for code in ["0", "1", "2", "3", "4", "128+n", "130"] {
        assert!(table.contains(code), "{code} in {table}");
    }
}
