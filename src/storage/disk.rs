//! Local directories and the disk store: Spark's `DiskBlockManager` and `DiskStore`.
//!
//! Each configured local directory gets a private `spillway-blockmgr-<pid>-<random>` directory
//! (mode 0700) holding 64 sub-directories created on demand, and a file's place is Spark's:
//! `hash = nonNegativeHash(name)`, directory `hash % dirs`, sub-directory
//! `(hash / dirs) % 64`. Everything under it is removed when the manager drops, on success or
//! failure. Blocks and spills are written in spillway's checksummed format ([`crate::spill`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::conf::{ConfError, SparkConf, keys};
use crate::data::RecordSource;
use crate::spill::{
    SpillError, SpillFileInfo, SpillKind, SpillReader, SpillWriter, SpillWriterOptions,
};

use super::BlockId;

/// `spark.diskStore.subDirectories`.
pub const SUB_DIRS_PER_LOCAL_DIR: usize = 64;

/// Why local directories could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalDirError {
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// Spark: "Failed to create any local dir."
    #[error("Failed to create any local dir. Tried: {tried} ({reason})")]
    NoLocalDir { tried: String, reason: String },
}

/// The directories a run writes blocks and spills into (Spark's `DiskBlockManager`).
pub struct DiskBlockManager {
    dirs: Vec<tempfile::TempDir>,
    counter: AtomicU64,
    buffer_bytes: usize,
}

impl DiskBlockManager {
    /// Local directories as Spark resolves them (`Utils.getConfiguredLocalDirs`):
    /// `SPARK_EXECUTOR_DIRS`, else `SPARK_LOCAL_DIRS`, else `spark.local.dir`, else the temp
    /// directory; comma-separated. A directory that cannot be used is skipped with a warning.
    pub fn from_conf(conf: &SparkConf) -> Result<DiskBlockManager, LocalDirError> {
        let configured = std::env::var("SPARK_EXECUTOR_DIRS")
            .ok()
            .or_else(|| std::env::var("SPARK_LOCAL_DIRS").ok())
            .or_else(|| conf.get(keys::LOCAL_DIR).map(str::to_string))
            .unwrap_or_else(|| std::env::temp_dir().display().to_string());
        let roots: Vec<PathBuf> = configured
            .split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        let buffer_kib = conf.size(keys::SHUFFLE_FILE_BUFFER)?.unwrap_or(32);
        if buffer_kib <= 0 || buffer_kib > (i32::MAX as i64 - 15) / 1024 {
            return Err(ConfError::CheckFailed {
                key: keys::SHUFFLE_FILE_BUFFER.to_string(),
                value: buffer_kib.to_string(),
                message: "The file buffer size must be positive and less than or equal to 2097151.",
            }
            .into());
        }
        Self::new(&roots, buffer_kib as usize * 1024)
    }

    /// Creates a private directory in each of `roots`.
    pub fn new(roots: &[PathBuf], buffer_bytes: usize) -> Result<DiskBlockManager, LocalDirError> {
        let mut dirs = Vec::new();
        let mut last_error = String::from("no directory given");
        for root in roots {
            let made = std::fs::create_dir_all(root).and_then(|()| {
                tempfile::Builder::new()
                    .prefix(&format!("spillway-blockmgr-{}-", std::process::id()))
                    .tempdir_in(root)
            });
            match made {
                Ok(d) => dirs.push(d),
                Err(e) => {
                    last_error = format!("{}: {e}", root.display());
                    crate::log::warn(
                        "DiskBlockManager",
                        &format!(
                            "Failed to create local dir in {}. Ignoring this directory. {e}",
                            root.display()
                        ),
                    );
                }
            }
        }
        if dirs.is_empty() {
            return Err(LocalDirError::NoLocalDir {
                tried: roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                reason: last_error,
            });
        }
        Ok(DiskBlockManager {
            dirs,
            counter: AtomicU64::new(0),
            buffer_bytes,
        })
    }

    /// The private directories, one per usable local directory.
    pub fn dirs(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path()).collect()
    }

    /// `spark.shuffle.file.buffer` in bytes.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// `getFile(filename)`: where a file of this name lives (its sub-directory is created).
    pub fn file(&self, name: &str) -> std::io::Result<PathBuf> {
        let hash = non_negative_hash(name) as usize;
        let dir = hash % self.dirs.len();
        let sub = (hash / self.dirs.len()) % SUB_DIRS_PER_LOCAL_DIR;
        let sub_dir = self.dirs[dir].path().join(format!("{sub:02x}"));
        std::fs::create_dir_all(&sub_dir)?;
        Ok(sub_dir.join(name))
    }

    /// A fresh file name for a spill (`createTempLocalBlock`: `temp_local_<n>`).
    pub fn temp_file(&self, prefix: &str) -> std::io::Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.file(&format!("{prefix}_{n}"))
    }

    /// Files currently under the private directories (for clean-up checks).
    pub fn file_count(&self) -> usize {
        fn count(p: &Path) -> usize {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let p = e.path();
                            if p.is_dir() { count(&p) } else { 1 }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        self.dirs.iter().map(|d| count(d.path())).sum()
    }
}

/// Java's `String.hashCode`, made non-negative as `Utils.nonNegativeHash` does.
fn non_negative_hash(s: &str) -> u32 {
    let mut h: i32 = 0;
    for unit in s.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    if h == i32::MIN { 0 } else { h.unsigned_abs() }
}

/// Feeds records to a writer: called with a function that writes one record.
pub type RecordFeeder<'a> =
    dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<(), SpillError>) -> Result<(), SpillError> + 'a;

/// A block on disk.
#[derive(Debug, Clone)]
pub struct DiskBlock {
    pub path: PathBuf,
    pub info: SpillFileInfo,
}

/// Spark's `DiskStore`: blocks as files under the local directories.
pub struct DiskStore {
    dirs: std::sync::Arc<DiskBlockManager>,
    blocks: Mutex<HashMap<BlockId, DiskBlock>>,
}

impl DiskStore {
    /// A disk store over these directories.
    pub fn new(dirs: std::sync::Arc<DiskBlockManager>) -> DiskStore {
        DiskStore {
            dirs,
            blocks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, DiskBlock>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a block's records (`prefix` first, then the rest of `source`). A failed write
    /// leaves no file behind.
    pub fn put(
        &self,
        block: &BlockId,
        prefix: &mut RecordFeeder<'_>,
        source: Option<&mut dyn RecordSource>,
    ) -> Result<DiskBlock, SpillError> {
        let name = block.to_string();
        let path = self
            .dirs
            .file(&name)
            .map_err(|e| SpillError::io(Path::new(&name), "create directory", 0, e))?;
        let mut opts = SpillWriterOptions::new(SpillKind::Block);
        opts.buffer_bytes = self.dirs.buffer_bytes();
        let mut writer = SpillWriter::create(&path, opts)?;
        prefix(&mut |r| writer.write_record(r))?;
        if let Some(src) = source {
            while let Some(r) = src.next_record() {
                writer.write_record(r)?;
            }
        }
        let info = writer.finish()?;
        let disk_block = DiskBlock { path, info };
        if let Some(old) = self.lock().insert(block.clone(), disk_block.clone())
            && old.path != disk_block.path
        {
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(disk_block)
    }

    /// Opens a block for reading (every frame is verified as it is read).
    pub fn get(&self, block: &BlockId) -> Option<Result<SpillReader, SpillError>> {
        let path = self.lock().get(block)?.path.clone();
        Some(SpillReader::open(path))
    }

    /// Whether the block is on disk.
    pub fn contains(&self, block: &BlockId) -> bool {
        self.lock().contains_key(block)
    }

    /// The block's file, if on disk.
    pub fn block(&self, block: &BlockId) -> Option<DiskBlock> {
        self.lock().get(block).cloned()
    }

    /// Deletes a block's file.
    pub fn remove(&self, block: &BlockId) -> bool {
        match self.lock().remove(block) {
            Some(b) => {
                let _ = std::fs::remove_file(&b.path);
                true
            }
            None => false,
        }
    }

    /// Blocks on disk.
    pub fn blocks(&self) -> Vec<(BlockId, DiskBlock)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash() {
        // "rdd_1_0".hashCode() in Java.
        assert_eq!(non_negative_hash(""), 0);
        assert_eq!(non_negative_hash("a"), 97);
        assert_eq!(non_negative_hash("rdd_1_0"), 1_054_351_957u32);
    }

    #[test]
    fn files_are_spread_and_removed_with_the_manager() {
        let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let paths: Vec<PathBuf> = roots.iter().map(|r| r.path().to_path_buf()).collect();
        let dbm = DiskBlockManager::new(&paths, 32 << 10).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..32 {
            let f = dbm.file(&format!("rdd_1_{i}")).unwrap();
            std::fs::write(&f, b"x").unwrap();
            seen.insert(f.parent().unwrap().parent().unwrap().to_path_buf());
        }
        assert_eq!(seen.len(), 2, "both local dirs are used");
        assert_eq!(dbm.file_count(), 32);
        let private: Vec<PathBuf> = dbm.dirs().iter().map(|p| p.to_path_buf()).collect();
        drop(dbm);
        for p in private {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }

    #[test]
    fn unusable_dirs_are_skipped_and_none_is_an_error() {
        let good = tempfile::tempdir().unwrap();
        let file = good.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let dbm = DiskBlockManager::new(&[file.clone(), good.path().to_path_buf()], 1024).unwrap();
        assert_eq!(dbm.dirs().len(), 1);
        let err = DiskBlockManager::new(&[file], 1024).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("Failed to create any local dir."),
            "{err}"
        );
    }
}
