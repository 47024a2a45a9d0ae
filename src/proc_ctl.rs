//! Process control: the system calls that act on processes, not on memory, behind safe wrappers.
#![allow(unsafe_code)]
//!
//! Why this module is allowed `unsafe`: `libc` offers these calls only as `unsafe fn`s (they
//! take raw descriptors and pointers, and the `pre_exec` hook runs between `fork` and `exec`,
//! where only async-signal-safe calls are allowed). The crate root denies `unsafe_code`; this
//! module and `region/` (memory: mappings, `madvise`, `mincore`, raw pointers) are the only
//! places that allow it, and each unsafe block here carries a `// SAFETY:` comment.
//!
//! What it may hold: wrappers over system calls about processes — their creation set-up,
//! signals, resource limits — each a small safe function whose arguments cannot break memory
//! safety. Nothing here maps, reads or writes memory that Rust code holds references to; memory
//! belongs in `region/`.
//!
//! | function | used by | for |
//! |---|---|---|
//! | [`confine_child`] | `cgroup_run` | the child's set-up between fork and exec: join its cgroups, die with the parent, be the OOM killer's first choice |
//! | [`send_signal`], [`SIGKILL`] | `pressure::control`, `cgroup_run` | killing a cgroup's processes (v1), classifying exits |
//! | [`get_rlimit_as`], [`set_rlimit_as`] | `external::worker` | a worker lowering its own `RLIMIT_AS`, as PySpark's `worker.py` does |

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// What the child does between `fork` and `exec`, in this order:
///
/// 1. writes `"0"` (= "the writer") to each pre-opened `cgroup.procs` file, so the child is
///    inside its cgroups *before* it allocates anything (charges do not migrate on v1);
/// 2. `PR_SET_PDEATHSIG(SIGKILL)`: the child is killed when the spawning **thread** exits, so
///    spawn from a thread that lives until the child is reaped; if the parent already died
///    (`getppid` changed), the child exits at once;
/// 3. writes `oom_score_adj` to `/proc/self/oom_score_adj` (1000: the kernel kills the child,
///    never the supervisor, should the OOM killer look beyond the child's cgroup).
///
/// A failure of step 1 fails the spawn (the child would run unconfined); failures of steps 2–3
/// are ignored only where the kernel refuses them for lack of privilege, which cannot happen for
/// a process lowering its own priority.
pub fn confine_child(cmd: &mut Command, cgroup_procs: Vec<File>, oom_score_adj: i32) {
    let fds: Vec<OwnedFd> = cgroup_procs.into_iter().map(OwnedFd::from).collect();
    let adj = format!("{oom_score_adj}\n").into_bytes();
    // SAFETY: `getpid` has no preconditions.
    let parent = unsafe { libc::getpid() };
    // Everything the closure uses is allocated here, before fork: the closure itself only makes
    // async-signal-safe system calls (write, prctl, getppid, open, close, _exit).
    let hook = move || -> std::io::Result<()> {
        for fd in &fds {
            // SAFETY: `fd` is an open descriptor owned by this closure, and the buffer is a
            // valid 1-byte static slice.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes a signal number and no pointers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: getppid has no preconditions. If the parent died between fork and prctl, the
        // death signal will never come: leave now.
        if unsafe { libc::getppid() } != parent {
            // SAFETY: _exit never returns and runs no destructors, as required after fork.
            unsafe { libc::_exit(137) };
        }
        // SAFETY: the path is a NUL-terminated static C string.
        let fd = unsafe {
            libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: `fd` was just opened; `adj` is a live buffer of `adj.len()` bytes.
            unsafe {
                libc::write(fd, adj.as_ptr().cast(), adj.len());
                libc::close(fd);
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it allocates nothing and makes only
    // async-signal-safe calls (see above), as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Sends `signal` to process `pid`. `Ok(false)`: no such process (already gone).
pub fn send_signal(pid: u32, signal: i32) -> std::io::Result<bool> {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Ok(false);
    };
    if pid <= 0 {
        // 0 and negative pids address process groups; never do that by accident.
        return Ok(false);
    }
    // SAFETY: kill(2) takes plain integers; a positive pid names exactly one process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// SIGKILL's number, for callers that classify exits.
pub const SIGKILL: i32 = libc::SIGKILL;

/// A resource limit pair; `None` is `RLIM_INFINITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitAs {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
}

fn from_rlim(v: libc::rlim_t) -> Option<u64> {
    if v == libc::RLIM_INFINITY {
        None
    } else {
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
        Some(v as u64)
    }
}

/// This process's `RLIMIT_AS` (address-space limit), as `resource.getrlimit(RLIMIT_AS)`.
pub fn get_rlimit_as() -> std::io::Result<RlimitAs> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`; getrlimit writes only into it.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(RlimitAs {
        soft_bytes: from_rlim(lim.rlim_cur),
        hard_bytes: from_rlim(lim.rlim_max),
    })
}

/// Sets this process's `RLIMIT_AS` soft and hard limits to `bytes`, as PySpark's worker does
/// with `resource.setrlimit(RLIMIT_AS, (n, n))`. Lowering is always allowed; raising the hard
/// limit needs `CAP_SYS_RESOURCE` and fails with `EPERM`.
pub fn set_rlimit_as(bytes: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: `lim` is a valid `rlimit` read by the kernel; setrlimit has no other effects on
    // memory this process owns.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
