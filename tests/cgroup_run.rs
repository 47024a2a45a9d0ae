//! `spillway run --cgroup` through the real binary (docs/reliability.md test plan items 2, 18, 19,
//! 22): a run that fits, a kernel OOM kill, a SIGKILLed supervisor, and a clean-up audit after
//! each. They need a writable memory cgroup (root on v1 or this hybrid host, a delegated
//! `memory` controller on v2) and `vm.panic_on_oom = 0`; where that is missing they print
//! `SKIPPED: <test>: <reason>` (`skip_support`) and return.
//!
//! Real memory stays under 2 GiB: the largest child is limited to 900 MiB and one runs at a
//! time (the tests take a lock).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spillway::pressure::{CgroupVersion, OwnCgroup, mem_available_bytes, panic_on_oom};

mod skip_support;
use skip_support::skip;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The own cgroup if this process may create and limit child memory cgroups, else why not.
fn writable_cgroup(limit_bytes: u64) -> Result<OwnCgroup, String> {
    if let Err(e) = panic_on_oom() {
        return Err(format!("{e}"));
    }
    let own = OwnCgroup::discover().ok_or("no memory cgroup is mounted")?;
    if own.version == CgroupVersion::V2 {
        let has_memory = |f: &str| {
            std::fs::read_to_string(own.memory_dir.join(f))
                .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
        };
        if !has_memory("cgroup.controllers") {
            return Err(format!(
                "the memory controller is not delegated to {}",
                own.memory_dir.display()
            ));
        }
    }
    skip_support::probe_child_cgroup(
        &own.memory_dir,
        match own.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        },
    )?;
    let avail = mem_available_bytes().unwrap_or(0);
    if avail < 2 * limit_bytes {
        return Err(format!(
            "MemAvailable {avail} bytes is below twice the test limit {limit_bytes}"
        ));
    }
    Ok(own)
}

fn spillway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .env("SPILLWAY_LOG", "off")
        .output()
        .expect("spillway runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `spillway-<pid>-*` directories below the own cgroup, in both trees.
fn cgroups_of(own: &OwnCgroup, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("spillway-{pid}-");
    std::iter::once(&own.memory_dir)
        .chain(own.unified_dir.as_ref())
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn alive(pid: u64) -> bool {
    // A zombie still has /proc/<pid>; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Item 19: nothing of a finished supervisor is left: no cgroup, no executor process.
fn audit(own: &OwnCgroup, supervisor_pid: u32, child_pid: Option<u64>) {
    assert_eq!(
        cgroups_of(own, supervisor_pid),
        Vec::<PathBuf>::new(),
        "no spillway cgroup of supervisor {supervisor_pid} remains"
    );
    if let Some(pid) = child_pid {
        assert!(!alive(pid), "executor child {pid} is gone");
    }
}

const FIT: &str = r#"
name = "cgroup-fit"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "2"
[[stages]]
kind = "cache"
rdd = 1
partitions = 4
partition_bytes = "16m"
storage_level = "MEMORY_ONLY"
[[stages]]
kind = "scan"
rdd = 1
"#;

#[test]
fn a_run_that_fits_reports_its_cgroup() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 512m heap + 384m overhead = 896 MiB container.
    let own = match writable_cgroup(896 << 20) {
        Ok(o) => o,
        Err(reason) => return skip(&reason),
    };
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "fit.toml", FIT);
    let out = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["run", &scenario, "--cgroup", "--json", "--out"])
        .arg(&out)
        .env("SPILLWAY_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let supervisor = child.id();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(printed, report, "--json prints the report written");

    let cg = &report["cgroup"];
    let limit = cg["limit_bytes"].as_u64().unwrap();
    let peak = cg["peak_usage_bytes"].as_u64().unwrap();
    let container = report["layout"]["container"].as_u64().unwrap();
    assert_eq!(limit, container, "the limit is the layout's container size");
    assert_eq!(cg["limit_source"], "container");
    assert!(
        peak > 300 << 20,
        "the executor's reserved 300 MiB are charged: {peak}"
    );
    assert!(peak <= limit, "peak {peak} <= limit {limit}");
    assert_eq!(cg["oom_kill"], 0);
    assert_eq!(cg["outcome"]["kind"], "exited");
    assert!(report["verification"]["ok"].as_bool().unwrap());
    let path = cg["path"].as_str().unwrap();
    assert!(
        path.starts_with(own.memory_dir.to_str().unwrap())
            && path.contains(&format!("/spillway-{supervisor}-")),
        "{path}"
    );

    // Item 4 of the brief: the child's own sampler read the new cgroup, not the supervisor's.
    let memory_cgroup = report["memory"]["cgroup"].as_str().unwrap();
    assert!(memory_cgroup.ends_with(path), "{memory_cgroup} vs {path}");
    let sampled = report["memory"]["peak_cgroup_usage_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        sampled > 300 << 20 && sampled <= limit,
        "timeline cgroup_usage peak {sampled} is the child cgroup's"
    );
    if let Some(psi) = cg["pressure_path"].as_str() {
        assert!(psi.contains(&format!("spillway-{supervisor}-")), "{psi}");
    }
    let csv = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    let col = csv
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "cgroup_usage")
        .unwrap();
    let max_csv = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(col)?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(max_csv <= limit && max_csv > 300 << 20, "{max_csv}");

    audit(&own, supervisor, cg["child_pid"].as_u64());
}

const OOM: &str = r#"
name = "cgroup-oom"
description = "1 GiB heap: 300 MiB reserved plus 320 MiB cached cannot fit a 400 MiB container."
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"
[[stages]]
kind = "cache"
rdd = 1
partitions = 8
partition_bytes = "40m"
storage_level = "MEMORY_ONLY"
"#;

#[test]
fn an_executor_over_its_container_is_oom_killed_and_reported() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let own = match writable_cgroup(400 << 20) {
        Ok(o) => o,
        Err(reason) => return skip(&reason),
    };
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "oom.toml", OOM);
    let out = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["run", &scenario, "--cgroup=400m", "--out"])
        .arg(&out)
        .env("SPILLWAY_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let supervisor = child.id();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The supervisor survived and exited on purpose (3), not by a signal.
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "container killed by the kernel OOM killer: memory cgroup limit 419430400 bytes"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("exit 137"), "{stderr}");
    assert!(stderr.contains("spark.executor.memoryOverhead"), "{stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let cg = &report["cgroup"];
    assert_eq!(cg["outcome"]["kind"], "oom_killed");
    assert_eq!(cg["exit_status"], 137);
    assert_eq!(
        cg["oom_kill"], 1,
        "oom_kill rose by one in the fresh cgroup"
    );
    assert_eq!(cg["limit_bytes"], 400u64 << 20);
    let peak = cg["peak_usage_bytes"].as_u64().unwrap();
    assert!(peak <= 400 << 20 && peak > 300 << 20, "peak {peak}");
    let failures = report["failures"].as_array().unwrap();
    let f = failures
        .iter()
        .find(|f| f["error"] == "CONTAINER_OOM_KILLED")
        .expect("a CONTAINER_OOM_KILLED failure");
    assert_eq!(f["limitBytes"], 400u64 << 20);
    assert_eq!(f["peakUsageBytes"], peak);
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains(&format!("peak {peak} bytes")),
        "{f}"
    );
    assert_eq!(report["layout"]["system_memory"], 1u64 << 30);

    audit(&own, supervisor, cg["child_pid"].as_u64());
}

const LONG: &str = r#"
name = "cgroup-long"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "1"
[[stages]]
kind = "cache"
rdd = 1
partitions = 8
partition_bytes = "16m"
storage_level = "MEMORY_ONLY"
[[stages]]
kind = "scan"
rdd = 1
[[stages]]
kind = "scan"
rdd = 1
[[stages]]
kind = "scan"
rdd = 1
"#;

#[test]
fn a_killed_supervisor_takes_its_executor_along_and_the_next_run_sweeps_its_cgroup() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let own = match writable_cgroup(896 << 20) {
        Ok(o) => o,
        Err(reason) => return skip(&reason),
    };
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "long.toml", LONG);
    let mut sup = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["run", &scenario, "--cgroup", "--out"])
        .arg(dir.path().join("out"))
        .env("SPILLWAY_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sup_pid = sup.id();
    // Wait for the executor to be inside its cgroup.
    let deadline = Instant::now() + Duration::from_secs(60);
    let executor = loop {
        let found = cgroups_of(&own, sup_pid)
            .into_iter()
            .filter(|p| p.starts_with(&own.memory_dir))
            .find_map(|p| {
                std::fs::read_to_string(p.join("cgroup.procs"))
                    .ok()?
                    .lines()
                    .next()?
                    .parse::<u64>()
                    .ok()
            });
        if let Some(pid) = found {
            break pid;
        }
        if let Ok(Some(st)) = sup.try_wait() {
            panic!("the supervisor ended ({st}) before its executor was seen");
        }
        assert!(Instant::now() < deadline, "no executor appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    sup.kill().unwrap(); // SIGKILL: no Drop runs in the supervisor
    sup.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(executor) {
        assert!(
            Instant::now() < deadline,
            "executor {executor} outlived its supervisor (PR_SET_PDEATHSIG)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stale = cgroups_of(&own, sup_pid);
    assert!(
        !stale.is_empty(),
        "a SIGKILLed supervisor cannot remove its cgroup; the sweep must"
    );

    // The next run's start-up sweep removes the dead owner's cgroups.
    let scenario = write(dir.path(), "fit.toml", FIT);
    let o = spillway(&[
        "run",
        &scenario,
        "--cgroup",
        "--out",
        dir.path().join("out2").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    audit(&own, sup_pid, Some(executor));
}

#[test]
fn bad_cgroup_sizes_are_bad_input_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "fit.toml", FIT);
    for size in ["--cgroup=lots", "--cgroup=0", "--cgroup=-5m"] {
        let o = spillway(&[
            "run",
            &scenario,
            size,
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{size}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!dir.path().join("report.json").exists());
    }
}
