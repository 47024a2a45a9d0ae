//! End to end through the real binary: SIGINT, SIGTERM and SIGHUP stop a run — mid-spill,
//! mid-eviction, with Python workers running, under `--cgroup` — with exit 128 + n, an
//! incomplete report.json naming the signal, and nothing left behind: no `spillway-*` entry in
//! TMPDIR (each case gets a fresh private one), no worker process, no cgroup. A second signal
//! exits at once through its own path, and still leaves nothing: spillway's hidden test hook
//! (`SPILLWAY_TEST_HOLD_CLEANUP_MS`, `spillway::interrupt::HOLD_ENV`) holds the first signal's
//! stop, so the run is provably still busy when the second one arrives. `spillway oom` and
//! `spillway bench` stop the same way on a first signal. The cases that need `python3` or a writable cgroup v1
//! memory controller skip without one (`skip_support`: `SKIPPED: <test>: <reason>`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod skip_support;
use skip_support::skip;

/// Long enough for a slow, loaded machine; the waits end as soon as their condition holds.
const PATIENCE: Duration = Duration::from_secs(120);

/// spillway's hidden test hook: the first signal's stop is held this long, so a second signal
/// sent meanwhile finds the run still busy.
const HOLD_ENV: &str = spillway::interrupt::HOLD_ENV;
/// Far longer than [`PATIENCE`]: a case that exits at all after its second signal exited by
/// the second-signal path, since the first one's stop would not even have begun.
const HOLD_MS: &str = "600000";

struct Case {
    _dir: tempfile::TempDir,
    tmp: PathBuf,
    out: PathBuf,
    stderr: PathBuf,
    child: Child,
}

impl Case {
    /// Starts `spillway run SCENARIO --out OUT EXTRA...` with TMPDIR a fresh empty directory.
    fn start(scenario_toml: &str, extra: &[&str]) -> Case {
        Case::start_run(scenario_toml, extra, &[])
    }

    /// [`Case::start`] with extra environment variables.
    fn start_run(scenario_toml: &str, extra: &[&str], env: &[(&str, &str)]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("scenario.toml");
        std::fs::write(&scenario, scenario_toml).unwrap();
        let out = dir.path().join("out");
        let mut args: Vec<OsString> = vec!["run".into(), scenario.into(), "--out".into()];
        args.push(out.into());
        args.extend(extra.iter().map(OsString::from));
        Case::spawn(dir, &args, env)
    }

    /// Starts `spillway ARGS...` in `dir` (its report directory `out`, its TMPDIR `tmp`, a
    /// fresh empty directory).
    fn spawn(dir: tempfile::TempDir, args: &[OsString], env: &[(&str, &str)]) -> Case {
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let out = dir.path().join("out");
        let stderr = dir.path().join("stderr.txt");
        let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(args)
            .env("TMPDIR", &tmp)
            .env("SPILLWAY_LOG", "off")
            .env_remove("SPARK_LOCAL_DIRS")
            .env_remove("SPARK_EXECUTOR_DIRS")
            .env_remove(HOLD_ENV)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.txt")).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spillway starts");
        Case {
            _dir: dir,
            tmp,
            out,
            stderr,
            child,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout_text(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stdout.txt")).unwrap_or_default()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `cond` until it holds; panics (with spillway's stderr) if spillway exits first.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&Case) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond(self) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "spillway ended ({st}) before {what}:\n{}",
                    self.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {PATIENCE:?}:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// Waits for spillway to exit (bounded).
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "spillway did not exit within {PATIENCE:?} of the signal:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn report(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.out.join("report.json")).unwrap_or_else(|e| {
            panic!("report.json after the signal: {e}\n{}", self.stderr_text())
        });
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Exit code, nothing left in TMPDIR, no process still running from it.
    fn assert_clean_exit(&mut self, code: i32) {
        let st = self.wait();
        assert_eq!(st.code(), Some(code), "{st}:\n{}", self.stderr_text());
        let left = spillway_entries(&self.tmp);
        assert!(
            left.is_empty(),
            "left in TMPDIR: {left:?}\n{}",
            self.stderr_text()
        );
        let procs = processes_mentioning(&self.tmp);
        assert!(procs.is_empty(), "processes left running: {procs:?}");
    }

    /// The second signal's path was taken: exit 128 + n, the line only that path prints, and
    /// nothing left behind.
    fn assert_second_signal_exit(&mut self, signal: &str, code: i32) {
        self.assert_clean_exit(code);
        let err = self.stderr_text();
        assert!(
            err.contains(&format!("{signal} received again: cleaning up and exiting")),
            "{err}"
        );
    }

    /// The second signal's path alone ended a process without a child spillway: its clean-up
    /// ran to its end (its last line), and neither the first path's last line nor its report
    /// is there.
    fn assert_second_signal_path_alone(&self, signal: &str) {
        let err = self.stderr_text();
        assert!(
            err.contains(&format!("second {signal}: registered files, directories")),
            "the second-signal clean-up ran to its end:\n{err}"
        );
        assert!(
            !err.contains("stopped and cleaned up"),
            "the first signal's path ended the process instead:\n{err}"
        );
        assert!(
            !self.out.join("report.json").exists(),
            "no report after a second signal:\n{err}"
        );
    }
}

/// Every process of `pids` is gone (or a zombie awaiting its new parent).
fn assert_all_gone(pids: &[u32]) {
    for pid in pids {
        let alive = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        assert!(!alive, "process {pid} outlived spillway");
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        // A failed assertion must not leave spillway running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `spillway-*` entries anywhere under `dir`.
fn spillway_entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with("spillway") {
                found.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

/// Live processes whose command line mentions `needle` (a worker's script lives under the
/// private directory inside the case's TMPDIR). Zombies have an empty command line.
fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push((pid, cmd));
        }
    }
    found
}

/// Live (non-zombie) children of `pid`.
fn live_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && state != "Z" {
            found.push(child);
        }
    }
    found
}

fn has_file_named(dir: &Path, prefix: &str) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                return true;
            }
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    false
}

fn assert_incomplete(report: &serde_json::Value, signal: &str) {
    assert_eq!(report["complete"], false, "{}", report["stages"]);
    assert_eq!(report["interrupted"], signal);
    let killed: u64 = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["numKilledTasks"].as_u64().unwrap())
        .sum();
    assert!(killed > 0, "some task was killed: {}", report["stages"]);
}

/// A sort of 4 × 170 MB in a 512 MiB executor: every task spills sorted runs.
const SORT: &str = r#"
name = "signal-sort"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "2"
[[stages]]
kind = "sort"
tasks = 4
records_per_task = 3000000
record_bytes = 56
"#;

fn interrupt_mid_spill(signal: &str, code: i32) {
    let mut case = Case::start(SORT, &[]);
    case.wait_for("a spill file", |c| has_file_named(&c.tmp, "temp_local"));
    case.signal(signal);
    case.assert_clean_exit(code);
    let report = case.report();
    assert_incomplete(&report, &format!("SIG{signal}"));
    assert!(
        !report["stages_finished"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(0)),
        "the sort did not finish"
    );
}

#[test]
fn sigint_mid_spill_stops_cleanly() {
    interrupt_mid_spill("INT", 130);
}

#[test]
fn sigterm_mid_spill_stops_cleanly() {
    interrupt_mid_spill("TERM", 143);
}

#[test]
fn sighup_mid_spill_stops_cleanly() {
    interrupt_mid_spill("HUP", 129);
}

#[test]
fn sigterm_mid_eviction_stops_cleanly() {
    // RDD 1 fits in storage; RDD 2 (MEMORY_ONLY, long) evicts its blocks to disk as it goes,
    // so an `rdd_1_*` file appears only when an eviction has written it.
    let scenario = r#"
name = "signal-evict"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "2"
[[stages]]
kind = "cache"
rdd = 1
partitions = 4
partition_bytes = "16m"
record_bytes = "64k"
storage_level = "MEMORY_AND_DISK"
[[stages]]
kind = "cache"
rdd = 2
partitions = 400
partition_bytes = "16m"
record_bytes = "64k"
storage_level = "MEMORY_ONLY"
"#;
    let mut case = Case::start(scenario, &[]);
    case.wait_for("a block evicted to disk", |c| {
        has_file_named(&c.tmp, "rdd_1_")
    });
    case.signal("TERM");
    case.assert_clean_exit(143);
    let report = case.report();
    assert_incomplete(&report, "SIGTERM");
    assert_eq!(report["stages_finished"], serde_json::json!([0]));
}

#[test]
fn a_second_sigterm_mid_spill_exits_at_once_and_leaves_nothing() {
    let mut case = Case::start_run(SORT, &[], &[(HOLD_ENV, HOLD_MS)]);
    case.wait_for("a spill file", |c| has_file_named(&c.tmp, "temp_local"));
    case.signal("TERM");
    case.wait_for("the first signal taken", |c| {
        c.stderr_text().contains("SIGTERM received")
    });
    // Held: the sort goes on spilling; nothing was cleaned up yet.
    assert!(
        has_file_named(&case.tmp, "temp_local"),
        "spill files remain"
    );
    case.signal("TERM");
    case.assert_second_signal_exit("SIGTERM", 143);
    case.assert_second_signal_path_alone("SIGTERM");
}

/// `Err(reason)` when this host has no `python3` with the `resource` module, which the Python
/// worker cases need.
fn python3_usable() -> Result<(), String> {
    let status = Command::new("python3")
        .args(["-c", "import resource"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("python3 cannot import resource ({s})")),
        Err(e) => Err(format!("cannot start python3: {e}")),
    }
}

#[test]
fn sigint_with_python_workers_running_ends_them() {
    if let Err(r) = python3_usable() {
        return skip(&r);
    }
    let scenario = r#"
name = "signal-python"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "2"
[[stages]]
kind = "python"
tasks = 8
bytes_per_task = "8m"
records_per_task = 3000000
distinct_keys = 100000
worker = "python3"
"#;
    let mut case = Case::start(scenario, &[]);
    let mut workers = Vec::new();
    case.wait_for("two python workers", |c| {
        workers = processes_mentioning(&c.tmp);
        workers.len() >= 2
    });
    let spillway_pid = case.pid();
    assert!(
        !live_children(spillway_pid).is_empty(),
        "the workers are spillway's children"
    );
    case.signal("INT");
    case.assert_clean_exit(130);
    for (pid, cmd) in &workers {
        let alive = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        assert!(!alive, "worker {pid} ({cmd}) outlived the run");
    }
    assert_incomplete(&case.report(), "SIGINT");
}

#[test]
fn a_second_sigint_exits_at_once_and_leaves_nothing() {
    if let Err(r) = python3_usable() {
        return skip(&r);
    }
    // Workers and spill files both exist when the signals come.
    let scenario = r#"
name = "signal-twice"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "2"
[[stages]]
kind = "python"
tasks = 4
bytes_per_task = "8m"
records_per_task = 3000000
distinct_keys = 100000
worker = "python3"
"#;
    let mut case = Case::start_run(scenario, &[], &[(HOLD_ENV, HOLD_MS)]);
    case.wait_for("two python workers", |c| {
        processes_mentioning(&c.tmp).len() >= 2
    });
    case.signal("INT");
    case.wait_for("the first signal taken", |c| {
        c.stderr_text().contains("SIGINT received")
    });
    // The hold keeps the run busy: its workers and private directory are all still there.
    let workers = processes_mentioning(&case.tmp);
    assert!(workers.len() >= 2, "workers still running: {workers:?}");
    assert!(
        !spillway_entries(&case.tmp).is_empty(),
        "the private directory is still there"
    );
    case.signal("INT");
    case.assert_second_signal_exit("SIGINT", 130);
    case.assert_second_signal_path_alone("SIGINT");
    for (pid, cmd) in &workers {
        let alive = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        assert!(!alive, "worker {pid} ({cmd}) outlived the run");
    }
}

/// `Err(reason)` unless this host lets spillway create a child cgroup v1 memory controller
/// below its own.
fn cgroup_v1_memory_writable() -> Result<(), String> {
    let own = spillway::pressure::OwnCgroup::discover().ok_or("no memory cgroup is mounted")?;
    if own.version != spillway::pressure::CgroupVersion::V1 {
        return Err("these cases walk the cgroup v1 memory tree".into());
    }
    skip_support::probe_child_cgroup(&own.memory_dir, "memory.limit_in_bytes")
}

/// `spillway-<pid>-*` cgroups left below the memory controller's root.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("spillway-{pid}-");
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup/memory")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    found
}

#[test]
fn sigterm_to_a_cgroup_supervisor_is_forwarded_and_the_cgroup_removed() {
    if let Err(r) = cgroup_v1_memory_writable() {
        return skip(&r);
    }
    let mut case = Case::start(SORT, &["--cgroup"]);
    let supervisor = case.pid();
    case.wait_for("a spill file", |c| has_file_named(&c.tmp, "temp_local"));
    assert_eq!(cgroups_of(supervisor).len(), 1, "the child cgroup exists");
    case.signal("TERM");
    case.assert_clean_exit(143);
    assert!(
        cgroups_of(supervisor).is_empty(),
        "cgroup left: {:?}",
        cgroups_of(supervisor)
    );
    let report = case.report();
    assert_incomplete(&report, "SIGTERM");
    assert!(
        report["cgroup"].is_object(),
        "the supervisor added its cgroup"
    );
}

#[test]
fn a_second_sigint_to_a_cgroup_supervisor_still_leaves_no_cgroup() {
    if let Err(r) = cgroup_v1_memory_writable() {
        return skip(&r);
    }
    // The hold applies to the supervisor only: its child (a spillway started by spillway)
    // acts on the signal the second-signal path forwards to it.
    let mut case = Case::start_run(SORT, &["--cgroup"], &[(HOLD_ENV, HOLD_MS)]);
    let supervisor = case.pid();
    case.wait_for("a spill file", |c| has_file_named(&c.tmp, "temp_local"));
    case.signal("INT");
    case.wait_for("the first signal taken", |c| {
        c.stderr_text().contains("SIGINT received")
    });
    assert_eq!(
        cgroups_of(supervisor).len(),
        1,
        "held: the child cgroup is still there"
    );
    let children = live_children(supervisor);
    assert!(!children.is_empty(), "held: the executor still runs");
    case.signal("INT");
    case.assert_second_signal_exit("SIGINT", 130);
    // The held supervisor never forwarded the first SIGINT: the child's own "received" line
    // shows the second-signal path forwarded it. The supervisor then exits either at the end
    // of that path or, the child ended, through its main thread with the child's code: both
    // leave no cgroup.
    let err = case.stderr_text();
    assert_eq!(
        err.matches("SIGINT received: stopping").count(),
        2,
        "the supervisor's and its child's first SIGINT:\n{err}"
    );
    assert!(
        cgroups_of(supervisor).is_empty(),
        "cgroup left: {:?}",
        cgroups_of(supervisor)
    );
    assert_all_gone(&children);
}

/// Everything under `dir` (the fresh TMPDIR or `--dir` of a case must end empty).
fn entries_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// tmpfs or other mounts at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|m| m.starts_with(&dir))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn sigint_to_an_oom_case_stops_it_cleanly() {
    // spill-disk-full sorts 1.5 × the unified pool into local directories that fill after 8
    // MiB (a tmpfs mounted in TMPDIR as root, else a failpoint). A 1g heap with a 0.9 memory
    // fraction (a ~650 MiB pool) makes the sort's in-memory phase, where the signal lands, last
    // about a second.
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<OsString> = [
        "oom",
        "spill-disk-full",
        "--conf",
        "spark.executor.memory=1g",
        "--conf",
        "spark.memory.fraction=0.9",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let mut case = Case::spawn(dir, &args, &[]);
    case.wait_for("the executor's local directory", |c| {
        has_file_named(&c.tmp, "spillway-blockmgr-")
    });
    let children = live_children(case.pid());
    case.signal("INT");
    case.assert_clean_exit(130);
    let err = case.stderr_text();
    assert!(
        err.contains("interrupted by SIGINT: stopped and cleaned up"),
        "{err}"
    );
    // Stopped mid-sort: the case's task was killed by the signal, not failed by the full disk.
    let out = case.stdout_text();
    assert!(
        out.contains("task killed: interrupted by SIGINT"),
        "{out}\n{err}"
    );
    let left = entries_under(&case.tmp);
    assert!(left.is_empty(), "left in TMPDIR: {left:?}\n{err}");
    let mounts = mounts_under(&case.tmp);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    assert_all_gone(&children);
    assert!(
        live_children(case.pid()).is_empty(),
        "no child of spillway is left"
    );
}

#[test]
fn sigterm_to_bench_stops_it_cleanly() {
    // 256 MiB per measurement: each step writes, fsyncs and reads a few hundred MiB, so the
    // bench runs for seconds; a signal stops it between two steps.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let args: Vec<OsString> = vec![
        "bench".into(),
        "--size".into(),
        "256m".into(),
        "--repeats".into(),
        "2".into(),
        "--dir".into(),
        disk.clone().into(),
    ];
    let mut case = Case::spawn(dir, &args, &[]);
    case.wait_for("the bench's work directory", |_| {
        has_file_named(&disk, "spillway-bench-")
    });
    let children = live_children(case.pid());
    case.signal("TERM");
    case.assert_clean_exit(143);
    let err = case.stderr_text();
    // Stopped between two steps (the bench's own error), then the process's last line.
    assert!(err.contains("error: interrupted by SIGTERM"), "{err}");
    assert!(
        err.contains("interrupted by SIGTERM: stopped and cleaned up"),
        "{err}"
    );
    for d in [&disk, &case.tmp] {
        let left = entries_under(d);
        assert!(left.is_empty(), "left in {}: {left:?}\n{err}", d.display());
    }
    assert_all_gone(&children);
}
