//! Local directories and the disk store: Spark's `DiskBlockManager` and `DiskStore`.
//!
//! Each configured local directory gets a private `spillway-blockmgr-<pid>-<random>` directory
//! (mode 0700) holding 64 sub-directories created on demand, and a file's place is Spark's:
//! `hash = nonNegativeHash(name)`, directory `hash % dirs`, sub-directory
//! `(hash / dirs) % 64`. Everything under it is removed when the manager drops, on success or
//! failure. Blocks and spills are written in spillway's checksummed format ([`crate::spill`]).
//!
//! # When a local directory fails
//!
//! Spark places a file by the hash of its name and does not fail over: a spill or block write
//! that hits a full, read-only or vanished directory throws an `IOException` and fails the task.
//! So does spillway by default: every file goes to its hashed directory, and a failure there is
//! the task's typed error. Local directories that cannot be created are left out at start-up
//! (Spark's `createLocalDirs`), so the hash spreads files over the usable ones only.
//!
//! With `spillway.localDir.failover=true` (not Spark's behaviour, off by default) spillway keeps a
//! second chance inside the task:
//!
//! - creating a file ([`DiskBlockManager::create_file`], used by the disk store) tries the
//!   hashed directory first, then the others in order, when creation fails because the
//!   directory is unusable (ENOSPC, EDQUOT, EROFS, EACCES, or ENOENT — the private directory
//!   was deleted under the run);
//! - writing a temporary spill ([`DiskBlockManager::write_temp_file`], used by the sorter and
//!   the aggregation, whose records are still in memory until the spill succeeds) does the
//!   same for a failure at any point of the write: the partial file is deleted and the whole
//!   spill is written again in the next directory.
//!
//! Under failover, a directory that failed that way is tried last from then on. EIO, EFBIG (`RLIMIT_FSIZE`,
//! process-wide) and EMFILE are not directory faults and fail at once. When every directory
//! fails, the error is the typed [`SpillError`] of the last attempt, naming its file.
//!
//! Sub-directories are created with mode 0700 and never with their parents, so a private
//! directory deleted mid-run is a typed `NotFound` error, not silently re-created.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::conf::{ConfError, SparkConf, keys};
use crate::data::RecordSource;
use crate::spill::{
    SpillError, SpillFileInfo, SpillKind, SpillReader, SpillSink, SpillWriter, SpillWriterOptions,
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

/// The prefix of every private local directory: `spillway-blockmgr-<pid>-<random>`.
pub const PRIVATE_DIR_PREFIX: &str = "spillway-blockmgr-";

/// Environment variable injecting a [`DiskFault`] into every `DiskBlockManager` built by
/// [`DiskBlockManager::from_conf`] (tests and the `spill-disk-full` case without root):
/// `ERRNO[@BYTES][:DIR]`, ERRNO one of `enospc`, `eio`, `erofs`, `edquot`; BYTES the bytes a
/// file may take before writes fail (absent: creating the file fails); DIR the index of the
/// local directory it applies to (absent: all).
pub const DISK_FAULT_ENV: &str = "SPILLWAY_DISK_FAULT";

/// An injected disk fault: a failpoint in front of the files a [`DiskBlockManager`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFault {
    /// The error returned, e.g. `libc::ENOSPC`.
    pub errno: i32,
    /// `Some(n)`: each file accepts `n` bytes, then its writes fail (after a short write, as
    /// a filling disk does). `None`: creating the file fails.
    pub after_bytes: Option<u64>,
    /// Only files in this local directory (index into [`DiskBlockManager::dirs`]); `None`: all.
    pub dir: Option<usize>,
}

impl DiskFault {
    /// Parses the [`DISK_FAULT_ENV`] syntax.
    pub fn parse(text: &str) -> Result<DiskFault, String> {
        let (rest, dir) = match text.split_once(':') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse()
                        .map_err(|_| format!("bad directory index in {text:?}"))?,
                ),
            ),
            None => (text, None),
        };
        let (name, after_bytes) = match rest.split_once('@') {
            Some((n, b)) => (
                n,
                Some(
                    b.parse()
                        .map_err(|_| format!("bad byte count in {text:?}"))?,
                ),
            ),
            None => (rest, None),
        };
        let errno = match name.to_ascii_lowercase().as_str() {
            "enospc" => libc::ENOSPC,
            "eio" => libc::EIO,
            "erofs" => libc::EROFS,
            "edquot" => libc::EDQUOT,
            _ => return Err(format!("unknown errno {name:?} in {text:?}")),
        };
        Ok(DiskFault {
            errno,
            after_bytes,
            dir,
        })
    }
}

/// The sink of every file a [`DiskBlockManager`] creates: the file, behind an optional
/// [`DiskFault`].
pub struct DiskSink {
    file: File,
    /// `Some((budget, errno))`: bytes still accepted, then the error.
    fault: Option<(u64, i32)>,
}

impl SpillSink for DiskSink {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.fault {
            None => SpillSink::write_all(&mut self.file, buf),
            Some((budget, errno)) => {
                let fits = (buf.len() as u64).min(*budget) as usize;
                SpillSink::write_all(&mut self.file, &buf[..fits])?;
                *budget -= fits as u64;
                if fits < buf.len() {
                    return Err(io::Error::from_raw_os_error(*errno));
                }
                Ok(())
            }
        }
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Whether an I/O error says the directory is unusable (full, read-only, gone, not ours), so
/// that another local directory may succeed.
fn is_dir_fault(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::NotFound
    )
}

/// The directories a run writes blocks and spills into (Spark's `DiskBlockManager`).
pub struct DiskBlockManager {
    dirs: Vec<tempfile::TempDir>,
    /// Per directory: a file creation or write failed there with a directory fault.
    failed: Vec<AtomicBool>,
    counter: AtomicU64,
    buffer_bytes: usize,
    /// `spillway.localDir.failover`: try the other directories after a directory fault.
    failover: bool,
    fault: Mutex<Option<DiskFault>>,
    /// The directories in the cleanup registry of a second signal (crate::interrupt); declared
    /// after `dirs`, so they leave it only once deleted.
    _cleanup: Vec<crate::interrupt::Registration>,
}

impl DiskBlockManager {
    /// Local directories as Spark resolves them (`Utils.getConfiguredLocalDirs`):
    /// `SPARK_EXECUTOR_DIRS`, else `SPARK_LOCAL_DIRS`, else `spark.local.dir`, else the temp
    /// directory; comma-separated. A directory that cannot be used is skipped with a warning.
    pub fn from_conf(conf: &SparkConf) -> Result<DiskBlockManager, LocalDirError> {
        let roots = Self::configured_roots(conf);
        // 1..=2097151 KiB (Spark's check) by the key table's limits.
        let buffer_kib = conf.get_size(keys::SHUFFLE_FILE_BUFFER)?;
        let mut dbm = Self::new(&roots, buffer_kib as usize * 1024)?;
        dbm.failover = conf.get_bool(keys::LOCAL_DIR_FAILOVER)?;
        if let Ok(text) = std::env::var(DISK_FAULT_ENV) {
            let fault = DiskFault::parse(&text).map_err(|reason| LocalDirError::NoLocalDir {
                tried: format!("{DISK_FAULT_ENV}={text}"),
                reason,
            })?;
            crate::log::warn(
                "DiskBlockManager",
                &format!("injecting disk fault {fault:?} ({DISK_FAULT_ENV})"),
            );
            dbm.set_fault(Some(fault));
        }
        Ok(dbm)
    }

    /// The configured local directories (`Utils.getConfiguredLocalDirs`), before any is created.
    pub fn configured_roots(conf: &SparkConf) -> Vec<PathBuf> {
        let configured = std::env::var("SPARK_EXECUTOR_DIRS")
            .ok()
            .or_else(|| std::env::var("SPARK_LOCAL_DIRS").ok())
            .or_else(|| conf.get(keys::LOCAL_DIR).map(str::to_string))
            .unwrap_or_else(|| std::env::temp_dir().display().to_string());
        configured
            .split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    /// Injects (or clears) a fault in front of every file created from now on.
    pub fn set_fault(&self, fault: Option<DiskFault>) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Creates a private directory in each of `roots`.
    pub fn new(roots: &[PathBuf], buffer_bytes: usize) -> Result<DiskBlockManager, LocalDirError> {
        let mut dirs = Vec::new();
        let mut last_error = String::from("no directory given");
        for root in roots {
            let made = std::fs::create_dir_all(root).and_then(|()| {
                // 0700 explicitly: tempfile creates directories 0777 & umask (0755).
                tempfile::Builder::new()
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .prefix(&format!("{PRIVATE_DIR_PREFIX}{}-", std::process::id()))
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
            failed: dirs.iter().map(|_| AtomicBool::new(false)).collect(),
            _cleanup: dirs
                .iter()
                .map(|d| crate::interrupt::register_dir(d.path()))
                .collect(),
            dirs,
            counter: AtomicU64::new(0),
            buffer_bytes,
            failover: false,
            fault: Mutex::new(None),
        })
    }

    /// The private directories, one per usable local directory.
    pub fn dirs(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path()).collect()
    }

    /// Indexes of the directories where a file creation or write failed with a directory
    /// fault (tried last from then on).
    pub fn failed_dirs(&self) -> Vec<usize> {
        (0..self.dirs.len())
            .filter(|&d| self.failed[d].load(Ordering::Relaxed))
            .collect()
    }

    /// `spark.shuffle.file.buffer` in bytes.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// `getFile(filename)`: where a file of this name lives (its sub-directory is created).
    pub fn file(&self, name: &str) -> io::Result<PathBuf> {
        self.file_in(self.home_dir(name), name)
    }

    /// The index of the directory a name hashes to (Spark's placement).
    fn home_dir(&self, name: &str) -> usize {
        non_negative_hash(name) as usize % self.dirs.len()
    }

    /// `name`'s path in directory `dir` (its hashed sub-directory created, mode 0700, but never
    /// the private directory itself: a deleted one stays deleted and this fails `NotFound`).
    fn file_in(&self, dir: usize, name: &str) -> io::Result<PathBuf> {
        let hash = non_negative_hash(name) as usize;
        let sub = (hash / self.dirs.len()) % SUB_DIRS_PER_LOCAL_DIR;
        let sub_dir = self.dirs[dir].path().join(format!("{sub:02x}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&sub_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && sub_dir.is_dir() => {}
            Err(e) => return Err(e),
        }
        Ok(sub_dir.join(name))
    }

    /// Whether a file that failed for its directory is written again in the next one
    /// (`spillway.localDir.failover`; Spark fails the task).
    pub fn fails_over(&self) -> bool {
        self.failover
    }

    /// Directories in the order to try for `name`: its hashed one only (Spark), or with
    /// `spillway.localDir.failover` then the others in order, those that failed before last.
    fn try_order(&self, name: &str) -> Vec<usize> {
        let n = self.dirs.len();
        let home = self.home_dir(name);
        if !self.failover {
            return vec![home];
        }
        let mut order: Vec<usize> = (0..n).map(|i| (home + i) % n).collect();
        order.sort_by_key(|&d| self.failed[d].load(Ordering::Relaxed));
        order
    }

    /// A fresh file name for a spill (`createTempLocalBlock`: `temp_local_<n>`).
    pub fn temp_file(&self, prefix: &str) -> io::Result<PathBuf> {
        self.file(&self.temp_name(prefix))
    }

    fn temp_name(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{n}")
    }

    /// Creates the file `name` (mode 0600) in directory `dir`, behind the injected fault.
    fn create_in(
        &self,
        dir: usize,
        name: &str,
        opts: &SpillWriterOptions,
    ) -> Result<SpillWriter<DiskSink>, SpillError> {
        let fault = *self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let fault = fault.filter(|f| f.dir.is_none_or(|d| d == dir));
        let path = match self.file_in(dir, name) {
            Ok(p) => p,
            Err(e) => {
                let at = self.dirs[dir].path().join(name);
                return Err(SpillError::io(&at, "create sub-directory", 0, e));
            }
        };
        if let Some(DiskFault {
            errno,
            after_bytes: None,
            ..
        }) = fault
        {
            return Err(SpillError::io(
                &path,
                "create",
                0,
                io::Error::from_raw_os_error(errno),
            ));
        }
        SpillWriter::create_with_sink(&path, opts.clone(), |file| {
            Ok(DiskSink {
                file,
                fault: fault.and_then(|f| f.after_bytes.map(|b| (b, f.errno))),
            })
        })
    }

    fn note_failure(&self, dir: usize, err: &SpillError, remaining: usize) {
        if err.io_kind().is_some_and(is_dir_fault) {
            self.failed[dir].store(true, Ordering::Relaxed);
            if remaining > 0 {
                crate::log::warn(
                    "DiskBlockManager",
                    &format!("{err}; trying the next local directory"),
                );
            }
        }
    }

    /// Creates the file `name` for writing, failing over to the next local directory when
    /// creation fails with a directory fault (see the module docs).
    pub fn create_file(
        &self,
        name: &str,
        opts: &SpillWriterOptions,
    ) -> Result<SpillWriter<DiskSink>, SpillError> {
        self.with_failover(name, |dir| self.create_in(dir, name, opts))
    }

    /// Runs `attempt` in the local directories in `try_order`, moving to the next one only
    /// when it fails with a directory fault; returns the first success or the last error.
    fn with_failover<T>(
        &self,
        name: &str,
        mut attempt: impl FnMut(usize) -> Result<T, SpillError>,
    ) -> Result<T, SpillError> {
        let order = self.try_order(name);
        let mut last = None;
        for (i, &dir) in order.iter().enumerate() {
            match attempt(dir) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.note_failure(dir, &e, order.len() - i - 1);
                    let retry = e.io_kind().is_some_and(is_dir_fault);
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last.expect("at least one local directory"))
    }

    /// Writes a new temporary file (`createTempLocalBlock`, named `<prefix>_<n>`): `feed`
    /// writes every record, and may be called again for another directory if the write fails
    /// with a directory fault (the partial file is deleted first). Returns the finished file.
    pub fn write_temp_file(
        &self,
        prefix: &str,
        opts: &SpillWriterOptions,
        feed: &mut dyn FnMut(&mut SpillWriter<DiskSink>) -> Result<(), SpillError>,
    ) -> Result<SpillFileInfo, SpillError> {
        let name = self.temp_name(prefix);
        self.with_failover(&name, |dir| {
            let mut w = self.create_in(dir, &name, opts)?;
            feed(&mut w)?;
            w.finish()
        })
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

/// Feeds records to a block's writer. It gets the writer itself, not a callback per record,
/// so that its loop over the records inlines `write_record` (one indirect call per record was
/// a tenth of an eviction's CPU time).
pub type RecordFeeder<'a> = dyn FnMut(&mut SpillWriter<DiskSink>) -> Result<(), SpillError> + 'a;

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
        let mut opts = SpillWriterOptions::new(SpillKind::Block);
        opts.buffer_bytes = self.dirs.buffer_bytes();
        // Uncompressed (`opts.codec` stays `None`): a block file holds its records in
        // spillway's framed format, not the serializer stream `spark.rdd.compress` compresses
        // (true in 4.3.0; applied to serialized blocks in memory, docs/spark-model.md §21.9).
        // The spills of sorts and aggregations, `TempLocalBlockId`s, follow
        // `spark.shuffle.spill.compress` instead (`Executor::compression`).
        let mut writer = self.dirs.create_file(&name, &opts)?;
        let path = writer.path().to_path_buf();
        prefix(&mut writer)?;
        if let Some(src) = source {
            while let Some(r) = src.next_record() {
                writer.write_record(r)?;
            }
        }
        // A signal may have cut the source short: an unfinished writer deletes its file, so
        // no truncated block is ever kept.
        crate::interrupt::check()?;
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
