//! Shared by the `faults_*` tests: root detection, a tmpfs mount guard, executors over given
//! local directories, and file walks.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;

/// Whether this process is root (mounts need CAP_SYS_ADMIN; root also bypasses file modes, so
/// read-only tests need a read-only mount rather than chmod).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A tmpfs mounted on a fresh temporary directory; unmounted (lazily if busy) and removed on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=8m`). `Err(reason)` when not root or when
    /// mounting is refused (no CAP_SYS_ADMIN in a container).
    pub fn mount(options: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not root: mounting a tmpfs needs CAP_SYS_ADMIN".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("spillway-faults-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "spillway-faults"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts read-only (`ro = true`) or read-write.
    pub fn remount(&self, ro: bool) {
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        let st = Command::new("mount")
            .args(["-o", opt])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -o {opt}");
    }

    /// Free bytes (`statvfs` f_bavail × f_bsize through stat(1): no unsafe in tests).
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Vec<u64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        v[0] * v[1]
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// An executor whose `spark.local.dir` lists `dirs` in order.
pub fn executor(dirs: &[&Path], extra: &[(&str, &str)]) -> Executor {
    let mut conf = SparkConf::new();
    conf.set("spark.executor.memory", "512m");
    conf.set("spark.executor.cores", "1");
    let joined = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    conf.set("spark.local.dir", &joined);
    for (k, v) in extra {
        conf.set(k, v);
    }
    let layout = Layout::from_conf(&conf, None).unwrap();
    Executor::start(&layout, &conf).unwrap()
}

/// Every regular file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The `spillway-blockmgr-*` directories directly under `dir`.
pub fn private_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("spillway-blockmgr-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The spillway binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_spillway")
}
