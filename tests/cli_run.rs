//! End-to-end: `spillway run` through the real binary, checking the report's numbers.

use std::path::Path;
use std::process::{Command, Output};

fn spillway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .env("SPILLWAY_LOG", "off")
        .output()
        .expect("spillway runs")
}

fn run_json(scenario: &str, extra: &[&str], out: &Path) -> serde_json::Value {
    let mut args = vec!["run", scenario, "--json", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = spillway(&args);
    assert!(
        o.status.success(),
        "{scenario}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints the report");
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(v, on_disk, "stdout and report.json agree");
    v
}

fn write_scenario(dir: &Path, text: &str) -> String {
    let p = dir.join("scenario.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn cache_pressure_matches_spark_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let scenario = write_scenario(
        dir.path(),
        r#"
name = "cache-12"
[conf]
"spark.executor.memory" = "1g"
"spark.memory.fraction" = "0.6"
"spark.executor.cores" = "2"
[[stages]]
kind = "cache"
rdd = 1
partitions = 12
partition_bytes = 41969980
record_bytes = "8m"
storage_level = "MEMORY_AND_DISK"
[[stages]]
kind = "scan"
rdd = 1
"#,
    );
    let out = dir.path().join("out");
    let local_conf = format!("spark.local.dir={}", local.display());
    let v = run_json(&scenario, &["--conf", &local_conf], &out);
    let rdd = &v["storage"]["rdds"][0];
    assert_eq!(rdd["numCachedPartitions"], 12, "{rdd}");
    assert_eq!(rdd["partitionsInMemory"], 10);
    assert_eq!(rdd["diskUsed"], 83_939_960i64);
    assert_eq!(rdd["memoryUsed"], 10 * 41_969_980i64);
    assert_eq!(
        rdd["storageLevel"],
        "Disk Memory Deserialized 1x Replicated"
    );
    let scan = &v["stages"][1];
    assert_eq!(scan["kind"], "scan");
    assert_eq!(scan["numCompleteTasks"], 12);
    assert_eq!(
        scan["memoryHits"].as_u64().unwrap() + scan["diskHits"].as_u64().unwrap(),
        12
    );
    assert_eq!(scan["recomputes"], 0);
    assert_eq!(v["verification"]["ok"], true);
    assert_eq!(v["layout"]["unified"], 455_501_414i64);
    assert!(v["failures"].as_array().unwrap().is_empty());
    for f in [
        "report.json",
        "timeline.csv",
        "timeline.svg",
        "timeline.png",
        "spill_per_task.svg",
        "spill_per_task.png",
    ] {
        let meta = std::fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let csv = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    assert!(csv.lines().count() > 3, "the sampler ran");
    assert!(csv.starts_with("t_ms,stage,"));
    // The executor's private block directory is gone.
    assert_eq!(
        std::fs::read_dir(&local).unwrap().count(),
        0,
        "files left in {}",
        local.display()
    );
    // With 8 MiB records the unroll reservation lags the bytes written (Spark checks the size
    // every 16 records), so resident memory runs ahead of the accounted; the report says so.
    let gap = v["memory"]["gap"]["explanation"].as_str().unwrap();
    assert!(gap.contains("unroll reservations"), "{gap}");
}

#[test]
fn memory_only_leaves_two_partitions_uncached_and_scan_recomputes_them() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        r#"
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"
[[stages]]
kind = "cache"
partitions = 12
partition_bytes = 41969980
record_bytes = "8m"
[[stages]]
kind = "scan"
"#,
    );
    let v = run_json(&scenario, &[], &dir.path().join("out"));
    let rdd = &v["storage"]["rdds"][0];
    assert_eq!(rdd["numCachedPartitions"], 10, "{rdd}");
    assert_eq!(rdd["diskUsed"], 0);
    let scan = &v["stages"][1];
    assert_eq!(scan["recomputes"], 2, "{scan}");
    assert_eq!(scan["memoryHits"], 10);
    assert_eq!(v["verification"]["ok"], true);
}

#[test]
fn a_udf_past_the_user_region_fails_its_task_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        r#"
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"
[[stages]]
kind = "udf"
tasks = 1
bytes_per_task = "300m"
expect = "failure"
[[stages]]
kind = "udf"
tasks = 2
bytes_per_task = "100m"
"#,
    );
    // The failure is declared: the run exits 0 (run_json checks it).
    let v = run_json(&scenario, &[], &dir.path().join("out"));
    let stage = &v["stages"][0];
    assert_eq!(stage["expect"], "failure", "{stage}");
    assert_eq!(stage["outcomeAsExpected"], true, "{stage}");
    assert_eq!(v["stages"][1]["outcomeAsExpected"], true);
    assert_eq!(v["unexpected_stages"], serde_json::json!([]));
    // The user region is 289.6 MiB: a task wanting 300 MiB of objects cannot fit.
    assert_eq!(stage["numFailedTasks"], 1, "{stage}");
    // The run goes on, and the memory the failed task held came back.
    assert_eq!(v["stages"][1]["numCompleteTasks"], 2, "{}", v["stages"][1]);
    let f = &v["failures"][0];
    assert_eq!(f["error"], "java.lang.OutOfMemoryError");
    assert!(
        f["message"].as_str().unwrap().contains("Java heap space"),
        "{f}"
    );
}

#[test]
fn undeclared_task_failures_exit_4_with_the_report_written_and_the_failures_named() {
    let dir = tempfile::tempdir().unwrap();
    // 4 tasks of 2 GiB of objects each: 8 GiB to generate, so the run says first that it is
    // long; each task fails once it passes the 289.6 MiB user region.
    let scenario = write_scenario(
        dir.path(),
        r#"
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"
[[stages]]
kind = "udf"
tasks = 4
bytes_per_task = "2g"
"#,
    );
    let out = dir.path().join("out");
    let o = spillway(&["run", &scenario, "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("Ctrl-C stops it cleanly"), "{err}");
    assert!(
        err.contains("stage 0") && err.contains("java.lang.OutOfMemoryError"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["unexpected_stages"], serde_json::json!([0]));
    assert_eq!(v["stages"][0]["outcomeAsExpected"], false);
    assert_eq!(v["stages"][0]["numFailedTasks"], 4);
    assert_eq!(v["complete"], true);
}

#[test]
fn a_stage_declared_to_fail_that_succeeds_is_unexpected_too() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        "[[stages]]\nkind = \"udf\"\ntasks = 1\nbytes_per_task = \"1m\"\nexpect = \"failure\"\n",
    );
    let out = dir.path().join("out");
    let o = spillway(&["run", &scenario, "--out", out.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn bad_scenarios_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[[stages]]\nkind = \"sort\"\nrecords = 10\n",
            "unknown key 'records'",
        ),
        (
            "[[stages]]\nkind = \"shuffle\"\n",
            "unknown stage kind 'shuffle'",
        ),
        (
            "[conf]\n\"spark.memory.fraction\" = \"2\"\n[[stages]]\nkind = \"udf\"\n",
            "spark.memory.fraction",
        ),
        ("[[stages]\nkind = \"udf\"\n", "not valid TOML"),
        // As u32 this was 0 tasks and a "successful" run.
        (
            "[[stages]]\nkind = \"sort\"\ntasks = 4294967296\n",
            "'tasks' in stage 0",
        ),
        ("[[stages]]\nkind = \"udf\"\nexpect = \"oom\"\n", "'expect'"),
        // A reduce stage needs its shuffle's map stage first.
        (
            "[[stages]]\nkind = \"shuffle_reduce\"\nshuffle = 3\n",
            "no earlier shuffle_map stage writes this shuffle",
        ),
        (
            "[[stages]]\nkind = \"shuffle_map\"\nhot_key_percent = 101\n",
            "hot_key_percent",
        ),
        (
            "[[stages]]\nkind = \"shuffle_map\"\noperation = \"join\"\n",
            "operation",
        ),
        (
            "[conf]\n\"spark.shuffle.checksum.algorithm\" = \"md5\"\n[[stages]]\nkind = \"udf\"\n",
            "spark.shuffle.checksum.algorithm",
        ),
        (
            "[conf]\n\"spark.reducer.maxSizeInFlight\" = \"0\"\n[[stages]]\nkind = \"udf\"\n",
            "spark.reducer.maxSizeInFlight",
        ),
        (
            "[[stages]]\nkind = \"broadcast\"\nstorage_level = \"MEMORY_ONLY\"\n",
            "'storage_level' in stage 0 of",
        ),
        (
            "[conf]\n\"spark.broadcast.blockSize\" = \"0\"\n[[stages]]\nkind = \"broadcast\"\n",
            "spark.broadcast.blockSize",
        ),
        (
            "[[stages]]\nkind = \"cache\"\nrecord_type = \"Long\"\n",
            "'record_type' in stage 0 of",
        ),
        (
            "[[stages]]\nkind = \"cache\"\nrecord_type = \"long_pair\"\nrecord_bytes = 100\n",
            "'record_bytes' in stage 0 of",
        ),
        (
            "[conf]\n\"spark.rdd.compress\" = \"yes\"\n[[stages]]\nkind = \"cache\"\n",
            "spark.rdd.compress",
        ),
    ] {
        let scenario = write_scenario(dir.path(), text);
        let o = spillway(&[
            "run",
            &scenario,
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{text}: {err}");
        assert!(!dir.path().join("o").join("report.json").exists());
    }
    let o = spillway(&["run", "no-such-scenario"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_default_scenario_exercises_every_region_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let v = run_json("default", &[], dir.path());
    assert_eq!(v["verification"]["ok"], true, "{}", v["verification"]);
    assert!(
        v["failures"].as_array().unwrap().is_empty(),
        "{}",
        v["failures"]
    );
    let m = &v["memory"];
    assert!(
        m["peak_user_bytes"].as_u64().unwrap() > 0,
        "user memory used"
    );
    assert!(
        m["peak_on_heap_storage_bytes"].as_u64().unwrap() > 0,
        "storage used"
    );
    assert!(
        m["peak_on_heap_execution_bytes"].as_u64().unwrap() > 0,
        "execution used"
    );
    assert!(
        m["peak_off_heap_storage_bytes"].as_u64().unwrap() > 0,
        "off-heap used"
    );
    let sort = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "sort")
        .unwrap();
    assert!(sort["diskBytesSpilled"].as_u64().unwrap() > 0, "{sort}");
    assert!(sort["memoryBytesSpilled"].as_u64().unwrap() > 0, "{sort}");
    assert!(sort["peakExecutionMemory"].as_u64().unwrap() > 0, "{sort}");
    assert!(m["gap"]["within_bound"].as_bool().unwrap(), "{}", m["gap"]);
    for t in v["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "SUCCESS", "{t}");
    }
}

#[test]
fn cache_then_sort_evicts_down_to_the_storage_region_and_not_below() {
    let dir = tempfile::tempdir().unwrap();
    let v = run_json("cache-then-sort", &[], dir.path());
    let region = v["layout"]["storage_region"].as_u64().unwrap();
    let block = 40u64 << 20;
    let cached = 8 * block;
    // Execution takes back what storage borrowed beyond its region, whole blocks at a time:
    // exactly the blocks needed to get down to the region, and no more.
    let needed = (cached - region).div_ceil(block);
    let sort = &v["stages"][1];
    assert_eq!(sort["evictionCount"].as_u64().unwrap(), needed, "{sort}");
    assert_eq!(sort["evictedBytes"].as_u64().unwrap(), needed * block);
    assert!(sort["diskBytesSpilled"].as_u64().unwrap() > 0);
    let csv = std::fs::read_to_string(dir.path().join("timeline.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (stage, used) = (col("stage"), col("on_heap_storage_used"));
    let min_during_sort = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[stage] == "1")
        .map(|f| f[used].parse::<u64>().unwrap())
        .min()
        .unwrap();
    assert!(
        min_during_sort > region - block,
        "{min_during_sort} vs region {region}"
    );
    assert!(min_during_sort <= region);
    // The scan recomputes exactly the evicted MEMORY_ONLY partitions.
    assert_eq!(v["stages"][2]["recomputes"].as_u64().unwrap(), needed);
    assert_eq!(v["verification"]["ok"], true);
}

#[test]
fn the_headline_sort_spills_at_1g_and_not_at_8g() {
    let dir = tempfile::tempdir().unwrap();
    let small = run_json("sort-spill", &[], &dir.path().join("1g"));
    let s = &small["stages"][0];
    assert!(s["diskBytesSpilled"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["numCompleteTasks"], 4);
    assert_eq!(small["verification"]["ok"], true);
    let big = run_json(
        "sort-spill",
        &["--conf", "spark.executor.memory=8g"],
        &dir.path().join("8g"),
    );
    let s = &big["stages"][0];
    assert_eq!(s["diskBytesSpilled"], 0, "{s}");
    assert_eq!(s["memoryBytesSpilled"], 0, "{s}");
    assert_eq!(big["verification"]["ok"], true);
    assert_eq!(
        small["verification"]["digest_in"], big["verification"]["digest_in"],
        "the same records were sorted"
    );
}

/// A codec Spark does not ship (or spillway lacks) is bad input: exit 2 naming the key and the
/// value, from the executor's start, before any report or spill is written.
#[test]
fn a_bad_codec_exits_2_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["gzip", "lzf"] {
        let out = dir.path().join(value);
        let conf = format!("spark.io.compression.codec={value}");
        let o = spillway(&[
            "run",
            "sort-spill",
            "--conf",
            &conf,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{value}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("spark.io.compression.codec") && err.contains(value),
            "{value}: {err}"
        );
        assert!(!out.join("report.json").exists(), "{value}");
    }
}

/// Issue 16's second acceptance line through `spillway run`: (Long, Long) pairs cache fewer
/// partitions at MEMORY_ONLY than at MEMORY_ONLY_SER in the same memory (docs/spark-model.md
/// §21.7), and a MEMORY_AND_DISK_SER block whose unroll failed is back in memory after its
/// put (§6.6): the report counts it and the scan reads it from memory.
#[test]
fn typed_records_cache_as_spark_sizes_them() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let local_conf = format!("spark.local.dir={}", local.display());
    let mut cached = Vec::new();
    for level in ["MEMORY_ONLY", "MEMORY_ONLY_SER"] {
        let scenario = write_scenario(
            dir.path(),
            &format!(
                r#"
[conf]
"spark.executor.memory" = "1g"
"spark.memory.fraction" = "0.1"
"spark.executor.cores" = "1"
[[stages]]
kind = "cache"
rdd = 1
partitions = 10
partition_bytes = "4m"
record_type = "long_pair"
storage_level = "{level}"
"#
            ),
        );
        let out = dir.path().join(level);
        let v = run_json(&scenario, &["--conf", &local_conf], &out);
        let rdd = &v["storage"]["rdds"][0];
        assert_eq!(v["stages"][0]["params"]["record_bytes"], 16, "{level}");
        cached.push(rdd["partitionsInMemory"].as_u64().unwrap());
        let format = v["stages"][0]["valueFormat"].as_str().unwrap().to_string();
        assert!(
            format.contains(if level == "MEMORY_ONLY" {
                "SizeEstimator"
            } else {
                "JavaSerializer"
            }),
            "{level}: {format}"
        );
    }
    assert!(
        cached[0] < cached[1],
        "MEMORY_ONLY {} vs MEMORY_ONLY_SER {}",
        cached[0],
        cached[1]
    );
    assert_eq!(cached[1], 10);

    // 72.4 MiB of unified memory; the unroll's first size check comes at 50 MiB and asks for
    // 1.5x that; the block's 58 MiB fit once on disk.
    let scenario = write_scenario(
        dir.path(),
        r#"
[conf]
"spark.executor.memory" = "1g"
"spark.memory.fraction" = "0.1"
"spark.executor.cores" = "1"
"spark.storage.unrollMemoryThreshold" = "52428800"
[[stages]]
kind = "cache"
rdd = 1
partitions = 1
partition_bytes = "58m"
record_bytes = "4k"
record_type = "bytes"
storage_level = "MEMORY_AND_DISK_SER"
[[stages]]
kind = "scan"
rdd = 1
"#,
    );
    let out = dir.path().join("recache");
    let v = run_json(&scenario, &["--conf", &local_conf], &out);
    assert_eq!(v["stages"][0]["recachedFromDisk"], 1, "{}", v["stages"][0]);
    let rdd = &v["storage"]["rdds"][0];
    assert_eq!(
        (
            rdd["partitionsInMemory"].as_u64(),
            rdd["partitionsOnDisk"].as_u64()
        ),
        (Some(1), Some(1)),
        "{rdd}"
    );
    assert_eq!(v["stages"][1]["memoryHits"], 1);
    assert_eq!(v["stages"][1]["recachedFromDisk"], 0);
}
