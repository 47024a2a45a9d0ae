//! The clean-up audit (docs/reliability.md test plan 19): after every other test binary, nothing
//! spillway created is left. It must run after the whole suite, which cargo does not order, so
//! its tests are `#[ignore]`d and `.ci/run` runs them as an explicit last step:
//! `cargo test --test cleanup_audit -- --ignored`.
//!
//! "This test run" is everything since `SPILLWAY_AUDIT_SINCE` (Unix seconds; `.ci/run` sets it
//! before the main `cargo test`), else since the `cargo test` that started this binary (its
//! parent process) began; leftovers of other, concurrent sessions on the same host are reported
//! but do not fail the audit. Checked:
//! - no `spillway-<pid>-*` cgroup of a dead owner below the own cgroup, in the v1 memory tree
//!   and in the cgroup2 tree (v2 or hybrid);
//! - no process of this build's `spillway` binary still running;
//! - no `spillway-blockmgr-<pid>-*` directory of a dead pid in the temp directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use spillway::pressure::OwnCgroup;
use spillway::sweep::{owner_pid, pid_alive};

mod skip_support;
use skip_support::skip;

/// When the audited run began: `SPILLWAY_AUDIT_SINCE`, else the start of this process's parent
/// (its `/proc` entry's change time), else the epoch (audit everything).
fn run_started_secs() -> i64 {
    if let Ok(v) = std::env::var("SPILLWAY_AUDIT_SINCE") {
        return v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("SPILLWAY_AUDIT_SINCE={v:?} is not Unix seconds: {e}"));
    }
    let ppid = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    std::fs::metadata(format!("/proc/{ppid}"))
        .map(|m| m.ctime())
        .unwrap_or(0)
}

fn cgroup_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("spillway-")?;
    rest.split_once('-')?.0.parse().ok()
}

#[test]
#[ignore = "runs after the whole suite: cargo test --test cleanup_audit -- --ignored"]
fn no_spillway_cgroup_of_a_dead_owner_is_left() {
    let Some(own) = OwnCgroup::discover() else {
        return skip("no memory cgroup is mounted");
    };
    let since = run_started_secs();
    let mut leaked = Vec::new();
    for tree in [Some(own.memory_dir.clone()), own.unified_dir.clone()]
        .into_iter()
        .flatten()
    {
        let Ok(rd) = std::fs::read_dir(&tree) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = cgroup_owner(&name) else {
                continue;
            };
            let path = e.path();
            let ours = std::fs::metadata(&path).is_ok_and(|m| m.ctime() >= since);
            if pid_alive(pid) {
                println!("live owner {pid}: {}", path.display());
            } else if ours {
                leaked.push(path);
            } else {
                println!("left by an earlier run (not this one): {}", path.display());
            }
        }
    }
    assert!(leaked.is_empty(), "cgroups left behind: {leaked:?}");
}

#[test]
#[ignore = "runs after the whole suite: cargo test --test cleanup_audit -- --ignored"]
fn no_spillway_process_of_this_build_is_running() {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_spillway")).unwrap();
    let me = std::process::id();
    let mut stray = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // `(deleted)` when the binary was rebuilt under a running process: still ours.
        let Ok(target) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let t = target.to_string_lossy();
        if t.trim_end_matches(" (deleted)") == exe.to_string_lossy() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            stray.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    assert!(
        stray.is_empty(),
        "spillway processes still running: {stray:?}"
    );
}

#[test]
#[ignore = "runs after the whole suite: cargo test --test cleanup_audit -- --ignored"]
fn no_private_dir_of_a_dead_pid_is_left_in_the_temp_dir() {
    let since = run_started_secs();
    let tmp: PathBuf = std::env::temp_dir();
    let mut leaked = Vec::new();
    for e in std::fs::read_dir(&tmp).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        let path = e.path();
        if pid_alive(pid) {
            continue;
        }
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ctime() >= since) {
            leaked.push(path);
        } else {
            println!("left by an earlier run (not this one): {}", path.display());
        }
    }
    assert!(
        leaked.is_empty(),
        "private directories of dead runs: {leaked:?}"
    );
    assert!(Path::new(&tmp).is_dir());
}
