//! spillway against real Apache Spark (PySpark, local mode), through `scripts/spark/`.
//!
//! These tests need Python >= 3.11 with PySpark 4.x and Java >= 17. They run the Python named by
//! `SPILLWAY_SPARK_PYTHON` (`.ci/run` sets it to the venv it makes,
//! `scripts/spark/.venv/bin/python`), else that venv's Python when it exists, else `python3`;
//! `scripts/spark/check_env.py` says what is missing, and then each test prints
//! `SKIPPED: <test>: <reason>` and passes — unless `SPILLWAY_SPARK_PYTHON` is set: whoever set it asked
//! for the comparison, so a missing piece fails the test instead. They start real Spark JVMs (about a minute each on a quiet
//! machine), one test at a time.
//!
//! - the caching issue's case (1 GiB, fraction 0.6, 2 cores, 12 partitions of 41,969,980 bytes,
//!   MEMORY_ONLY): Spark's REST API and spillway's report both show 10 cached partitions;
//! - shuffles (`scripts/spark/scenarios/shuffle-8.toml`: a partitionBy and a reduceByKey shuffle
//!   of 4 x 1,000,000 records into 8 partitions, replayed on Spark's RDD API with spillway's
//!   records): records written and read are equal, per map task and per reduce partition too,
//!   the writer and serializer are Spark's, and each side spilled on both or on neither;
//! - the layout: for six settings (three with off-heap sized, two of them enabled, one under the
//!   Serial collector), spillway's `unified + off_heap`, given Spark's `Runtime.maxMemory` as
//!   `--system-memory`, equals the executor's `maxMemory` the REST API reports, to the byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

mod skip_support;
use skip_support::skip;

/// One Spark at a time: the machine is small and the UI port is shared.
static SPARK: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that runs the Spark scripts: `SPILLWAY_SPARK_PYTHON`, else the venv the README's
/// "Comparing with Spark" section makes, else `python3` on the PATH.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SPILLWAY_SPARK_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = root().join("scripts/spark/.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Why Spark cannot run here, if it cannot: what `check_env.py` reports (Python >= 3.11,
/// PySpark 4.x, Java >= 17).
fn skip_reason() -> Option<String> {
    let py = python();
    match Command::new(&py)
        .arg(root().join("scripts/spark/check_env.py"))
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let said = said.trim().lines().collect::<Vec<_>>().join("; ");
            Some(format!(
                "{said} [python: {}; set SPILLWAY_SPARK_PYTHON, see README \"Comparing with Spark\"]",
                py.display()
            ))
        }
        Err(e) => Some(format!(
            "cannot run {} ({e}); set SPILLWAY_SPARK_PYTHON to a Python >= 3.11 with pyspark, \
             see README \"Comparing with Spark\"",
            py.display()
        )),
    }
}

/// Whether Spark can run here; prints `SKIPPED: <reason>` when not, and panics with the reason
/// when `SPILLWAY_SPARK_PYTHON` asked for the comparison.
fn spark_available() -> bool {
    let Some(reason) = skip_reason() else {
        return true;
    };
    if std::env::var_os("SPILLWAY_SPARK_PYTHON").is_some_and(|p| !p.is_empty()) {
        panic!("SPILLWAY_SPARK_PYTHON is set but Spark cannot run: {reason}");
    }
    skip(&reason);
    false
}

fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(root().join("scripts/spark").join(script))
        .args(args)
        .args(["--spillway", env!("CARGO_BIN_EXE_spillway")])
        .current_dir(root())
        .env("SPILLWAY_LOG", "off")
        .output()
        .expect("the Spark Python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} (exit {:?}) did not print JSON ({e}); stderr tail:\n{}",
            out.status.code(),
            tail(&stderr, 40)
        )
    })
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn cache_issue_caches_ten_of_twelve_on_spark_and_spillway() {
    if !spark_available() {
        return;
    }
    let _one = SPARK.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = Path::new("scripts/spark/scenarios/cache-12-memory-only.toml");
    let v = python_json("compare.py", &[scenario.to_str().unwrap(), "--json"]);
    let spark = &v["spark"];
    let sw = &v["spillway"];

    let spark_rdd = &spark["storage"]["rdds"][0];
    let sw_rdd = &sw["storage"]["rdds"][0];
    assert_eq!(spark_rdd["numPartitions"], 12, "{spark_rdd}");
    assert_eq!(spark_rdd["numCachedPartitions"], 10, "Spark: {spark_rdd}");
    assert_eq!(sw_rdd["numCachedPartitions"], 10, "spillway: {sw_rdd}");
    assert_eq!(spark_rdd["diskUsed"], 0);
    assert_eq!(sw_rdd["memoryUsed"], 10 * 41_969_980i64);
    // Spark's sizes are 8-byte aligned estimates of pickled batches: within 8 B a partition.
    let spark_mem = spark_rdd["memoryUsed"].as_i64().unwrap();
    assert!(
        (spark_mem - 10 * 41_969_980).abs() <= 10 * 8,
        "Spark memoryUsed {spark_mem}"
    );
    assert!(
        spark["failures"].as_array().unwrap().is_empty(),
        "{}",
        spark["failures"]
    );
    assert!(
        sw["failures"].as_array().unwrap().is_empty(),
        "{}",
        sw["failures"]
    );

    // Same system memory, same storage memory total.
    let s = spark["jvm"]["runtimeMaxMemory"].as_i64().unwrap();
    assert_eq!(sw["layout"]["system_memory"].as_i64().unwrap(), s);
    let max_memory = spark["executorsAtStart"]["executors"][0]["maxMemory"]
        .as_i64()
        .unwrap();
    let lay = &sw["layout"];
    assert_eq!(
        lay["unified"].as_i64().unwrap() + lay["off_heap"].as_i64().unwrap(),
        max_memory
    );
    println!(
        "Spark: {} of 12 cached, memoryUsed {spark_mem}; spillway: {} cached, memoryUsed {}; \
         maxMemory {max_memory}",
        spark_rdd["numCachedPartitions"], sw_rdd["numCachedPartitions"], sw_rdd["memoryUsed"]
    );
}

#[test]
fn layout_equals_spark_storage_memory_to_the_byte() {
    if !spark_available() {
        return;
    }
    let _one = SPARK.lock().unwrap_or_else(|e| e.into_inner());
    let v = python_json("layouts.py", &["--json"]);
    let rows = v.as_array().expect("a list of settings");
    assert!(rows.len() >= 5, "{v}");
    let mut off_heap_enabled = 0;
    for r in rows {
        let setting = &r["setting"];
        assert!(
            r["leakedProperties"].as_object().unwrap().is_empty(),
            "{setting}: {r}"
        );
        let max_memory = r["maxMemory"].as_i64().unwrap();
        let sw = &r["spillway"];
        assert_eq!(sw["system_memory"], r["runtimeMaxMemory"], "{setting}");
        assert_eq!(
            sw["unified"].as_i64().unwrap() + sw["off_heap"].as_i64().unwrap(),
            max_memory,
            "{setting}: {r}"
        );
        assert_eq!(sw["unified"], r["totalOnHeapStorageMemory"], "{setting}");
        assert_eq!(sw["off_heap"], r["totalOffHeapStorageMemory"], "{setting}");
        if sw["off_heap_enabled"] == true {
            off_heap_enabled += 1;
            assert!(sw["off_heap"].as_i64().unwrap() > 0);
        }
        println!(
            "{setting}: Runtime.maxMemory {} -> Spark maxMemory {max_memory} = spillway {} + {}",
            r["runtimeMaxMemory"], sw["unified"], sw["off_heap"]
        );
    }
    assert!(off_heap_enabled >= 2, "{v}");
}

#[test]
fn shuffles_write_and_read_the_same_records_on_spark_and_spillway() {
    if !spark_available() {
        return;
    }
    let _one = SPARK.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = Path::new("scripts/spark/scenarios/shuffle-8.toml");
    let v = python_json("compare.py", &[scenario.to_str().unwrap(), "--json"]);
    let spark = &v["spark"];
    let sw = &v["spillway"];
    assert!(
        spark["failures"].as_array().unwrap().is_empty(),
        "{}",
        spark["failures"]
    );
    assert!(
        sw["failures"].as_array().unwrap().is_empty(),
        "{}",
        sw["failures"]
    );

    let shuffles = spark["shuffles"].as_array().expect("Spark's shuffles");
    assert_eq!(shuffles.len(), 2, "{}", spark["shuffles"]);
    for (sh, (operation, writer)) in shuffles.iter().zip([
        ("partitionBy", "BypassMergeSortShuffleWriter"),
        ("reduceByKey", "SortShuffleWriter"),
    ]) {
        assert_eq!(sh["operation"], operation);
        assert_eq!(sh["writer"], writer, "{sh}");
        assert_eq!(
            sh["serializer"],
            "org.apache.spark.serializer.KryoSerializer"
        );
        assert!(
            sh["map"]["shuffleWriteRecords"].as_u64().unwrap() > 0,
            "{sh}"
        );
        assert_eq!(
            sh["map"]["shuffleWriteRecords"], sh["reduce"]["shuffleReadRecords"],
            "{sh}"
        );
    }
    // partitionBy writes every record; reduceByKey one per distinct key of each map task.
    assert_eq!(shuffles[0]["map"]["shuffleWriteRecords"], 4_000_000);
    let combined = shuffles[1]["map"]["shuffleWriteRecords"].as_u64().unwrap();
    assert!(combined < 4_000_000, "{combined}");

    // The comparison's checks: records written and read equal (in total, per map task and
    // per reduce partition), the same writer and serializer, spilled-or-not agreeing per side.
    let checks = v["checks"].as_array().expect("compare.py's checks");
    for quantity in [
        "writer",
        "serializer",
        "map: shuffleWriteRecords",
        "map: records written per map task",
        "map: spilled",
        "reduce: shuffleReadRecords",
        "reduce: records read per reduce partition",
        "reduce: spilled",
    ] {
        let n = checks.iter().filter(|c| c["quantity"] == quantity).count();
        assert_eq!(n, 2, "a check of {quantity} per shuffle: {}", v["checks"]);
    }
    let failed: Vec<_> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "checks that do not hold: {failed:?}");
    for sh in shuffles {
        println!(
            "shuffle {} {}: Spark wrote {} records ({} B), read {}; spilled map {} reduce {}",
            sh["shuffle"],
            sh["operation"],
            sh["map"]["shuffleWriteRecords"],
            sh["map"]["shuffleWriteBytes"],
            sh["reduce"]["shuffleReadRecords"],
            sh["map"]["spilled"],
            sh["reduce"]["spilled"]
        );
    }
}
