//! End-to-end: every case of `spillway oom` reproduces its failure (exit 0) and explains it.

use std::process::Command;

mod skip_support;
use skip_support::skip;

fn spillway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .env("SPILLWAY_LOG", "off")
        .output()
        .expect("spillway runs")
}

#[test]
fn list_names_every_case_with_a_description() {
    let out = spillway(&["oom", "--list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for case in [
        "system-memory",
        "execution",
        "user-memory",
        "cache-unroll",
        "off-heap",
        "container",
        "pyspark",
        "shuffle-fetch",
        "group-skew",
        "spill-disk-full",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(case))
            .unwrap_or_else(|| panic!("{case} missing from\n{text}"));
        assert!(line.len() > case.len() + 10, "{line}");
    }
}

#[test]
fn each_case_reproduces_and_explains_itself() {
    for (case, error, number) in [
        ("system-memory", "INVALID_EXECUTOR_MEMORY", "471859200"),
        ("execution", "UNABLE_TO_ACQUIRE_MEMORY", "received"),
        ("user-memory", "java.lang.OutOfMemoryError", "user_region"),
        ("cache-unroll", "Not enough space to cache", "unified"),
        ("off-heap", "UNABLE_TO_ACQUIRE_MEMORY", "pool"),
        ("container", "CONTAINER_KILLED_PHYSICAL_MEMORY", "overhead"),
        ("pyspark", "PythonException", "rlimit_as_per_worker"),
        (
            "shuffle-fetch",
            "CONTAINER_KILLED_PHYSICAL_MEMORY",
            "peak_bytes_in_flight",
        ),
        (
            "group-skew",
            "java.lang.OutOfMemoryError",
            "hot_group_value_bytes",
        ),
        // As root a real 8 MiB tmpfs (mounted and unmounted by the case); else a failpoint.
        ("spill-disk-full", "SPILL_OUT_OF_MEMORY", "local_dir_bytes"),
    ] {
        let out = spillway(&["oom", case, "--json"]);
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["reproduced"], true, "{case}: {v}");
        assert_eq!(v["error"], error, "{case}");
        // The message carries Spark's own words for the failure.
        let words = match case {
            "container" | "shuffle-fetch" => {
                "Container killed by YARN for exceeding physical memory limits"
            }
            "group-skew" => "Java heap space",
            "pyspark" => "MemoryError",
            _ => error.split(' ').next().unwrap(),
        };
        assert!(
            v["message"].as_str().unwrap().contains(words),
            "{case}: {v}"
        );
        assert!(v.to_string().contains(number), "{case}: {v}");
        assert!(!v["advice"].as_str().unwrap().is_empty());
    }
}

#[test]
fn a_case_that_does_not_fail_exits_non_zero() {
    // Overriding the case's 400 MiB heap with 1 GiB leaves nothing to reproduce.
    let out = spillway(&["oom", "system-memory", "--conf", "spark.executor.memory=1g"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not fail as expected"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT reproduced"));
    let out = spillway(&["oom", "no-such-case"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_oom_arguments_exit_2_and_name_what_is_wrong() {
    for (args, words) in [
        (
            &["oom", "no-such-case"][..],
            "unknown OOM case 'no-such-case'",
        ),
        (
            &["oom", "execution", "--conf", "spark.executor.memory=lots"][..],
            "spark.executor.memory",
        ),
        (
            &[
                "oom",
                "system-memory",
                "--conf",
                "spark.executor.memory=lots",
            ][..],
            "'lots'",
        ),
        (
            &["oom", "execution", "--conf", "no-equals"][..],
            "no-equals",
        ),
        (
            &["oom", "execution", "--cgroup"][..],
            "--cgroup applies only to the container and shuffle-fetch cases",
        ),
        // Validated by the `run --cgroup` child before any cgroup exists: no cgroup needed.
        (
            &[
                "oom",
                "container",
                "--cgroup",
                "--conf",
                "spark.executor.memoryOverhead=lots",
            ][..],
            "spark.executor.memoryOverhead",
        ),
    ] {
        let out = spillway(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: no outcome printed");
    }
}

#[test]
fn a_machine_that_cannot_run_the_case_exits_1_not_2() {
    // No temporary directory: the scenario case cannot write its report anywhere.
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["oom", "container"])
        .env("SPILLWAY_LOG", "off")
        .env("TMPDIR", "/nonexistent/spillway-oom-test")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot create a temporary directory"), "{err}");

    // The binary `container --cgroup` runs is missing.
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["oom", "container", "--cgroup"])
        .env("SPILLWAY_LOG", "off")
        .env("SPILLWAY_BIN", "/nonexistent/spillway")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start /nonexistent/spillway"), "{err}");
}

/// Whether this process may create a child memory cgroup (root on a v1 or delegated v2 host).
fn writable_memory_cgroup() -> Result<(), String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let path = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .ok_or("no cgroup v1 memory controller for this process")?;
    let dir = std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    let probe = dir.join(format!("spillway-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
    std::fs::remove_dir(&probe).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn container_under_a_cgroup_is_the_kernels_oom_kill() {
    for case in ["container", "shuffle-fetch"] {
        kernel_oom_kill(case);
    }
}

fn kernel_oom_kill(case: &str) {
    if let Err(why) = writable_memory_cgroup() {
        return skip(&format!(
            "{case} --cgroup needs a writable memory cgroup: {why}"
        ));
    }
    let out = spillway(&["oom", case, "--cgroup", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "CONTAINER_OOM_KILLED");
    assert!(v["message"].as_str().unwrap().contains("exit 137"), "{v}");
    let oom_kills = v["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n[0] == "oom_kill_count")
        .map(|n| n[1].as_u64().unwrap());
    assert!(oom_kills >= Some(1), "{v}");
}
