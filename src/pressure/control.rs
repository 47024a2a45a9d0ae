//! Creating, limiting, observing and removing a child memory cgroup (`spillway-<pid>-<nonce>`)
//! under this process's own cgroup, for `spillway run --cgroup` (docs/reliability.md, "Reproducing an
//! OOM kill deterministically").
//!
//! Safety rules kept here, not left to callers:
//! - a limit is only ever written to a strict descendant of the own cgroup
//!   ([`check_limit_target`]); the root and the own cgroup are refused;
//! - a [`ChildCgroup`] removes itself on drop: it kills what is left inside (v2 `cgroup.kill`,
//!   v1 a SIGKILL loop over `cgroup.procs`), waits for it to empty and `rmdir`s with EBUSY
//!   retries — also after an OOM kill, an error or a panic (not under `panic=abort`, and not if
//!   the supervisor is SIGKILLed: then the next [`sweep_stale`] removes it);
//! - [`sweep_stale`] removes `spillway-<pid>-*` cgroups whose owner `pid` is dead.
//!
//! On a hybrid host (v1 memory controller, cgroup2 mount with PSI only) a child cgroup is two
//! directories: the v1 memory cgroup that carries the limit, and a directory of the same name in
//! the cgroup2 tree so the child's `memory.pressure` can be read. No limit is written in the
//! cgroup2 tree there.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{CgroupVersion, OwnCgroup, Psi, parse_psi, read_u64, stat_value};

/// What stops a cgroup from being created, limited or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no memory cgroup is mounted for this process (/proc/self/cgroup, mountinfo)")]
    NoCgroup,
    #[error(
        "refusing to set a memory limit on {path}: it is {what}; spillway only limits cgroups it creates below its own ({own})"
    )]
    RefusedTarget {
        path: PathBuf,
        what: &'static str,
        own: PathBuf,
    },
    #[error(
        "vm.panic_on_oom is {value}: a memory cgroup OOM could panic the whole machine; refusing to run under a cgroup limit (set vm.panic_on_oom=0)"
    )]
    PanicOnOom { value: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the limit written to {path} reads back as {read_back} bytes, not {requested} (was it refused or rounded?)"
    )]
    LimitNotApplied {
        path: PathBuf,
        requested: u64,
        read_back: String,
    },
    #[error(
        "cannot enable the memory controller for children of {dir}: {reason}. On cgroup v2 run spillway in a delegated scope of its own (scripts/run-in-user-cgroup.sh) or as root"
    )]
    NotDelegated { dir: PathBuf, reason: String },
    #[error("{path} still holds processes {pids:?} after SIGKILL; not removed")]
    StillPopulated { path: PathBuf, pids: Vec<u32> },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io {
        action,
        path,
        source,
    }
}

/// `vm.panic_on_oom`; a cgroup OOM may only be provoked when it is `0`.
pub fn panic_on_oom() -> Result<(), CgroupError> {
    let value = std::fs::read_to_string("/proc/sys/vm/panic_on_oom")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unreadable".into());
    if value == "0" {
        Ok(())
    } else {
        Err(CgroupError::PanicOnOom { value })
    }
}

/// Refuses `target` unless it is a strict descendant of `own`'s memory cgroup (so never the
/// root of the hierarchy, never the own cgroup, never a sibling or ancestor). Pure: touches no
/// file.
pub fn check_limit_target(own: &OwnCgroup, target: &Path) -> Result<(), CgroupError> {
    let refuse = |what| CgroupError::RefusedTarget {
        path: target.to_path_buf(),
        what,
        own: own.memory_dir.clone(),
    };
    let normal: PathBuf = target.components().collect();
    if normal == own.memory_mount || normal == Path::new("/") {
        return Err(refuse("the root cgroup"));
    }
    if normal == own.memory_dir {
        return Err(refuse("the cgroup spillway was started in"));
    }
    if normal
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || !normal.starts_with(&own.memory_dir)
    {
        return Err(refuse("not below the cgroup spillway was started in"));
    }
    Ok(())
}

/// Sets the memory limit of a cgroup spillway created and reads it back: v1
/// `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` to the same value where swap
/// accounting exists, so no swap is used), v2 `memory.max` and `memory.swap.max = 0`. Refuses
/// the root and the own cgroup ([`check_limit_target`]). Returns the limit read back.
pub fn set_memory_limit(
    own: &OwnCgroup,
    version: CgroupVersion,
    dir: &Path,
    bytes: u64,
) -> Result<u64, CgroupError> {
    check_limit_target(own, dir)?;
    let (limit_file, swap_file, swap_value) = match version {
        CgroupVersion::V1 => (
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            bytes.to_string(),
        ),
        CgroupVersion::V2 => ("memory.max", "memory.swap.max", "0".to_string()),
    };
    let path = dir.join(limit_file);
    write_file(&path, &bytes.to_string(), "write the limit")?;
    let swap = dir.join(swap_file);
    if swap.exists() {
        write_file(&swap, &swap_value, "write the swap limit")?;
    }
    let text = std::fs::read_to_string(&path).map_err(io_err("read back", &path))?;
    match text.trim().parse::<u64>() {
        // Both versions round down to whole pages.
        Ok(v) if v <= bytes && bytes - v < 4096 * 16 => Ok(v),
        _ => Err(CgroupError::LimitNotApplied {
            path,
            requested: bytes,
            read_back: text.trim().to_string(),
        }),
    }
}

fn write_file(path: &Path, value: &str, action: &'static str) -> Result<(), CgroupError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(action, path))?;
    f.write_all(value.as_bytes()).map_err(io_err(action, path))
}

/// A snapshot of a child cgroup's counters.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CgroupStats {
    pub usage_bytes: u64,
    /// v1 `memory.max_usage_in_bytes`, v2 `memory.peak` (5.19+); `None` if the kernel has none.
    pub peak_bytes: Option<u64>,
    /// Processes killed by an OOM killer in this cgroup (v1 `memory.oom_control` `oom_kill`,
    /// 4.13+; v2 `memory.events` `oom_kill`).
    pub oom_kill: u64,
    /// v2 `memory.events` (low, high, max, oom, oom_kill, oom_group_kill); v1 `failcnt`,
    /// `under_oom`, `oom_kill`, `oom_kill_disable`.
    pub events: BTreeMap<String, u64>,
    pub psi: Option<Psi>,
    /// A few `memory.stat` keys (anon/rss, file/cache, shmem).
    pub stat: BTreeMap<String, u64>,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A memory cgroup spillway created below its own, removed on drop.
#[derive(Debug)]
pub struct ChildCgroup {
    own: OwnCgroup,
    name: String,
    memory_dir: PathBuf,
    /// The same-named directory in the cgroup2 tree of a hybrid host (PSI only).
    unified_dir: Option<PathBuf>,
    /// v2 only: the supervisor leaf this process moved itself into to satisfy the
    /// no-internal-process rule, and whether `+memory` was enabled by us.
    v2_restore: Option<V2Restore>,
    removed: bool,
}

#[derive(Debug)]
struct V2Restore {
    supervisor_leaf: Option<PathBuf>,
    enabled_memory: bool,
}

impl ChildCgroup {
    /// Creates `spillway-<pid>-<nonce>` below `own` (both trees on a hybrid host), first
    /// sweeping stale `spillway-*` cgroups of dead owners. On v2, enables `+memory` in the own
    /// cgroup's `cgroup.subtree_control` if needed; if the own cgroup holds this process alone,
    /// the process first moves itself into a leaf `spillway-<pid>-<nonce>-supervisor` (the
    /// no-internal-process rule) and moves back on drop.
    pub fn create(own: &OwnCgroup) -> Result<ChildCgroup, CgroupError> {
        sweep_stale(own);
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "spillway-{pid}-{:x}{:x}",
            nanos,
            NONCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut child = ChildCgroup {
            own: own.clone(),
            memory_dir: own.memory_dir.join(&name),
            unified_dir: own.unified_dir.as_ref().map(|d| d.join(&name)),
            name,
            v2_restore: None,
            removed: true,
        };
        if own.version == CgroupVersion::V2 {
            child.v2_restore = Some(child.delegate_memory_v2()?);
        }
        std::fs::create_dir(&child.memory_dir).map_err(io_err("create", &child.memory_dir))?;
        child.removed = false;
        if let Some(u) = &child.unified_dir
            && let Err(e) = std::fs::create_dir(u)
        {
            // PSI is a bonus on a hybrid host; the limit is what matters.
            crate::log::warn(
                "cgroup",
                &format!("cannot create {} for PSI: {e}", u.display()),
            );
            child.unified_dir = None;
        }
        Ok(child)
    }

    fn delegate_memory_v2(&self) -> Result<V2Restore, CgroupError> {
        let own = &self.own.memory_dir;
        let ctl = own.join("cgroup.subtree_control");
        let enabled = |p: &Path| {
            std::fs::read_to_string(p).is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
        };
        if enabled(&ctl) {
            return Ok(V2Restore {
                supervisor_leaf: None,
                enabled_memory: false,
            });
        }
        if !enabled(&own.join("cgroup.controllers")) {
            return Err(CgroupError::NotDelegated {
                dir: own.clone(),
                reason: "the memory controller is not in its cgroup.controllers (not delegated)"
                    .into(),
            });
        }
        match write_file(&ctl, "+memory", "enable +memory in") {
            Ok(()) => {
                return Ok(V2Restore {
                    supervisor_leaf: None,
                    enabled_memory: true,
                });
            }
            Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        // EBUSY: the own cgroup holds processes. Move this process into a leaf if it is alone.
        let procs = read_pids(&own.join("cgroup.procs"));
        if procs != [std::process::id()] {
            return Err(CgroupError::NotDelegated {
                dir: own.clone(),
                reason: format!(
                    "it holds processes {procs:?} besides spillway, and a cgroup with processes cannot enable controllers for its children"
                ),
            });
        }
        let leaf = own.join(format!("{}-supervisor", self.name));
        std::fs::create_dir(&leaf).map_err(io_err("create", &leaf))?;
        let moved = write_file(&leaf.join("cgroup.procs"), "0", "move spillway into")
            .and_then(|()| write_file(&ctl, "+memory", "enable +memory in"));
        if let Err(e) = moved {
            let _ = write_file(&own.join("cgroup.procs"), "0", "move back");
            let _ = std::fs::remove_dir(&leaf);
            return Err(e);
        }
        Ok(V2Restore {
            supervisor_leaf: Some(leaf),
            enabled_memory: true,
        })
    }

    /// The cgroup's name, `spillway-<pid>-<nonce>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> CgroupVersion {
        self.own.version
    }

    /// The directory of the memory controller's files.
    pub fn memory_dir(&self) -> &Path {
        &self.memory_dir
    }

    /// The directory in the cgroup2 tree on a hybrid host.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified_dir.as_deref()
    }

    /// This cgroup seen as a process inside it would discover it.
    pub fn as_own(&self) -> OwnCgroup {
        let pressure_dir = match self.own.version {
            CgroupVersion::V2 => Some(self.memory_dir.clone()),
            CgroupVersion::V1 => self.unified_dir.clone(),
        };
        OwnCgroup {
            version: self.own.version,
            memory_dir: self.memory_dir.clone(),
            memory_mount: self.own.memory_mount.clone(),
            pressure_file: pressure_dir.map(|d| d.join("memory.pressure")),
            unified_dir: self.unified_dir.clone(),
        }
    }

    /// Sets the limit (and no swap); returns it as read back.
    pub fn set_limit(&self, bytes: u64) -> Result<u64, CgroupError> {
        set_memory_limit(&self.own, self.own.version, &self.memory_dir, bytes)
    }

    /// The `cgroup.procs` files a child writes `0` to in `pre_exec`, opened for writing now.
    pub fn open_procs_files(&self) -> Result<Vec<File>, CgroupError> {
        let mut files = Vec::new();
        for dir in std::iter::once(&self.memory_dir).chain(self.unified_dir.as_ref()) {
            let p = dir.join("cgroup.procs");
            files.push(
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(io_err("open", &p))?,
            );
        }
        Ok(files)
    }

    /// The processes inside (v1 and v2 `cgroup.procs`).
    pub fn procs(&self) -> Vec<u32> {
        read_pids(&self.memory_dir.join("cgroup.procs"))
    }

    /// Reads the counters now.
    pub fn stats(&self) -> CgroupStats {
        let d = &self.memory_dir;
        let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
        let mut s = CgroupStats::default();
        match self.own.version {
            CgroupVersion::V1 => {
                s.usage_bytes = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
                s.peak_bytes = read_u64(&d.join("memory.max_usage_in_bytes"));
                if let Some(v) = read_u64(&d.join("memory.failcnt")) {
                    s.events.insert("failcnt".into(), v);
                }
                if let Some(text) = read("memory.oom_control") {
                    s.events.extend(keyed(&text));
                }
                s.oom_kill = s.events.get("oom_kill").copied().unwrap_or(0);
                if let Some(text) = read("memory.stat") {
                    for k in ["rss", "cache", "shmem", "mapped_file", "dirty", "writeback"] {
                        if let Some(v) = stat_value(&text, k) {
                            s.stat.insert(k.into(), v);
                        }
                    }
                }
            }
            CgroupVersion::V2 => {
                s.usage_bytes = read_u64(&d.join("memory.current")).unwrap_or(0);
                s.peak_bytes = read_u64(&d.join("memory.peak"));
                if let Some(text) = read("memory.events") {
                    s.events = keyed(&text);
                }
                s.oom_kill = s.events.get("oom_kill").copied().unwrap_or(0);
                if let Some(text) = read("memory.stat") {
                    for k in ["anon", "file", "shmem", "file_dirty", "file_writeback"] {
                        if let Some(v) = stat_value(&text, k) {
                            s.stat.insert(k.into(), v);
                        }
                    }
                }
            }
        }
        s.psi = self
            .as_own()
            .pressure_file
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| parse_psi(&t));
        s
    }

    /// SIGKILLs everything inside: v2 `cgroup.kill` (5.14+) where present, else a kill loop
    /// over `cgroup.procs` until it stays empty. Does not reap: the caller waits for its own
    /// children. Returns whether the cgroup emptied.
    pub fn kill_all(&self) -> bool {
        kill_cgroup(&self.memory_dir, self.own.version)
    }

    /// Kills what is left, waits for the cgroup to empty and removes it (and the cgroup2
    /// directory of a hybrid host), retrying EBUSY for up to ~5 s.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        if !self.kill_all() {
            return Err(CgroupError::StillPopulated {
                path: self.memory_dir.clone(),
                pids: self.procs(),
            });
        }
        let mut first_err = None;
        for dir in std::iter::once(self.memory_dir.clone()).chain(self.unified_dir.clone()) {
            if let Err(e) = rmdir_retry(&dir)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        if let Some(r) = self.v2_restore.take() {
            let own = &self.own.memory_dir;
            if r.enabled_memory {
                let _ = write_file(
                    &own.join("cgroup.subtree_control"),
                    "-memory",
                    "disable -memory in",
                );
            }
            if let Some(leaf) = r.supervisor_leaf {
                let _ = write_file(&own.join("cgroup.procs"), "0", "move spillway back into");
                let _ = rmdir_retry(&leaf);
            }
        }
        self.removed = true;
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove_inner() {
            crate::log::warn("cgroup", &format!("cgroup left behind: {e}"));
        }
    }
}

fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process of the cgroup at `dir` and waits (up to ~5 s) until it is empty.
fn kill_cgroup(dir: &Path, version: CgroupVersion) -> bool {
    let procs = dir.join("cgroup.procs");
    if !procs.exists() {
        return true;
    }
    let kill_file = dir.join("cgroup.kill");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = read_pids(&procs);
        if pids.is_empty() {
            return true;
        }
        if version == CgroupVersion::V2 && kill_file.exists() {
            let _ = write_file(&kill_file, "1", "kill");
        } else {
            for pid in pids {
                let _ = crate::proc_ctl::send_signal(pid, crate::proc_ctl::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            return read_pids(&procs).is_empty();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `rmdir` with retries: a just-emptied memcg can report EBUSY for a moment.
fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err("remove", dir)(e)),
        }
    }
}

/// The owner pid of a `spillway-<pid>-<nonce>[-supervisor]` name.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("spillway-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Removes `spillway-<pid>-*` cgroups below the own cgroup (both trees) whose owner `pid` is no
/// longer alive: kills what is left in the memory tree (the own cgroup's subtree is ours), then
/// `rmdir`s. In the cgroup2 tree of a hybrid host (shared with others) it only `rmdir`s, which
/// fails harmlessly on a populated cgroup. Returns the directories removed.
pub fn sweep_stale(own: &OwnCgroup) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let trees = [
        (Some(own.memory_dir.clone()), true),
        (own.unified_dir.clone(), false),
    ];
    for (dir, may_kill) in trees {
        let Some(dir) = dir else { continue };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name) else {
                continue;
            };
            if !e.path().is_dir() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = e.path();
            if may_kill {
                kill_cgroup(&path, own.version);
            }
            if std::fs::remove_dir(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnCgroup {
        OwnCgroup {
            version: CgroupVersion::V1,
            memory_dir: PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
            memory_mount: PathBuf::from("/sys/fs/cgroup/memory"),
            pressure_file: None,
            unified_dir: Some(PathBuf::from("/sys/fs/cgroup/unified")),
        }
    }

    #[test]
    fn only_strict_descendants_may_be_limited() {
        let o = own();
        assert!(check_limit_target(&o, &o.memory_dir.join("spillway-1-2")).is_ok());
        for bad in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/memory/",
            "/sys/fs/cgroup/memory/process_api/abc",
            "/sys/fs/cgroup/memory/process_api/abc/",
            "/sys/fs/cgroup/memory/process_api",
            "/sys/fs/cgroup/memory/process_api/abc/../def",
            "/",
        ] {
            assert!(
                check_limit_target(&o, Path::new(bad)).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn owner_pids_parse() {
        assert_eq!(owner_pid("spillway-123-abc"), Some(123));
        assert_eq!(owner_pid("spillway-123-abc-supervisor"), Some(123));
        assert_eq!(owner_pid("spillway-x-abc"), None);
        assert_eq!(owner_pid("other-1-2"), None);
    }
}
