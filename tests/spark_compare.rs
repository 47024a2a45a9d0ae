//! spillway against real Apache Spark (PySpark, local mode), through `scripts/spark/`.
//!
//! These tests need `python3` with `pyspark` (`pip install -r scripts/spark/requirements.txt`)
//! and a `java` on the PATH; without them each test prints `SKIPPED: <test>: <reason>` and passes, so CI
//! does not have to install Spark. They start real Spark JVMs (about a minute each on a quiet
//! machine), one test at a time.
//!
//! - the caching issue's case (1 GiB, fraction 0.6, 2 cores, 12 partitions of 41,969,980 bytes,
//!   MEMORY_ONLY): Spark's REST API and spillway's report both show 10 cached partitions;
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

/// Why Spark cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    match Command::new("java").arg("-version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "`java -version` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("no java on the PATH ({e})")),
    }
    match Command::new("python3")
        .args(["-c", "import pyspark"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(_) => {
            Some("pyspark is not installed (pip install -r scripts/spark/requirements.txt)".into())
        }
        Err(e) => Some(format!("no python3 on the PATH ({e})")),
    }
}

fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(root().join("scripts/spark").join(script))
        .args(args)
        .args(["--spillway", env!("CARGO_BIN_EXE_spillway")])
        .current_dir(root())
        .env("SPILLWAY_LOG", "off")
        .output()
        .expect("python3 runs");
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
    if let Some(reason) = skip_reason() {
        return skip(&reason);
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
    if let Some(reason) = skip_reason() {
        return skip(&reason);
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
