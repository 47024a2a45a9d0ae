//! Spark's `BlockManager` for one executor: puts and gets cached partitions across the memory
//! store and the disk store, drops evicted blocks to disk when their level uses disk, and
//! recomputes what is gone (docs/spark-model.md §6.4).
//!
//! - `put_partition` is `getOrElseUpdate` in a task that computes the partition: a block
//!   already stored is read (from memory, or from disk with re-caching); otherwise
//!   `doPutIterator`: a memory level unrolls into the memory store; if that fails, a level with
//!   disk writes the partition (what was unrolled, then the rest) to disk, and a memory-only
//!   level leaves it uncached (the task consumes the values). A block that went to disk is then
//!   read back from disk and cached again if memory allows (`getLocalValues`).
//! - `get_or_compute` is `getOrElseUpdate` in a task that reads: memory, else disk, else
//!   recompute from the partition's generator and put again.
//! - Reading from disk at a level that uses memory caches the block again (docs/spark-model.md
//!   §6.6): deserialized values by a second unroll (`maybeCacheDiskValuesInMemory`), serialized
//!   bytes by `putBytes` of exactly the block's serialized size (`maybeCacheDiskBytesInMemory`).
//! - Eviction (through the memory store) calls [`DropHandler::drop_from_memory`]: a block whose
//!   level uses disk and is not yet there is written to disk; a memory-only block is gone.
//!
//! Replication (`_2`, `_3` levels) needs other executors; a single executor stores one copy,
//! as Spark does when no peer is available.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde::Serialize;

use crate::data::{PartitionData, RecordSource};
use crate::memory::TaskAttemptId;
use crate::spill::{RECORD_PREFIX_BYTES, RecordDigest, SpillError, SpillReader, SpillWriter};

use super::disk::{DiskBlockManager, DiskSink, DiskStore};
use super::memory_store::{DropHandler, MemoryEntry, MemoryStore, PutOutcome};
use super::values::{DecodeError, Encoder, ReadError, ValueFormat, ValuesConf};
use super::{BlockId, StorageLevel};

/// Failures of block storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A block file could not be written or read back intact.
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// A block read back does not hold the records that were generated for it.
    #[error("block {block} read from {from} does not match its data: {detail}")]
    Mismatch {
        block: BlockId,
        from: &'static str,
        detail: String,
    },
    /// The process received a signal while the block was being computed, written or read:
    /// nothing of it was kept.
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

/// Where a read found its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Memory,
    Disk,
    Recomputed,
}

/// What a put did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutReport {
    pub in_memory: bool,
    pub on_disk: bool,
    /// The digest of every record the put consumed.
    pub digest: RecordDigest,
    /// The block went to disk and was then cached in memory again from there (§6.6).
    pub recached_from_disk: bool,
}

/// Per-RDD storage, under the REST API's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RddStorage {
    /// The level's description ("Memory Deserialized 1x Replicated").
    pub storage_level: String,
    pub num_cached_partitions: u64,
    pub memory_used: u64,
    pub disk_used: u64,
    /// spillway's own: bytes of the block files, framing and checksums included.
    pub disk_file_bytes: u64,
    pub partitions_in_memory: u64,
    pub partitions_on_disk: u64,
}

/// Counters of caching activity.
#[derive(Debug, Default)]
struct Counters {
    blocks_evicted: AtomicU64,
    bytes_evicted: AtomicU64,
    blocks_dropped_to_disk: AtomicU64,
    bytes_dropped_to_disk: AtomicU64,
    drop_failures: AtomicU64,
    eviction_ns: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    recomputes: AtomicU64,
    unroll_failures: AtomicU64,
    recached_from_disk: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageCounters {
    pub blocks_evicted: u64,
    pub bytes_evicted: u64,
    pub blocks_dropped_to_disk: u64,
    pub bytes_dropped_to_disk: u64,
    pub drop_failures: u64,
    pub eviction_ns: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub recomputes: u64,
    pub unroll_failures: u64,
    /// Of `unroll_failures`, those while another task held unroll memory in the same mode.
    pub contended_unroll_failures: u64,
    /// Blocks read from disk and cached in memory again (§6.6).
    pub recached_from_disk: u64,
}

#[derive(Debug, Clone)]
struct Status {
    level: StorageLevel,
    format: ValueFormat,
    /// The bytes of the block's serializer stream, once it is on disk at a serialized level:
    /// what `maybeCacheDiskBytesInMemory` acquires (Spark: the file's size).
    serialized_bytes: Option<u64>,
}

/// One executor's block manager.
pub struct BlockManager {
    memory: Arc<MemoryStore>,
    disk: DiskStore,
    status: Mutex<HashMap<BlockId, Status>>,
    counters: Counters,
    values: ValuesConf,
}

impl BlockManager {
    /// A block manager over a memory store and local directories, with Spark's default
    /// serializer and compression; it becomes the store's drop handler.
    pub fn new(memory: Arc<MemoryStore>, dirs: Arc<DiskBlockManager>) -> Arc<BlockManager> {
        Self::with_values(memory, dirs, ValuesConf::default())
    }

    /// A block manager whose typed records are sized and serialized per `values`.
    pub fn with_values(
        memory: Arc<MemoryStore>,
        dirs: Arc<DiskBlockManager>,
        values: ValuesConf,
    ) -> Arc<BlockManager> {
        let bm = Arc::new(BlockManager {
            memory: Arc::clone(&memory),
            disk: DiskStore::new(dirs),
            status: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            values,
        });
        let handler: Weak<dyn DropHandler> = Arc::downgrade(&bm) as Weak<dyn DropHandler>;
        memory.set_drop_handler(handler);
        bm
    }

    /// The memory store.
    pub fn memory_store(&self) -> &Arc<MemoryStore> {
        &self.memory
    }

    /// The disk store.
    pub fn disk_store(&self) -> &DiskStore {
        &self.disk
    }

    /// The serializer, codec and object layout typed records are stored with.
    pub fn values_conf(&self) -> &ValuesConf {
        &self.values
    }

    /// How a partition's records are held at `level`.
    pub fn format_for(&self, data: &PartitionData, level: StorageLevel) -> ValueFormat {
        ValueFormat::choose(data.record_type(), level, &self.values)
    }

    fn set_status(&self, block: &BlockId, level: StorageLevel, format: ValueFormat) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                block.clone(),
                Status {
                    level,
                    format,
                    serialized_bytes: None,
                },
            );
    }

    fn set_serialized_bytes(&self, block: &BlockId, bytes: u64) {
        if let Some(st) = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(block)
        {
            st.serialized_bytes = Some(bytes);
        }
    }

    fn status_of(&self, block: &BlockId) -> Option<Status> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(block)
            .cloned()
    }

    /// `getOrElseUpdate` in the task that computes the partition: store its records at
    /// `level` for `task` (`doPutIterator`), or, when the block is already stored, read it
    /// (Spark finds it with `get` first). The digest is always that of the generated records;
    /// a stored block that differs from them is an error.
    pub fn put_partition(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
    ) -> Result<PutReport, StorageError> {
        let format = self.format_for(data, level);
        self.put_partition_as(block, level, task, data, format, true)
    }

    /// Spark's `putSingle(block, value, MEMORY_AND_DISK)` as `TorrentBroadcast` stores a
    /// broadcast's value (docs/spark-model.md §22.4): the records of `data` as the elements of
    /// one `Array[Array[Byte]]`, unrolled as a one-element iterator — so the one size check
    /// comes after the whole value and asks for about 1.5 times it — then, like any put, on
    /// disk if memory refuses. Unlike `getOrElseUpdate`, a put that ended on disk is not read
    /// back (`doPutIterator` alone). A value already stored is read and checked instead
    /// (`getLocalValues`, which caches it again from disk when memory allows, §6.6).
    pub fn put_single(
        &self,
        block: &BlockId,
        task: TaskAttemptId,
        data: &PartitionData,
    ) -> Result<PutReport, StorageError> {
        let format = ValueFormat::OneObject {
            layout: self.values.layout,
        };
        self.put_partition_as(
            block,
            StorageLevel::MEMORY_AND_DISK,
            task,
            data,
            format,
            false,
        )
    }

    /// Spark's `putBytes` (`doPutBytes`) of a serialized block given as its bytes, as
    /// `TorrentBroadcast` stores a broadcast's piece (docs/spark-model.md §22.4): at a level
    /// with memory, exactly the bytes' size of storage memory (evicting other blocks if need
    /// be, [`MemoryStore::put_bytes`]); when memory refuses and the level uses disk, a block
    /// file. The bytes are the block's one record.
    pub fn put_bytes(
        &self,
        block: &BlockId,
        level: StorageLevel,
        bytes: &[u8],
    ) -> Result<PutReport, StorageError> {
        assert!(!level.deserialized, "putBytes stores serialized bytes");
        let size = bytes.len() as u64;
        self.set_status(block, level, ValueFormat::Raw);
        let mut report = PutReport::default();
        if level.use_memory {
            let mut source = DigestingSource::new(OneRecord(Some(bytes)));
            report.in_memory =
                self.memory
                    .put_bytes(block, level, ValueFormat::Raw, size, size, &mut source);
            report.digest = source.digest;
        }
        if !report.in_memory && level.use_disk {
            let mut source = DigestingSource::new(OneRecord(Some(bytes)));
            let written = self.disk.put(block, &mut |_| Ok(()), Some(&mut source));
            source.check_interrupted()?;
            written?;
            report.on_disk = true;
            report.digest = source.digest;
        }
        if !report.in_memory && !report.on_disk {
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(block);
        }
        Ok(report)
    }

    /// [`put_partition`](Self::put_partition) with the values held in `format`; `read_back`:
    /// a put that ended on disk is read back and cached again (`getOrElseUpdate`).
    fn put_partition_as(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
        format: ValueFormat,
        read_back: bool,
    ) -> Result<PutReport, StorageError> {
        let mut source = DigestingSource::new(data.iter());
        if self.memory.contains(block) || self.disk.contains(block) {
            // Spark's doPut: "Block <id> already exists on this machine; not re-adding it".
            crate::log::info(
                "BlockManager",
                &format!("Block {block} already exists on this machine; not re-adding it"),
            );
            while source.next_record().is_some() {}
            source.check_interrupted()?;
            let found = self.read_stored(block, level, task, data, &mut |_| {}, false)?;
            let mut recached_from_disk = false;
            if let Some((from, digest, recached)) = found {
                check_digest(block, from, &digest, &source.digest)?;
                recached_from_disk = recached;
            }
            return Ok(PutReport {
                in_memory: self.memory.contains(block),
                on_disk: self.disk.contains(block),
                digest: source.digest,
                recached_from_disk,
            });
        }
        let record_bytes = data.record_bytes();
        let mut report = self.put_source(block, level, task, record_bytes, format, &mut source)?;
        if read_back {
            self.recache_after_disk_put(block, level, task, data, &mut report)?;
        }
        Ok(report)
    }

    /// `getOrElseUpdate` after a `doPutIterator` that ended on disk: `getLocalValues` reads the
    /// block back from disk, caching it in memory again if the level uses memory and there is
    /// room now (§6.6). The values read are checked against the put's.
    fn recache_after_disk_put(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
        report: &mut PutReport,
    ) -> Result<(), StorageError> {
        if !(report.on_disk && !report.in_memory && level.use_memory) {
            return Ok(());
        }
        if let Some((from, digest, recached)) =
            self.read_stored(block, level, task, data, &mut |_| {}, false)?
        {
            check_digest(block, from, &digest, &report.digest)?;
            report.recached_from_disk = recached;
            report.in_memory = self.memory.contains(block);
        }
        Ok(())
    }

    /// Reads a stored block: from memory, else from disk (caching it in memory again when the
    /// level uses memory). `None` when it is in neither. `hits` counts the read as a memory or
    /// disk hit (a task reading its input; not the read-back after a put).
    fn read_stored(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
        visit: &mut dyn FnMut(&[u8]),
        hits: bool,
    ) -> Result<Option<(ReadFrom, RecordDigest, bool)>, StorageError> {
        if let Some(entry) = self.memory.get(block) {
            let mut digest = RecordDigest::default();
            entry
                .try_for_each_record(|r| {
                    digest.add(r);
                    visit(r);
                    Ok::<(), ()>(())
                })
                .map_err(|e| match e {
                    ReadError::Decode(d) => undecodable(block, d),
                    ReadError::Visit(()) => unreachable!("the visitor does not fail"),
                })?;
            if hits {
                self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Some((ReadFrom::Memory, digest, false)));
        }
        let Some(reader) = self.disk.get(block) else {
            return Ok(None);
        };
        let reader = reader?;
        if hits {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
        }
        let mut source = DigestingSource::new(ReaderSource {
            reader,
            error: None,
            visit,
        });
        let mut recached = false;
        if level.use_memory {
            let status = self.status_of(block);
            let format = status
                .as_ref()
                .map_or_else(|| self.format_for(data, level), |s| s.format);
            let record_bytes = data.record_bytes();
            // A serialized level's block is as big in memory as its stream: raw records their
            // data bytes, typed records their serializer stream.
            let serialized = match format {
                ValueFormat::Raw if !level.deserialized => {
                    self.disk.block(block).map(|d| data_bytes(&d.info))
                }
                ValueFormat::Serialized { .. } => status.and_then(|s| s.serialized_bytes),
                _ => None,
            };
            if !level.deserialized {
                // maybeCacheDiskBytesInMemory: putBytes of exactly the serialized size.
                if let Some(size) = serialized {
                    recached = self.memory.put_bytes(
                        block,
                        level,
                        format,
                        size,
                        record_bytes,
                        &mut source,
                    );
                }
            } else {
                // maybeCacheDiskValuesInMemory: unroll the disk values into memory again.
                match self
                    .memory
                    .put_values(block, level, task, format, record_bytes, &mut source)
                {
                    PutOutcome::Stored { .. } => recached = true,
                    PutOutcome::Failed(partial) => {
                        // Release the unroll memory before reading the rest.
                        drop(partial);
                    }
                }
            }
        }
        while source.next_record().is_some() {}
        if let Some(e) = source.inner.error.take() {
            if recached {
                self.memory.remove(block);
            }
            return Err(e.into());
        }
        source.check_interrupted()?;
        if recached {
            self.counters
                .recached_from_disk
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some((ReadFrom::Disk, source.digest, recached)))
    }

    fn put_source(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        record_bytes: u64,
        format: ValueFormat,
        source: &mut DigestingSource<impl RecordSource>,
    ) -> Result<PutReport, StorageError> {
        self.set_status(block, level, format);
        let mut report = PutReport::default();
        if level.use_memory {
            match self
                .memory
                .put_values(block, level, task, format, record_bytes, source)
            {
                PutOutcome::Stored { .. } => {
                    report.in_memory = true;
                }
                PutOutcome::Failed(partial) => {
                    self.counters
                        .unroll_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if level.use_disk {
                        crate::log::warn(
                            "BlockManager",
                            &format!("Persisting block {block} to disk instead."),
                        );
                        // Spark's PartiallyUnrolledIterator / finishWritingToStream: the unroll
                        // memory goes back once the unrolled prefix is written, before the
                        // rest of the partition is computed. A serialized level's stream is
                        // counted as it goes (its size is what a re-cache acquires).
                        let counter = matches!(format, ValueFormat::Serialized { .. })
                            .then(|| std::cell::RefCell::new(StreamCounter::new(format)));
                        let mut partial = Some(partial);
                        let mut prefix = |w: &mut SpillWriter<DiskSink>| {
                            let Some(p) = partial.take() else {
                                return Ok(());
                            };
                            p.try_for_each_record(|r| {
                                if let Some(c) = &counter {
                                    c.borrow_mut().push(r);
                                }
                                w.write_record(r)
                            })
                            .map_err(|e| feed_error(e, block, w))
                        };
                        let mut rest = CountingSource {
                            inner: &mut *source,
                            counter: counter.as_ref(),
                        };
                        self.disk.put(block, &mut prefix, Some(&mut rest))?;
                        if let Some(c) = counter {
                            self.set_serialized_bytes(block, c.into_inner().finish());
                        }
                        report.on_disk = true;
                    } else {
                        // The task consumes the values, the unrolled ones first (their unroll
                        // memory is released then), then the rest; the block is not cached.
                        drop(partial);
                        while source.next_record().is_some() {}
                    }
                }
            }
        } else if level.use_disk {
            self.disk.put(block, &mut |_| Ok(()), Some(source))?;
            report.on_disk = true;
        } else {
            while source.next_record().is_some() {}
        }
        report.digest = source.digest;
        if let Err(e) = source.check_interrupted() {
            self.remove(block);
            return Err(e);
        }
        if !report.in_memory && !report.on_disk {
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(block);
        }
        Ok(report)
    }

    /// `getOrElseUpdate`: read the block from memory or disk (caching it in memory again from
    /// disk, §6.6), else recompute and put it again. `visit` sees every record once; the
    /// returned digest covers them.
    pub fn get_or_compute(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<(ReadFrom, RecordDigest), StorageError> {
        if let Some((from, digest, _)) = self.read_stored(block, level, task, data, visit, true)? {
            return Ok((from, digest));
        }
        self.counters.recomputes.fetch_add(1, Ordering::Relaxed);
        let mut source = DigestingSource::new(VisitingSource {
            inner: data.iter(),
            visit,
        });
        let record_bytes = data.record_bytes();
        let format = self.format_for(data, level);
        let mut report = self.put_source(block, level, task, record_bytes, format, &mut source)?;
        self.recache_after_disk_put(block, level, task, data, &mut report)?;
        Ok((ReadFrom::Recomputed, report.digest))
    }

    /// Removes a block from memory and disk.
    pub fn remove(&self, block: &BlockId) -> bool {
        let in_memory = self.memory.remove(block);
        let on_disk = self.disk.remove(block);
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(block);
        in_memory || on_disk
    }

    fn rdd_blocks(&self, rdd_id: u32) -> Vec<BlockId> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|b| b.rdd_id() == Some(rdd_id))
            .cloned()
            .collect()
    }

    /// Removes a broadcast's value and pieces (`removeBroadcast`: what `unpersist`, `destroy`
    /// and the context cleaner do on an executor, docs/spark-model.md §22); the count removed.
    pub fn remove_broadcast(&self, broadcast_id: u64) -> usize {
        let blocks: Vec<BlockId> = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|b| match b {
                BlockId::Broadcast { broadcast_id: id } => *id == broadcast_id,
                BlockId::BroadcastPiece {
                    broadcast_id: id, ..
                } => *id == broadcast_id,
                _ => false,
            })
            .cloned()
            .collect();
        blocks.iter().filter(|b| self.remove(b)).count()
    }

    /// Removes every block of an RDD (`unpersist`).
    pub fn remove_rdd(&self, rdd_id: u32) -> usize {
        let blocks = self.rdd_blocks(rdd_id);
        blocks.iter().filter(|b| self.remove(b)).count()
    }

    /// Storage of one RDD as the REST API reports it: a partition counts as cached wherever
    /// it is stored.
    pub fn rdd_storage(&self, rdd_id: u32) -> RddStorage {
        let blocks = self.rdd_blocks(rdd_id);
        let mut s = RddStorage::default();
        for b in blocks {
            if let Some(st) = self
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&b)
            {
                s.storage_level = st.level.description();
            }
            let mem = self.memory.size(&b);
            let disk = self.disk.block(&b);
            if let Some(m) = mem {
                s.memory_used += m;
                s.partitions_in_memory += 1;
            }
            if let Some(d) = &disk {
                s.disk_used += data_bytes(&d.info);
                s.disk_file_bytes += d.info.file_bytes;
                s.partitions_on_disk += 1;
            }
            if mem.is_some() || disk.is_some() {
                s.num_cached_partitions += 1;
            }
        }
        s
    }

    /// The caching counters so far.
    pub fn counters(&self) -> StorageCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageCounters {
            blocks_evicted: get(&c.blocks_evicted),
            bytes_evicted: get(&c.bytes_evicted),
            blocks_dropped_to_disk: get(&c.blocks_dropped_to_disk),
            bytes_dropped_to_disk: get(&c.bytes_dropped_to_disk),
            drop_failures: get(&c.drop_failures),
            eviction_ns: get(&c.eviction_ns),
            memory_hits: get(&c.memory_hits),
            disk_hits: get(&c.disk_hits),
            recomputes: get(&c.recomputes),
            unroll_failures: get(&c.unroll_failures),
            contended_unroll_failures: self.memory.contended_unroll_failures(),
            recached_from_disk: get(&c.recached_from_disk),
        }
    }
}

/// The block's serialized bytes: payload without spillway's per-record length prefixes.
fn data_bytes(info: &crate::spill::SpillFileInfo) -> u64 {
    if info.fixed_record_bytes == 0 {
        info.payload_bytes - info.records * RECORD_PREFIX_BYTES as u64
    } else {
        info.payload_bytes
    }
}

impl DropHandler for BlockManager {
    /// `dropFromMemory`: write to disk if the level uses disk and the block is not there yet.
    fn drop_from_memory(&self, entry: &MemoryEntry) {
        let start = Instant::now();
        let c = &self.counters;
        c.blocks_evicted.fetch_add(1, Ordering::Relaxed);
        c.bytes_evicted.fetch_add(entry.size, Ordering::Relaxed);
        if entry.level.use_disk && !self.disk.contains(&entry.block) {
            let mut prefix = |w: &mut SpillWriter<DiskSink>| {
                // Digested when the block was cached: no second hash per record.
                w.use_known_digest(entry.digest);
                entry
                    .try_for_each_record(|r| w.write_record(r))
                    .map_err(|e| feed_error(e, &entry.block, w))
            };
            match self.disk.put(&entry.block, &mut prefix, None) {
                Ok(_) => {
                    if matches!(entry.format, ValueFormat::Serialized { .. }) {
                        // Its stream is what it held in memory.
                        self.set_serialized_bytes(&entry.block, entry.size);
                    }
                    c.blocks_dropped_to_disk.fetch_add(1, Ordering::Relaxed);
                    c.bytes_dropped_to_disk
                        .fetch_add(entry.size, Ordering::Relaxed);
                }
                Err(e) => {
                    // The block leaves memory either way; without a disk copy it will be
                    // recomputed when read.
                    c.drop_failures.fetch_add(1, Ordering::Relaxed);
                    crate::log::warn(
                        "BlockManager",
                        &format!("could not drop {} to disk: {e}", entry.block),
                    );
                }
            }
        }
        if !entry.level.use_disk {
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&entry.block);
        }
        c.eviction_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A block read back that differs from the records generated for it.
pub fn check_digest(
    block: &BlockId,
    from: ReadFrom,
    got: &RecordDigest,
    expected: &RecordDigest,
) -> Result<(), StorageError> {
    if got == expected {
        return Ok(());
    }
    Err(StorageError::Mismatch {
        block: block.clone(),
        from: match from {
            ReadFrom::Memory => "memory",
            ReadFrom::Disk => "disk",
            ReadFrom::Recomputed => "recomputation",
        },
        detail: format!(
            "{} records with hash sum {:#x}, expected {} with {:#x}",
            got.records, got.hash_sum, expected.records, expected.hash_sum
        ),
    })
}

/// An in-memory block whose bytes do not decode (a bug: this process wrote them).
fn undecodable(block: &BlockId, e: DecodeError) -> StorageError {
    StorageError::Mismatch {
        block: block.clone(),
        from: "memory",
        detail: format!("its bytes do not decode: {e}"),
    }
}

/// A feeder's failure: the writer's own error, or an in-memory block that does not decode.
fn feed_error(e: ReadError<SpillError>, block: &BlockId, w: &SpillWriter<DiskSink>) -> SpillError {
    match e {
        ReadError::Visit(e) => e,
        ReadError::Decode(d) => SpillError::Corrupt {
            path: w.path().to_path_buf(),
            offset: 0,
            detail: format!("the in-memory block {block} does not decode: {d}"),
        },
    }
}

/// Counts the bytes of a block's serializer stream as its records go to disk.
struct StreamCounter {
    encoder: Encoder,
    scratch: Vec<u8>,
}

impl StreamCounter {
    fn new(format: ValueFormat) -> StreamCounter {
        StreamCounter {
            encoder: Encoder::new(format),
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, record: &[u8]) {
        self.scratch.clear();
        self.encoder.push(record, &mut self.scratch);
    }

    /// The stream's bytes.
    fn finish(mut self) -> u64 {
        self.scratch.clear();
        self.encoder.finish(&mut self.scratch)
    }
}

/// A source whose records also go through a [`StreamCounter`].
struct CountingSource<'a, S> {
    inner: &'a mut S,
    counter: Option<&'a std::cell::RefCell<StreamCounter>>,
}

impl<S: RecordSource> RecordSource for CountingSource<'_, S> {
    fn next_record(&mut self) -> Option<&[u8]> {
        let r = self.inner.next_record()?;
        if let Some(c) = self.counter {
            c.borrow_mut().push(r);
        }
        Some(r)
    }

    fn failed(&self) -> bool {
        self.inner.failed()
    }
}

/// Digests every record that passes through, and keeps the first read error.
///
/// It is also where a put notices a signal ([`crate::interrupt`]): every
/// [`crate::interrupt::CHECK_EVERY`] records it looks, and once interrupted it ends the stream
/// as failed, so the memory store caches nothing and no block file is finished.
struct DigestingSource<S> {
    inner: S,
    digest: RecordDigest,
    interrupted: Option<crate::interrupt::Interrupted>,
}

impl<S> DigestingSource<S> {
    fn new(inner: S) -> Self {
        DigestingSource {
            inner,
            digest: RecordDigest::default(),
            interrupted: None,
        }
    }

    /// `Err` if the stream was cut short by a signal.
    fn check_interrupted(&self) -> Result<(), StorageError> {
        match self.interrupted {
            Some(i) => Err(i.into()),
            None => Ok(()),
        }
    }
}

impl<S: RecordSource> RecordSource for DigestingSource<S> {
    fn next_record(&mut self) -> Option<&[u8]> {
        if self.interrupted.is_some() {
            return None;
        }
        if self
            .digest
            .records
            .is_multiple_of(crate::interrupt::CHECK_EVERY)
            && let Err(i) = crate::interrupt::check()
        {
            self.interrupted = Some(i);
            return None;
        }
        let r = self.inner.next_record()?;
        self.digest.add(r);
        Some(r)
    }

    fn failed(&self) -> bool {
        self.interrupted.is_some() || self.inner.failed()
    }
}

/// Records read from a block file, verified frame by frame; an error ends the stream and is
/// kept for the caller.
struct ReaderSource<'a> {
    reader: SpillReader,
    error: Option<SpillError>,
    visit: &'a mut dyn FnMut(&[u8]),
}

impl RecordSource for ReaderSource<'_> {
    fn next_record(&mut self) -> Option<&[u8]> {
        if self.error.is_some() {
            return None;
        }
        match self.reader.next_record() {
            Ok(Some(r)) => {
                (self.visit)(r);
                Some(r)
            }
            Ok(None) => None,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// A block of one record (a broadcast's piece).
struct OneRecord<'a>(Option<&'a [u8]>);

impl RecordSource for OneRecord<'_> {
    fn next_record(&mut self) -> Option<&[u8]> {
        self.0.take()
    }
}

/// A generator whose records are also shown to a visitor (a recompute during a scan).
struct VisitingSource<'a, S> {
    inner: S,
    visit: &'a mut dyn FnMut(&[u8]),
}

impl<S: RecordSource> RecordSource for VisitingSource<'_, S> {
    fn next_record(&mut self) -> Option<&[u8]> {
        let r = self.inner.next_record()?;
        (self.visit)(r);
        Some(r)
    }

    fn failed(&self) -> bool {
        self.inner.failed()
    }
}
