//! The one way an integration test skips for something the host lacks (root, a memory cgroup,
//! `python3`, `java`, `/dev/full`, ...), so that a skip is never silent.
//!
//! `skip(reason)` prints `SKIPPED: <test>: <reason>` on stdout and stderr, appends that line to
//! the file named by `SPILLWAY_SKIP_LOG` when set (`.ci/run` collects them and prints them at
//! the end), and panics instead when `SPILLWAY_REQUIRE_ALL=1`, for a host that is meant to
//! run everything. The test's name is its thread's: libtest runs each test on a thread named
//! after it. Callers `return skip(...)` from the test.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// Records that the running test is skipped for `reason` (or fails it under
/// `SPILLWAY_REQUIRE_ALL=1`).
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let crate_name = env!("CARGO_CRATE_NAME");
    let line = format!("SKIPPED: {crate_name}::{test}: {reason}");
    if std::env::var("SPILLWAY_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{line} (SPILLWAY_REQUIRE_ALL=1 forbids skipping)");
    }
    println!("{line}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SPILLWAY_SKIP_LOG") {
        // One `write_all` of a whole line on an O_APPEND file: concurrent tests and test
        // binaries never interleave within a line.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            panic!(
                "{line}; and SPILLWAY_SKIP_LOG={} could not be appended to: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// Whether this process may create a child of the memory cgroup `dir` and write its limit file
/// `limit_file`: a probe child is made under a name unique to the process and the call (the
/// tests of one binary probe on parallel threads; one shared name collides with EEXIST and
/// would skip for no reason), its limit file opened for writing, and the probe removed. The
/// error says why not, for the test's skip.
pub fn probe_child_cgroup(dir: &Path, limit_file: &str) -> Result<(), String> {
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!("spillway-{}-probe{n}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a child of {}: {e}", dir.display()))?;
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open(probe.join(limit_file));
    let _ = std::fs::remove_dir(&probe);
    writable
        .map(drop)
        .map_err(|e| format!("cannot write a child's {limit_file}: {e}"))
}
