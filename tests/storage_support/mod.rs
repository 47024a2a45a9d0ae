//! Shared fixtures of the `storage_*` tests: a small executor (`spark.testing.memory`, no
//! reserved memory) over its own local directory, partition data, digests, and a reference
//! model of Spark's unroll requests (docs/spark-model.md §6.5).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use spillway::conf::SparkConf;
use spillway::data::{PartitionData, RecordIter, RecordSource, stream_seed};
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::memory::MemoryMode;
use spillway::spill::RecordDigest;
use spillway::storage::block_manager::{PutReport, ReadFrom, StorageError};
use spillway::storage::memory_store::MemoryStore;
use spillway::storage::{BlockId, StorageLevel};

/// `spark.testing.memory` of the small executor: 16 MiB, fraction 0.5, so the on-heap
/// unified region M is 8 MiB and the storage region 4 MiB.
pub const SYSTEM_BYTES: u64 = 16 << 20;
pub const UNIFIED_BYTES: u64 = 8 << 20;
pub const STORAGE_REGION_BYTES: u64 = 4 << 20;
/// Bytes of a record (the last of a partition may be shorter).
pub const RECORD_BYTES: u64 = 1000;
/// Spark's defaults: `spark.storage.unrollMemoryThreshold`, `…CheckPeriod`, `…GrowthFactor`.
pub const UNROLL_THRESHOLD: u64 = 1 << 20;
pub const CHECK_PERIOD: u64 = 16;
pub const GROWTH_FACTOR: f64 = 1.5;

/// An executor and the local directory its private block-manager directory lives in.
pub struct Fixture {
    pub ex: Executor,
    pub local: tempfile::TempDir,
}

/// The small executor's configuration, plus `extra` keys.
pub fn conf(local: &std::path::Path, extra: &[(&str, &str)]) -> SparkConf {
    let mut conf = SparkConf::new()
        .with("spark.testing", "true")
        .with("spark.testing.memory", &SYSTEM_BYTES.to_string())
        .with("spark.testing.reservedMemory", "0")
        .with("spark.executor.memory", "16m")
        .with("spark.memory.fraction", "0.5")
        .with("spark.memory.storageFraction", "0.5")
        .with("spark.executor.cores", "1")
        .with("spark.local.dir", &local.display().to_string());
    for (k, v) in extra {
        conf = conf.with(k, v);
    }
    conf
}

pub fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let local = tempfile::tempdir().unwrap();
    let conf = conf(local.path(), extra);
    let layout = Layout::from_conf(&conf, None).unwrap();
    assert_eq!(layout.unified as u64, UNIFIED_BYTES);
    assert_eq!(layout.storage_region as u64, STORAGE_REGION_BYTES);
    let ex = Executor::start(&layout, &conf).unwrap();
    Fixture { ex, local }
}

impl Fixture {
    pub fn store(&self) -> &Arc<MemoryStore> {
        self.ex.block_manager().memory_store()
    }

    /// Puts a partition as one task does (`doPutIterator`), then ends the task (its unroll
    /// memory is released, as `Executor.TaskRunner` does).
    pub fn put(&self, block: &BlockId, level: StorageLevel, data: &PartitionData) -> PutReport {
        let task = self.ex.next_task_attempt_id();
        let report = self
            .ex
            .block_manager()
            .put_partition(block, level, task, data)
            .unwrap();
        assert_eq!(
            report.digest,
            digest(data),
            "{block}: a put consumed other records"
        );
        self.store().release_all_unroll_memory_for_task(task);
        report
    }

    /// `getOrElseUpdate` in a task of its own; also checks that the visitor saw exactly the
    /// records the returned digest covers.
    pub fn read(
        &self,
        block: &BlockId,
        level: StorageLevel,
        data: &PartitionData,
    ) -> Result<(ReadFrom, RecordDigest), StorageError> {
        let task = self.ex.next_task_attempt_id();
        let mut visited = RecordDigest::default();
        let got = self
            .ex
            .block_manager()
            .get_or_compute(block, level, task, data, &mut |r| visited.add(r));
        self.store().release_all_unroll_memory_for_task(task);
        if let Ok((_, d)) = &got {
            assert_eq!(*d, visited, "{block}: the visitor saw other records");
        }
        got
    }

    /// Reads and requires the generator's records from `from`.
    pub fn read_ok(
        &self,
        block: &BlockId,
        level: StorageLevel,
        data: &PartitionData,
        from: ReadFrom,
    ) {
        let (got_from, d) = self
            .read(block, level, data)
            .unwrap_or_else(|e| panic!("{block}: {e}"));
        assert_eq!(got_from, from, "{block}");
        assert_eq!(
            d,
            digest(data),
            "{block} read from {got_from:?}: wrong records"
        );
    }

    pub fn in_memory(&self, block: &BlockId) -> bool {
        self.store().contains(block)
    }

    pub fn on_disk(&self, block: &BlockId) -> bool {
        self.ex.block_manager().disk_store().contains(block)
    }

    pub fn storage_used(&self, mode: MemoryMode) -> u64 {
        self.ex
            .memory_manager()
            .snapshot()
            .mode(mode)
            .storage_used_bytes
    }

    /// The executor's private `spillway-blockmgr-*` directories.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        self.ex
            .local_dirs()
            .dirs()
            .iter()
            .map(|p| p.to_path_buf())
            .collect()
    }
}

pub fn rdd(rdd_id: u32, split_index: u32) -> BlockId {
    BlockId::Rdd {
        rdd_id,
        split_index,
    }
}

pub fn test_block(name: &str) -> BlockId {
    BlockId::Test(name.to_string())
}

/// The records of a block: seeded by its name, `bytes` long, 1000-byte records.
pub fn data(block: &BlockId, bytes: u64) -> PartitionData {
    let name = block.to_string();
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    PartitionData::new(stream_seed(7, h, bytes), bytes, RECORD_BYTES)
}

/// The digest of what the generator yields.
pub fn digest(data: &PartitionData) -> RecordDigest {
    let mut d = RecordDigest::default();
    let mut it = data.iter();
    while let Some(r) = it.next_record() {
        d.add(r);
    }
    d
}

/// The digest of the first `n` records.
pub fn digest_prefix(data: &PartitionData, n: u64) -> RecordDigest {
    let mut d = RecordDigest::default();
    let mut it = data.iter();
    for _ in 0..n {
        d.add(it.next_record().unwrap());
    }
    d
}

/// One unroll-memory request of Spark's `putIterator` loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The 0-based index of the element after which it is made.
    pub after_element: u64,
    pub bytes: u64,
    pub granted: bool,
}

/// Spark's `MemoryStore.putIterator` (docs/spark-model.md §6.5), as a reference: reserve `initial`; after
/// element `i` with `i % period == 0`, if the size so far reached the threshold, request
/// `trunc(size * factor - threshold)` and grow the threshold by it (granted or not); a refusal
/// stops unrolling. `available` is what the memory manager can grant in total. Returns the
/// requests and how many elements were stored before unrolling stopped.
pub fn unroll_model(
    lens: &[u64],
    initial: u64,
    period: u64,
    factor: f64,
    available: u64,
) -> (Vec<Request>, u64) {
    let mut reserved = initial;
    if initial > available {
        return (Vec::new(), 0);
    }
    let mut threshold = initial;
    let mut size = 0;
    let mut requests = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        size += len;
        let i = i as u64;
        if i.is_multiple_of(period) && size >= threshold {
            let bytes = (size as f64 * factor - threshold as f64) as u64;
            let granted = reserved + bytes <= available;
            requests.push(Request {
                after_element: i,
                bytes,
                granted,
            });
            threshold += bytes;
            if !granted {
                return (requests, i + 1);
            }
            reserved += bytes;
        }
    }
    (requests, lens.len() as u64)
}

/// Record lengths of a partition.
pub fn lens(data: &PartitionData) -> Vec<u64> {
    (0..data.records())
        .map(|i| data.record_len(i) as u64)
        .collect()
}

/// The most unroll memory a put of `data` reserves when nothing stops it.
pub fn unroll_peak(data: &PartitionData) -> u64 {
    let (reqs, _) = unroll_model(
        &lens(data),
        UNROLL_THRESHOLD,
        CHECK_PERIOD,
        GROWTH_FACTOR,
        u64::MAX,
    );
    UNROLL_THRESHOLD + reqs.iter().map(|r| r.bytes).sum::<u64>()
}

/// A record source that notes the task-wide unroll memory before each record is pulled, so a
/// test sees every reservation `putIterator` made up to that point.
pub struct SpySource {
    pub inner: RecordIter,
    pub store: Arc<MemoryStore>,
    pub mode: MemoryMode,
    /// `current_unroll_memory` before pull `i`.
    pub seen: Vec<u64>,
}

impl RecordSource for SpySource {
    fn next_record(&mut self) -> Option<&[u8]> {
        self.seen.push(self.store.current_unroll_memory(self.mode));
        self.inner.next_record()
    }
}
