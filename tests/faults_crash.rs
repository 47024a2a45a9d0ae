//! Crashes (docs/reliability.md test plan 18): an executor (`spillway run` in a child) SIGKILLed at
//! random points while caching to disk, spilling and running workers. What it leaves behind is
//! never read as complete (every file without a valid footer is refused by the reader), its
//! workers exit on their own when their stdin closes, and the next run's start-up sweep
//! removes its private directories — and only those of dead owners.
//!
//! The kill points come from a seed printed at the start (`SPILLWAY_CRASH_SEED` repeats one).

mod faults_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faults_support::{bin, files_under, private_dirs};
use spillway::spill::{SpillError, verify_file};

/// Cache 8 × 40 MiB at MEMORY_AND_DISK (some go to disk), sort 2 × 190 MiB (spills), and a
/// python stage whose workers aggregate and spill, in a 512 MiB executor.
const SCENARIO: &str = r#"
name = "faults-crash"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "2"
[[stages]]
kind = "cache"
rdd = 1
partitions = 8
partition_bytes = "40m"
record_bytes = "64k"
storage_level = "MEMORY_AND_DISK"
[[stages]]
kind = "sort"
tasks = 2
records_per_task = 3400000
record_bytes = 56
[[stages]]
kind = "python"
tasks = 2
bytes_per_task = "16m"
records_per_task = 300000
distinct_keys = 200000
worker = "spillway"
"#;

const TINY: &str = r#"
name = "faults-tiny"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "1"
[[stages]]
kind = "sort"
tasks = 1
records_per_task = 1000
record_bytes = 56
"#;

/// xorshift64*: the kill points, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn run_cmd(scenario: &Path, local: &Path, out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .arg("--conf")
        .arg(format!("spark.local.dir={}", local.display()))
        .env("SPILLWAY_LOG", "off")
        .env_remove("SPARK_LOCAL_DIRS")
        .env_remove("SPARK_EXECUTOR_DIRS")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Children of `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

#[derive(Default, Debug)]
struct Tally {
    kills: u32,
    left_dirs: u32,
    complete_files: u32,
    refused_files: u32,
    workers_seen: u32,
}

#[test]
fn sigkill_at_random_points_leaves_nothing_read_as_complete_and_the_next_run_sweeps() {
    let seed = std::env::var("SPILLWAY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("SPILLWAY_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("crash.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let tiny = tmp.path().join("tiny.toml");
    std::fs::write(&tiny, TINY).unwrap();
    let local = tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();

    // Kill points spread over the whole run: how long a run takes depends on the machine and
    // its load, so one uninterrupted run measures it first (it removes its own directory).
    let started = Instant::now();
    let full = run_cmd(&scenario, &local, &tmp.path().join("uninterrupted"))
        .status()
        .unwrap();
    assert!(full.success(), "the uninterrupted run: {full:?}");
    let run_ms = (started.elapsed().as_millis() as u64).max(200);
    println!("an uninterrupted run takes {run_ms} ms");

    let mut t = Tally::default();
    let mut killed_running = 0u32;
    for i in 0..6u32 {
        // Within the first 90 % of a run (the process start included).
        let delay_ms = 20 + rng.next() % (run_ms * 9 / 10);
        let mut child = run_cmd(&scenario, &local, &tmp.path().join(format!("out{i}")))
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_millis(delay_ms);
        let mut workers = Vec::new();
        while Instant::now() < deadline {
            for w in children_of(pid) {
                if !workers.contains(&w) {
                    workers.push(w);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        println!("kill {i}: after {delay_ms} ms, finished first: {finished}, {status:?}");
        t.kills += 1;
        killed_running += u32::from(!finished);
        t.workers_seen += workers.len() as u32;

        // Orphaned workers see EOF on stdin and exit by themselves.
        let until = Instant::now() + Duration::from_secs(10);
        while !workers.iter().all(|&w| gone(w)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let lingering: Vec<u32> = workers.iter().copied().filter(|&w| !gone(w)).collect();
        assert!(
            lingering.is_empty(),
            "workers outlived their executor: {lingering:?}"
        );

        // What the dead run left: every spill or block file either verifies completely or is
        // refused with a typed error (a killed writer never wrote its footer).
        for dir in private_dirs(&local) {
            t.left_dirs += 1;
            for f in files_under(&dir) {
                if f.components().any(|c| c.as_os_str() == "python") {
                    continue; // the workers' own (pickle-like) spill files
                }
                match verify_file(&f) {
                    Ok(info) => {
                        t.complete_files += 1;
                        assert_eq!(info.file_bytes, std::fs::metadata(&f).unwrap().len());
                    }
                    Err(
                        e @ (SpillError::Truncated { .. }
                        | SpillError::BadFormat { .. }
                        | SpillError::ChecksumMismatch { .. }
                        | SpillError::Corrupt { .. }),
                    ) => {
                        t.refused_files += 1;
                        assert_eq!(e.path(), Some(f.as_path()));
                    }
                    Err(e) => panic!("{}: unexpected {e}", f.display()),
                }
            }
        }
    }
    println!("{t:?}");
    // Not vacuous: the kills hit running executors, which left their directories.
    assert!(killed_running > 0, "every run finished before its kill");
    assert!(
        t.left_dirs > 0,
        "SIGKILL leaves the private directory behind"
    );

    // A live owner's directory is never swept: a decoy named after a live process.
    let mut live = Command::new("sleep").arg("30").spawn().unwrap();
    let decoy = local.join(format!("spillway-blockmgr-{}-decoy", live.id()));
    std::fs::create_dir_all(decoy.join("0a")).unwrap();
    std::fs::write(decoy.join("0a/temp_local_0"), b"live").unwrap();

    let out = run_cmd(&tiny, &local, &tmp.path().join("sweep"))
        .status()
        .unwrap();
    assert!(out.success());
    let left: Vec<PathBuf> = private_dirs(&local);
    assert_eq!(
        left,
        vec![decoy.clone()],
        "only the live owner's directory stays"
    );

    live.kill().unwrap();
    live.wait().unwrap();
    assert!(
        run_cmd(&tiny, &local, &tmp.path().join("sweep2"))
            .status()
            .unwrap()
            .success()
    );
    assert!(
        private_dirs(&local).is_empty(),
        "{:?}",
        private_dirs(&local)
    );
}

#[test]
fn a_worker_exits_when_its_stdin_closes() {
    let mut w = Command::new(bin())
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(w.stdin.take()); // what the kernel does when the executor dies
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(status) = status else {
        let _ = w.kill();
        let _ = w.wait();
        panic!("the worker did not exit on EOF within 5 s");
    };
    let mut rest = Vec::new();
    let _ = w.stdout.take().unwrap().read_to_end(&mut rest);
    assert!(status.code().is_some(), "exited, not killed: {status:?}");
}
