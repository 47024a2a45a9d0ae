//! The one way spillway writes an output file: to a temporary file beside it, flushed to disk,
//! then renamed over the target, so a reader (or a run that dies half-way) never sees half a
//! file. report.json, timeline.csv and the plots (drawn in memory first) all go through here.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name `path` is written under before the rename: hidden, and unique to this
/// process, so two writers of one directory never share a temporary.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: write, fsync, rename, fsync the directory (so the new
/// name survives a crash too). On any error, and on a second signal while writing
/// (`crate::interrupt`), the temporary is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let _cleanup = crate::interrupt::register_file(&tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn a_failed_write_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        assert!(write_atomic(&path, b"data").is_err());
        assert!(!temp_path(&path).exists());
    }
}
