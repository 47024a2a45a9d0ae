//! SIGINT, SIGTERM and SIGHUP: a first signal asks the run to stop, a second one ends the
//! process at once — and in both cases nothing is left behind (docs/reliability.md).
//!
//! [`install`] registers the three signals once, with a dedicated thread that receives them
//! (signal-hook's [`Signals`] iterator: the handler itself only writes to a pipe, so everything
//! here runs on an ordinary thread, where allocating, locking and file system calls are safe).
//!
//! - **First signal**: the process-wide [`Interrupt`] flag records which signal arrived. The
//!   scheduler launches no further task, and the long loops of a task (sort and aggregation
//!   record loops and merges, the memory store's unroll, a block written to disk) check it
//!   every few thousand records and stop with a typed "interrupted" error. The normal drop
//!   path then runs: spill files and private local directories are deleted, the Python
//!   workers are ended, the `--cgroup` supervisor forwards the signal to its child, waits for
//!   it and removes the child cgroup. `run` writes report.json marked incomplete and exits
//!   128 + the signal's number.
//! - **Second signal**: the cleanup [registry](register_dir) is emptied synchronously — child
//!   processes are signalled (the `--cgroup` child gets the signal forwarded, so that its own
//!   second-signal path cleans up, and SIGKILL after a grace period), cgroups are emptied and
//!   removed, private directories are deleted — and the process leaves with `_exit(128 + n)`.
//!
//! Only a SIGKILL leaves anything behind; the next run's start-up sweep (`crate::sweep`) and
//! the cgroup sweep remove that.
//!
//! A hidden test hook, [`HOLD_ENV`], holds the first signal's stop for a while, so that the
//! end-to-end tests (`tests/signals.rs`) can send the second signal while everything is still
//! live and prove that its path, not the first one's, cleaned up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Int,
    Term,
    Hup,
}

impl Signal {
    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Int => SIGINT,
            Signal::Term => SIGTERM,
            Signal::Hup => SIGHUP,
        }
    }

    /// The signal with this number, if it is one of the three.
    pub fn from_number(n: i32) -> Option<Signal> {
        match n {
            SIGINT => Some(Signal::Int),
            SIGTERM => Some(Signal::Term),
            SIGHUP => Some(Signal::Hup),
            _ => None,
        }
    }

    /// `SIGINT`, `SIGTERM`, `SIGHUP` (as report.json and the messages name it).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
            Signal::Hup => "SIGHUP",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The typed error of work stopped by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {0}")]
pub struct Interrupted(pub Signal);

/// Which signal, if any, asked the process to stop. One lives for the whole process
/// ([`process`]); separate ones exist only in tests.
#[derive(Debug, Default)]
pub struct Interrupt {
    /// 0: none; else the first signal's number.
    signal: AtomicI32,
}

impl Interrupt {
    /// No signal yet.
    pub const fn new() -> Interrupt {
        Interrupt {
            signal: AtomicI32::new(0),
        }
    }

    /// The first signal that arrived, if any. One relaxed load: cheap enough for a record loop.
    #[inline]
    pub fn signal(&self) -> Option<Signal> {
        match self.signal.load(Ordering::Relaxed) {
            0 => None,
            n => Signal::from_number(n),
        }
    }

    /// `Err(Interrupted)` once a signal arrived.
    #[inline]
    pub fn check(&self) -> Result<(), Interrupted> {
        match self.signal() {
            None => Ok(()),
            Some(s) => Err(Interrupted(s)),
        }
    }

    /// Records `signal`; true if it is the first (a later one does not replace it).
    pub fn raise(&self, signal: Signal) -> bool {
        self.signal
            .compare_exchange(0, signal.number(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

static PROCESS: Interrupt = Interrupt::new();

/// The process's interrupt flag (set by the signal thread of [`install`]).
pub fn process() -> &'static Interrupt {
    &PROCESS
}

/// The first signal the process received, if any.
#[inline]
pub fn interrupted() -> Option<Signal> {
    PROCESS.signal()
}

/// `Err(Interrupted)` once the process received a signal.
#[inline]
pub fn check() -> Result<(), Interrupted> {
    PROCESS.check()
}

/// How many records a loop handles between two checks: a check is one relaxed load, so this
/// only keeps it out of the innermost work; at record rates of ~10⁷/s it is well under 1 ms.
pub const CHECK_EVERY: u64 = 4096;

/// Registers SIGINT, SIGTERM and SIGHUP and starts the thread that receives them. Idempotent:
/// only the first call registers. Call it at the start of a command that makes files,
/// processes or cgroups (`run`, `oom`, `bench`), never in a worker.
///
/// A malformed [`HOLD_ENV`] ends the process with exit 2 here, before anything is created.
pub fn install() -> std::io::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let hold = match test_hold() {
                Ok(hold) => hold,
                Err(message) => {
                    eprintln!("spillway: {message}");
                    std::process::exit(i32::from(crate::exit::ExitStatus::BadInput.code()));
                }
            };
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("spillway-signals".into())
                .spawn(move || {
                    // Counted here, not by the flag: under the test hold the flag is raised
                    // later than the first signal arrives.
                    let mut first_taken = false;
                    for n in signals.forever() {
                        let Some(signal) = Signal::from_number(n) else {
                            continue;
                        };
                        if !first_taken {
                            first_taken = true;
                            eprintln!(
                                "spillway: {signal} received: stopping the run and cleaning up \
                                 (send it again to exit at once)"
                            );
                            raise_after(signal, hold);
                        } else {
                            eprintln!("spillway: {signal} received again: cleaning up and exiting");
                            clean_up_now(signal);
                            eprintln!(
                                "spillway: second {signal}: registered files, directories, \
                                 processes and cgroups removed; exiting now"
                            );
                            signal_hook::low_level::exit(i32::from(
                                crate::exit::ExitStatus::Signal(signal.number()).code(),
                            ));
                        }
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(std::io::Error::other)
}

/// Test hook (hidden, for `tests/signals.rs` only): `SPILLWAY_TEST_HOLD_CLEANUP_MS=<ms>`
/// holds the first signal's stop for that many milliseconds. The signal is taken at once (its
/// message is printed and a second signal is recognised as the second), but the process flag
/// is raised only when the hold ends, so until then no task stops, no worker is ended, no
/// signal is forwarded and nothing is cleaned up: the run is provably still busy, with every
/// spill file, private directory, child and cgroup live, when a test's second signal arrives.
/// Read once, by [`install`]. A spillway started by spillway (the `--cgroup` executor, an
/// `oom` case's child) ignores it: its parent forwards a signal and SIGKILLs it after a grace
/// period, so it must act on the signal at once.
pub const HOLD_ENV: &str = "SPILLWAY_TEST_HOLD_CLEANUP_MS";

/// The [`HOLD_ENV`] hold: `Ok(None)` when unset, zero, or in a child of spillway; `Err` names
/// the key and the value that is not a number of milliseconds.
fn test_hold() -> Result<Option<Duration>, String> {
    parse_hold(std::env::var_os(HOLD_ENV).as_deref(), parent_is_spillway)
}

/// [`test_hold`] on the variable's value; `in_child` is asked only for a valid, non-zero one.
fn parse_hold(
    text: Option<&std::ffi::OsStr>,
    in_child: impl FnOnce() -> bool,
) -> Result<Option<Duration>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    let ms: u64 = text
        .to_str()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "{HOLD_ENV}={}: not a number of milliseconds",
                text.to_string_lossy()
            )
        })?;
    if ms == 0 || in_child() {
        return Ok(None);
    }
    Ok(Some(Duration::from_millis(ms)))
}

/// Whether the parent process runs this same executable (compared by device and inode).
fn parent_is_spillway() -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let parent = std::os::unix::process::parent_id();
    let own = id("/proc/self/exe".into());
    own.is_some() && own == id(format!("/proc/{parent}/exe"))
}

/// Raises the process flag for `signal`, at once or (test hook) after `hold` on a thread of
/// its own, so that the signal thread keeps receiving meanwhile.
fn raise_after(signal: Signal, hold: Option<Duration>) {
    let Some(hold) = hold else {
        PROCESS.raise(signal);
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("spillway-signal-hold".into())
        .spawn(move || {
            std::thread::sleep(hold);
            PROCESS.raise(signal);
        });
    if spawned.is_err() {
        // No thread for the hold: stop at once rather than never.
        PROCESS.raise(signal);
    }
}

/// Something the second-signal path must undo.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A private directory: removed with everything in it.
    Dir(PathBuf),
    /// A child process: SIGKILLed, or first sent the signal itself when `forward` (a child
    /// that cleans up after itself, as the `--cgroup` executor does).
    Child { pid: u32, forward: bool },
    /// A cgroup directory spillway created: its processes are killed and it is removed.
    Cgroup(PathBuf),
    /// A file being written (an output's temporary): removed.
    File(PathBuf),
}

static REGISTRY: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A registry entry, removed from the registry when dropped (its owner cleaned up itself).
#[derive(Debug)]
#[must_use = "the entry leaves the registry when this is dropped"]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().remove(&self.0);
    }
}

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<u64, Entry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(entry: Entry) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().insert(id, entry);
    Registration(id)
}

/// A private directory (e.g. `spillway-blockmgr-*`) the second signal must delete.
pub fn register_dir(path: &Path) -> Registration {
    register(Entry::Dir(path.to_path_buf()))
}

/// A temporary file being written, which the second signal must delete.
pub fn register_file(path: &Path) -> Registration {
    register(Entry::File(path.to_path_buf()))
}

/// A child process the second signal must end: SIGKILL, or with `forward` the signal first
/// (the child then cleans up itself) and SIGKILL after a grace period. Only a process that is
/// still this process's child is signalled, so a recycled pid is never hit.
pub fn register_child(pid: u32, forward: bool) -> Registration {
    register(Entry::Child { pid, forward })
}

/// A cgroup directory spillway created, which the second signal must empty and remove.
pub fn register_cgroup(path: &Path) -> Registration {
    register(Entry::Cgroup(path.to_path_buf()))
}

/// How long a forwarded signal may take to end a child before it is SIGKILLed.
const FORWARD_GRACE: Duration = Duration::from_secs(5);
/// How long a killed process may take to die, and a cgroup to become removable.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// The second-signal path: undoes everything registered, synchronously. Runs on the signal
/// thread while other threads may still run; whatever they do after this is cut short by
/// `_exit`.
///
/// The flag is raised first (it may not be yet, under the [`HOLD_ENV`] test hold), so that no
/// further task starts. A task already running may still register something — a Python
/// worker started while the first children were waited for — so the registry is read again
/// after each pass, until a pass finds nothing new.
fn clean_up_now(signal: Signal) {
    PROCESS.raise(signal);
    let mut done: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    loop {
        let fresh: Vec<(u64, Entry)> = registry()
            .iter()
            .filter(|(id, _)| !done.contains(id))
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        done.extend(fresh.iter().map(|(id, _)| *id));
        let entries: Vec<Entry> = fresh.into_iter().map(|(_, e)| e).collect();
        clean_up(&entries, signal);
    }
}

/// Undoes `entries`: children first (forwarded ones get `signal` and a grace period), then
/// cgroups, then directories (a child may still be writing into one until it is gone).
fn clean_up(entries: &[Entry], signal: Signal) {
    let own = std::process::id();
    let children: Vec<(u32, bool)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Child { pid, forward } => Some((*pid, *forward)),
            _ => None,
        })
        .filter(|(pid, _)| is_live_child_of(*pid, own))
        .collect();
    for &(pid, forward) in &children {
        let sig = if forward {
            signal.number()
        } else {
            crate::proc_ctl::SIGKILL
        };
        let _ = crate::proc_ctl::send_signal(pid, sig);
    }
    let forwarded: Vec<u32> = children.iter().filter(|c| c.1).map(|c| c.0).collect();
    wait_until_gone(&forwarded, own, FORWARD_GRACE);
    for &(pid, _) in &children {
        if is_live_child_of(pid, own) {
            let _ = crate::proc_ctl::send_signal(pid, crate::proc_ctl::SIGKILL);
        }
    }
    let all: Vec<u32> = children.iter().map(|c| c.0).collect();
    wait_until_gone(&all, own, KILL_GRACE);
    for e in entries {
        if let Entry::Cgroup(dir) = e {
            remove_cgroup(dir);
        }
    }
    for e in entries {
        match e {
            Entry::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Entry::File(file) => {
                let _ = std::fs::remove_file(file);
            }
            _ => {}
        }
    }
}

/// Whether `pid` is a running (not zombie) child of `parent`, from `/proc/<pid>/stat`.
fn is_live_child_of(pid: u32, parent: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    parse_stat(&stat).is_some_and(|(state, ppid)| ppid == parent && !matches!(state, 'Z' | 'X'))
}

/// State and parent pid from a `/proc/<pid>/stat` line (the command name may hold spaces and
/// parentheses: the fields follow the last `)`).
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn wait_until_gone(pids: &[u32], parent: u32, grace: Duration) {
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| is_live_child_of(p, parent)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills what is left in a cgroup and removes it (and child cgroups it holds), retrying while
/// the kernel still counts the dying processes.
fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                let _ = crate::proc_ctl::send_signal(pid, crate::proc_ctl::SIGKILL);
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_kept() {
        let i = Interrupt::new();
        assert_eq!(i.signal(), None);
        assert_eq!(i.check(), Ok(()));
        assert!(i.raise(Signal::Term));
        assert!(!i.raise(Signal::Int));
        assert_eq!(i.signal(), Some(Signal::Term));
        assert_eq!(i.check(), Err(Interrupted(Signal::Term)));
        assert_eq!(
            Interrupted(Signal::Term).to_string(),
            "interrupted by SIGTERM"
        );
    }

    #[test]
    fn exit_codes_are_the_shells() {
        let code = |s: Signal| crate::exit::ExitStatus::Signal(s.number()).code();
        assert_eq!(code(Signal::Int), 130);
        assert_eq!(code(Signal::Term), 143);
        assert_eq!(code(Signal::Hup), 129);
        for s in [Signal::Int, Signal::Term, Signal::Hup] {
            assert_eq!(Signal::from_number(s.number()), Some(s));
        }
        assert_eq!(Signal::from_number(9), None);
    }

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        assert_eq!(
            parse_stat("123 (python3 (x) y) S 77 123 123 0 -1"),
            Some(('S', 77))
        );
        assert_eq!(parse_stat("9 (z) Z 1 0"), Some(('Z', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_test_hold_parses_and_is_ignored_in_a_child() {
        use std::ffi::OsStr;
        let parent = || false;
        assert_eq!(parse_hold(None, parent), Ok(None));
        assert_eq!(parse_hold(Some(OsStr::new("0")), parent), Ok(None));
        assert_eq!(
            parse_hold(Some(OsStr::new("1500")), parent),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(parse_hold(Some(OsStr::new("1500")), || true), Ok(None));
        let err = parse_hold(Some(OsStr::new("2s")), parent).unwrap_err();
        assert!(
            err.contains("SPILLWAY_TEST_HOLD_CLEANUP_MS=2s"),
            "names key and value: {err}"
        );
        // A spillway whose parent is not spillway (this test binary's parent is cargo).
        assert!(!parent_is_spillway());
    }

    #[test]
    fn a_dropped_registration_leaves_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let r = register_dir(dir.path());
        let has = || {
            registry()
                .values()
                .any(|e| *e == Entry::Dir(dir.path().to_path_buf()))
        };
        assert!(has());
        drop(r);
        assert!(!has());
    }

    #[test]
    fn the_second_signal_path_kills_children_and_removes_directories() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spillway-blockmgr-test");
        std::fs::create_dir_all(dir.join("0a")).unwrap();
        std::fs::write(dir.join("0a").join("temp_local_1"), b"x").unwrap();
        // A child that ignores nothing (killed outright) and one that exits on the forwarded
        // signal by itself.
        let mut killed = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut forwarded = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let entries = [
            Entry::Dir(dir.clone()),
            Entry::Child {
                pid: killed.id(),
                forward: false,
            },
            Entry::Child {
                pid: forwarded.id(),
                forward: true,
            },
            // Already gone: ignored.
            Entry::Cgroup(root.path().join("no-such-cgroup")),
        ];
        clean_up(&entries, Signal::Term);
        assert!(!dir.exists());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            killed.wait().unwrap().signal(),
            Some(crate::proc_ctl::SIGKILL)
        );
        assert_eq!(forwarded.wait().unwrap().signal(), Some(SIGTERM));
    }

    #[test]
    fn only_own_live_children_count() {
        let own = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(is_live_child_of(child.id(), own));
        // This process is not its own child, nor is pid 1.
        assert!(!is_live_child_of(own, own));
        assert!(!is_live_child_of(1, own));
        child.kill().unwrap();
        // Killed but not reaped: a zombie is no longer live.
        wait_until_gone(&[child.id()], own, Duration::from_secs(5));
        assert!(!is_live_child_of(child.id(), own));
        child.wait().unwrap();
    }
}
