//! The one way spillway writes an output file: to a temporary file beside it, flushed to disk,
//! then renamed over the target, so a reader (or a run that dies half-way) never sees half a
//! file. report.json, timeline.csv and the plots all go through here.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name `path` is written under before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: write, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    commit(&tmp, path, result)
}

/// Finishes a file another writer produced at [`temp_path`] (a plot): fsync, then rename over
/// `path`. On any error the temporary file is removed.
pub fn commit_written(path: &Path) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = std::fs::File::open(&tmp).and_then(|f| f.sync_all());
    commit(&tmp, path, result)
}

fn commit(tmp: &Path, path: &Path, written: std::io::Result<()>) -> std::io::Result<()> {
    let result = written.and_then(|()| std::fs::rename(tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
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
