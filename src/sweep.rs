//! Start-up sweep of what a dead run left in the local directories: the private
//! `spillway-blockmgr-<pid>-*` directories of processes that no longer exist.
//!
//! A run removes its private directories when its `DiskBlockManager` drops; only a run that
//! died without unwinding (SIGKILL, an OOM kill, `panic = "abort"`) leaves one behind, with
//! its spill and block files (possibly without a footer: the reader refuses those as
//! `Truncated`). The next run removes them before it starts, under these rules:
//!
//! - only directories named `spillway-blockmgr-<pid>-<suffix>` directly in a configured local
//!   directory, that are real directories (never a symlink) owned by the user running the sweep;
//! - only when `<pid>` is not this process and `/proc/<pid>` does not exist. A live process —
//!   another run, or an unrelated process that reused the pid — keeps its directories: a
//!   reused pid only delays the sweep to a later run, it never deletes a live run's files.
//!   (Runs in another pid namespace sharing the directory are not told apart; give them their
//!   own `spark.local.dir`.)
//!
//! Cgroups are swept by [`crate::pressure::control::sweep_stale`] (the `--cgroup` supervisor),
//! and worker processes exit on their own when their stdin closes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::storage::disk::PRIVATE_DIR_PREFIX;

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Directories of dead owners, removed.
    pub removed: Vec<PathBuf>,
    /// Directories of live owners (or this process), left alone.
    pub live: Vec<PathBuf>,
    /// Directories that could not be removed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// The owner pid of a private directory name `spillway-blockmgr-<pid>-<suffix>`.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PRIVATE_DIR_PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether a process `pid` exists (a zombie counts: it is not yet reaped, so not yet gone).
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The effective uid of this process (the owner of `/proc/self`).
fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Removes the private directories of dead owners directly under each of `roots`.
pub fn sweep_local_dirs(roots: &[PathBuf]) -> SweepReport {
    let mut report = SweepReport::default();
    let Some(uid) = own_uid() else {
        return report;
    };
    let me = std::process::id();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(owner_pid) else {
                continue;
            };
            let path = e.path();
            // lstat: a symlink named like ours is never followed, and never ours.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.file_type().is_dir() || meta.uid() != uid {
                continue;
            }
            if pid == me || pid_alive(pid) {
                report.live.push(path);
                continue;
            }
            // `remove_dir_all` does not follow symlinks inside the tree.
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    crate::log::warn(
                        "DiskBlockManager",
                        &format!("removed {} left by dead process {pid}", path.display()),
                    );
                    report.removed.push(path);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => report.failed.push((path, err.to_string())),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("spillway-blockmgr-1234-abc"), Some(1234));
        assert_eq!(owner_pid("spillway-blockmgr-1234-"), None);
        assert_eq!(owner_pid("spillway-blockmgr--abc"), None);
        assert_eq!(owner_pid("spillway-blockmgr-12a4-abc"), None);
        assert_eq!(owner_pid("spillway-blockmgr-0-abc"), None);
        assert_eq!(owner_pid("spillway-1234-abc"), None);
        assert_eq!(owner_pid("blockmgr-1234-abc"), None);
    }

    #[test]
    fn sweeps_dead_owners_only() {
        let root = tempfile::tempdir().unwrap();
        // A pid above pid_max never exists; this process and pid 1 always do.
        let dead = root.path().join("spillway-blockmgr-99999999-x1");
        let mine = root
            .path()
            .join(format!("spillway-blockmgr-{}-x2", std::process::id()));
        let init = root.path().join("spillway-blockmgr-1-x3");
        let other = root.path().join("unrelated-99999999-x4");
        for d in [&dead, &mine, &init, &other] {
            std::fs::create_dir_all(d.join("0a")).unwrap();
            std::fs::write(d.join("0a/temp_local_0"), b"partial").unwrap();
        }
        let link = root.path().join("spillway-blockmgr-99999998-x5");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        let r = sweep_local_dirs(&[root.path().to_path_buf()]);
        assert_eq!(r.removed, vec![dead.clone()]);
        assert!(!dead.exists());
        for d in [&mine, &init, &other] {
            assert!(d.join("0a/temp_local_0").exists(), "{}", d.display());
        }
        assert!(link.exists(), "a symlink is never followed or removed");
        assert_eq!(r.live.len(), 2, "{r:?}");
    }
}
