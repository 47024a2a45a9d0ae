//! Cross-checks spillway's own RSS readings against `sysinfo`'s, for the same pid, after
//! touching a known amount of memory: the executor's (`region::process_rss_bytes`, the exact
//! `smaps_rollup` sum, and `region::process_rss_bytes_fast`, the `statm` counter the timeline
//! samples) and a Python worker's (`external::pid_rss_bytes`, what the overhead account and the
//! container monitor read). Two independent readers agreeing, and both moving by the bytes
//! written, is what makes the report's RSS columns trustworthy.
//!
//! The worker case needs `python3`; without it it prints `SKIPPED: <test>: <reason>`
//! (`skip_support`) and returns.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use spillway::external::pid_rss_bytes;
use spillway::region::{Mapping, process_rss_bytes, process_rss_bytes_fast};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

mod skip_support;

const MIB: u64 = 1 << 20;

/// Two readings of one process taken a moment apart: this test binary's other threads (the
/// worker test's pipes, the harness) may move a few pages in between, never megabytes.
const SAME_INSTANT_TOLERANCE_BYTES: u64 = 8 * MIB;

/// `smaps_rollup` sums the mappings exactly; the `statm` counter the kernel keeps per CPU may
/// lag it by a batch of pages per CPU (the existing region test allows 16 MiB too).
const ROLLUP_VS_COUNTER_TOLERANCE_BYTES: u64 = 16 * MIB;

/// sysinfo's resident bytes of `pid`, refreshed now.
fn sysinfo_rss_bytes(sys: &mut System, pid: u32) -> u64 {
    let pid = Pid::from_u32(pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(pid)
        .unwrap_or_else(|| panic!("sysinfo does not see pid {pid}"))
        .memory()
}

#[test]
fn own_rss_agrees_with_sysinfo_before_and_after_touching_256_mib() {
    const TOUCHED_BYTES: u64 = 256 * MIB;
    let mut sys = System::new().expect("sysinfo supports this platform");
    let pid = std::process::id();
    let heap = Mapping::anonymous(TOUCHED_BYTES, "heap").unwrap();

    let check = |sys: &mut System, when: &str| -> u64 {
        let fast = process_rss_bytes_fast().unwrap();
        let theirs = sysinfo_rss_bytes(sys, pid);
        let exact = process_rss_bytes().unwrap();
        assert!(
            fast.abs_diff(theirs) <= SAME_INSTANT_TOLERANCE_BYTES,
            "{when}: spillway statm {fast} bytes vs sysinfo {theirs} bytes"
        );
        assert!(
            exact.abs_diff(theirs) <= ROLLUP_VS_COUNTER_TOLERANCE_BYTES,
            "{when}: spillway smaps_rollup {exact} bytes vs sysinfo {theirs} bytes"
        );
        theirs
    };

    let before = check(&mut sys, "before touching");
    heap.whole().touch().unwrap();
    let touched = check(&mut sys, "after touching");
    let rise = touched.saturating_sub(before);
    assert!(
        rise.abs_diff(TOUCHED_BYTES) <= ROLLUP_VS_COUNTER_TOLERANCE_BYTES,
        "sysinfo saw RSS rise by {rise} bytes after touching {TOUCHED_BYTES} bytes"
    );
    heap.whole().release().unwrap();
    let released = check(&mut sys, "after release");
    assert!(
        released + TOUCHED_BYTES - ROLLUP_VS_COUNTER_TOLERANCE_BYTES <= touched,
        "sysinfo saw RSS {released} bytes after giving back {TOUCHED_BYTES} of {touched} bytes"
    );
}

/// Kills and reaps the child on every path, so a failed assertion leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn worker_rss_agrees_with_sysinfo_after_it_writes_200_mib() {
    const WRITTEN_BYTES: u64 = 200 * MIB;
    // `b"\xa5" * n` writes every byte (a zeroed bytearray could stay unbacked calloc pages).
    let script = format!(
        "import sys\nb = b'\\xa5' * {WRITTEN_BYTES}\nprint('ready', flush=True)\nsys.stdin.read()\n"
    );
    let spawned = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(c) => Reaped(c),
        Err(e) => return skip_support::skip(&format!("cannot start python3: {e}")),
    };
    let pid = child.0.id();
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "python3 worker did not start");

    let mut sys = System::new().expect("sysinfo supports this platform");
    let ours = pid_rss_bytes(pid);
    let theirs = sysinfo_rss_bytes(&mut sys, pid);
    // The worker is idle on its stdin: its RSS does not move between the two readings.
    assert!(
        ours.abs_diff(theirs) <= SAME_INSTANT_TOLERANCE_BYTES,
        "worker {pid}: spillway reads {ours} bytes, sysinfo {theirs} bytes"
    );
    assert!(
        (WRITTEN_BYTES..=WRITTEN_BYTES + 128 * MIB).contains(&ours),
        "worker {pid} wrote {WRITTEN_BYTES} bytes but spillway reads RSS {ours} bytes"
    );

    child.0.stdin.take().unwrap().write_all(b"").unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "python3 worker: {status}");
    // Gone: spillway reads 0, sysinfo no longer lists it.
    assert_eq!(pid_rss_bytes(pid), 0);
    let pid = Pid::from_u32(pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_memory(),
    );
    assert!(sys.process(pid).is_none(), "sysinfo still lists {pid}");
}
