//! External sort: Spark's `UnsafeExternalSorter` over Tungsten pages, spilling sorted runs (docs/spark-model.md §9).
//!
//! # In memory
//!
//! Records are appended to **data pages** (`Consumer::allocate_page`, at least
//! `spark.buffer.pageSize`), each as `le32 length ‖ bytes` like `UnsafeExternalSorter` (the
//! "len + 4" of §9.1). A **pointer array** (`Consumer::allocate_array`) holds one
//! `(key prefix, Tungsten address)` pair of `u64`s per record. As in `UnsafeInMemorySorter`
//! with radix sort, only half of the array holds pairs; the other half is the radix sort's
//! buffer, so an array of `L` longs holds `L / 4` records (32 bytes per record). The array
//! starts at `spark.shuffle.sort.initialBufferSize` = 4096 × 2 longs and grows by doubling
//! (`allocateArray(used / 8 * 2)`), copying the pairs over and freeing the old array.
//!
//! The key is the first 8 bytes, little-endian ([`crate::data::record_key`]); the prefix is the
//! whole key, so sorting the pairs by prefix sorts the records (`RadixSort.sortKeyPrefixArray`:
//! LSD, 8-bit digits, passes whose byte is the same for every key skipped).
//!
//! # Spilling
//!
//! When a page or the array cannot be had, the task memory manager asks consumers to spill
//! (docs/spark-model.md §5.3b); this sorter is asked last when it is the requester. Its spill sorts the pairs,
//! gathers the records in key order into a [`SpillWriter`] (`SpillKind::SortRun`, buffer
//! `spark.shuffle.file.buffer`, file `temp_local_<n>` in the local directories; compressed with
//! the codec of `spark.io.compression.codec` when `spark.shuffle.spill.compress` is true, the
//! default: a `TempLocalBlockId`, docs/spark-model.md §19.3), frees its pages and its array
//! and returns the bytes released; `memoryBytesSpilled` grows by the page bytes (Spark's
//! `freeMemory()`), `diskBytesSpilled` by the file's bytes on disk, after compression. After a
//! spill the array starts again from its initial size (`inMemSorter.reset()`).
//!
//! **Spills for other consumers.** Spark's `UnsafeExternalSorter.spill(size, trigger)` returns
//! 0 for `trigger != this` unless a reading iterator is active. spillway's sorter spills for
//! any trigger while it is inserting (it holds records and is not merging): a task with two
//! consumers then sees the §5.3b order at work, and a sorter is never the reason another
//! consumer of its own task fails. During the final merge it releases nothing (its state lock
//! is held by the merge; `try_lock` fails), like a Spark sorter without a reading iterator.
//!
//! # Merging
//!
//! [`ExternalSorter::finish`] sorts the in-memory remainder and merges it with the runs through
//! [`SortedMerge`] (a heap over the runs, ties to the earlier run). Every run is verified to its
//! footer (frame CRCs, counts, digests) as it is read, then deleted. The output is checked as it
//! streams: keys non-decreasing, and its [`RecordDigest`] returned for comparison with the input.
//!
//! The consumer/callback design is in the [module doc](super).

use std::sync::Arc;

use super::SharedState;
use std::time::Instant;

use zerocopy::FromBytes;

use crate::codec::Codec;
use crate::data::{PartitionData, record_key, splitmix64, stream_seed};
use crate::memory::{
    Consumer, ConsumerId, MemoryConsumer, Page, TaskMemoryError, decode_offset, decode_page_number,
    encode_address,
};
use crate::metrics::ExecutorMetrics;
use crate::scheduler::TaskContext;
use crate::spill::{
    RecordDigest, SortedMerge, SortedRun, SpillError, SpillKind, SpillReader, SpillWriterOptions,
};
use crate::storage::disk::DiskBlockManager;

use super::{RunFile, TaskError, TaskMetrics, Verification};

/// `spark.shuffle.sort.initialBufferSize` (records); the first array has twice as many longs.
pub const INITIAL_BUFFER_RECORDS: u64 = 4096;
/// Bytes of the length prefix before each record in a page (`UnsafeAlignedOffset` size 4).
pub const RECORD_LENGTH_BYTES: usize = 4;
/// Below this many records a comparison sort beats the radix sort's eight passes.
const RADIX_MIN_RECORDS: usize = 256;
/// Records whose addresses an in-memory run resolves at once (see `MemRun`).
const GATHER_BATCH: usize = 32;

/// What one sort task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortSpec {
    /// Records each task generates and sorts.
    pub records_per_task: u64,
    /// Bytes per record (at least 8, the key); default 56.
    pub record_bytes: usize,
    /// The stage's seed; task `p` of stage `s` sorts `stream_seed(seed, s, p)`.
    pub seed: u64,
}

impl Default for SortSpec {
    fn default() -> Self {
        SortSpec {
            records_per_task: 1_000_000,
            record_bytes: 56,
            seed: 42,
        }
    }
}

impl SortSpec {
    fn validate(&self) -> Result<(), TaskError> {
        if self.record_bytes < 8 || self.record_bytes > u32::MAX as usize / 2 {
            return Err(TaskError::InvalidSpec(format!(
                "record_bytes = {} (records carry an 8-byte key; at most 2 GiB)",
                self.record_bytes
            )));
        }
        Ok(())
    }

    /// The records task `partition` of stage `stage_id` sorts.
    pub fn data(&self, stage_id: u32, partition: u32) -> PartitionData {
        PartitionData::new(
            stream_seed(self.seed, stage_id as u64, partition as u64),
            self.records_per_task * self.record_bytes as u64,
            self.record_bytes as u64,
        )
    }
}

/// Runs one sort task: generates the task's records straight into the sorter's pages, sorts
/// them (spilling as memory requires), merges, and verifies the output against the input.
pub fn run_sort_task(ctx: &TaskContext, spec: &SortSpec) -> Result<TaskMetrics, TaskError> {
    let start = Instant::now();
    spec.validate()?;
    let seed = stream_seed(spec.seed, ctx.stage_id as u64, ctx.partition as u64);
    let mut sorter = ExternalSorter::new(ctx, spec.record_bytes)?;
    let input = sorter.insert_with(spec.records_per_task, |i, out| write_record(seed, i, out))?;
    let out = sorter.finish()?;
    let mut m = out.metrics;
    m.verification = Verification::new(input, out.digest, out.ordered);
    m.peak_execution_memory = ctx.memory.peak_execution_memory();
    m.executor_run_time = start.elapsed().as_millis() as u64;
    if !m.verification.ok {
        return Err(TaskError::Verification(format!(
            "sort output of task {} (partition {}): {} records, hash sum {:#x}, keys \
             non-decreasing: {}; input: {} records, hash sum {:#x}",
            ctx.task_attempt_id,
            ctx.partition,
            out.digest.records,
            out.digest.hash_sum,
            out.ordered,
            input.records,
            input.hash_sum
        )));
    }
    Ok(m)
}

/// Record `index` of the stream `seed`: exactly [`PartitionData::write_record`] for a record of
/// full length, written word by word without a variable-length copy per word (the generator
/// is a third of the sort's work otherwise). A unit test holds the two equal.
#[inline]
pub fn write_record(seed: u64, index: u64, out: &mut [u8]) {
    let mut state = seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93);
    let mut words = out.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let rest = words.into_remainder();
    if !rest.is_empty() {
        let v = splitmix64(&mut state).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

/// What [`ExternalSorter::finish`] saw come out of the merge.
#[derive(Debug, Clone)]
pub struct SortOutput {
    /// Digest of the output records.
    pub digest: RecordDigest,
    /// Whether every key was ≥ the one before.
    pub ordered: bool,
    /// Spills, timings and counts (verification and peak filled in by the caller).
    pub metrics: TaskMetrics,
}

/// The sorter's state, shared by its owner and its spill callback.
struct State {
    record_bytes: usize,
    /// Data pages in order; the last is the one being filled.
    pages: Vec<Page>,
    /// Next free byte in the last page.
    cursor: usize,
    /// The pointer array: pairs in the first half, radix buffer in the second.
    array: Option<Page>,
    records: usize,
    /// Digest of the `records` in memory (taken as they are inserted): a spill's run carries
    /// it, so the spill writer does not hash each record again.
    in_memory: RecordDigest,
    runs: Vec<RunFile>,
    merging: bool,
    own_id: Option<ConsumerId>,
    dirs: Arc<DiskBlockManager>,
    /// The spills' codec: `spark.shuffle.spill.compress` (`TempLocalBlockId`, docs/spark-model.md §19.3).
    codec: Option<Codec>,
    /// `spark.shuffle.spill.numElementsForceSpillThreshold`: spill before inserting when this
    /// many records are in memory.
    force_spill_records: usize,
    metrics: TaskMetrics,
    /// The executor's counters, which the timeline reads while the task runs.
    executor_metrics: Arc<ExecutorMetrics>,
}

/// The callback half: what the task memory manager holds.
type Shared = SharedState<State>;

impl MemoryConsumer for SharedState<State> {
    fn spill(
        &self,
        _size: u64,
        trigger: ConsumerId,
    ) -> Result<u64, crate::memory::ConsumerSpillError> {
        // The owner holds the state (merging): nothing can be released now.
        let Some(mut st) = self.try_lock() else {
            return Ok(0);
        };
        if st.merging {
            return Ok(0);
        }
        let for_other = st.own_id != Some(trigger);
        let released = st
            .spill()
            .map_err(crate::memory::ConsumerSpillError::File)?;
        if released > 0 && for_other {
            st.metrics.spills_for_others += 1;
        }
        Ok(released)
    }
}

/// Spark's `UnsafeExternalSorter` for fixed- or variable-size records keyed by their first 8
/// bytes. Create it, insert, then [`finish`](Self::finish).
pub struct ExternalSorter {
    // Declared first so it is dropped first: the task memory manager lets go of the callback.
    consumer: Consumer,
    shared: Arc<Shared>,
    record_bytes: usize,
}

enum Need {
    Done,
    Page,
    Array,
    /// `spark.shuffle.spill.numElementsForceSpillThreshold` records are in memory (§9.1).
    Spill,
}

impl ExternalSorter {
    /// A sorter of `record_bytes`-byte records registered with the task's memory manager.
    pub fn new(ctx: &TaskContext, record_bytes: usize) -> Result<ExternalSorter, TaskError> {
        if record_bytes < 8 {
            return Err(TaskError::InvalidSpec(format!(
                "record_bytes = {record_bytes}: records carry an 8-byte key"
            )));
        }
        let shared = Arc::new(SharedState::new(State {
            record_bytes,
            pages: Vec::new(),
            cursor: 0,
            array: None,
            records: 0,
            in_memory: RecordDigest::default(),
            runs: Vec::new(),
            merging: false,
            own_id: None,
            dirs: Arc::clone(ctx.executor.local_dirs()),
            codec: ctx.executor.compression().spill,
            force_spill_records: usize::try_from(
                ctx.executor.spillable().force_spill_elements.max(0),
            )
            .unwrap_or(usize::MAX),
            metrics: TaskMetrics::default(),
            executor_metrics: Arc::clone(ctx.memory.metrics()),
        }));
        let consumer = ctx
            .memory
            .register("UnsafeExternalSorter", Arc::clone(&shared) as _);
        shared.lock().own_id = Some(consumer.id());
        Ok(ExternalSorter {
            consumer,
            shared,
            record_bytes,
        })
    }

    /// This sorter's consumer id in the task.
    pub fn consumer_id(&self) -> ConsumerId {
        self.consumer.id()
    }

    /// Spills and timings so far.
    pub fn metrics(&self) -> TaskMetrics {
        self.shared.lock().metrics.clone()
    }

    /// Records held in memory now.
    pub fn records_in_memory(&self) -> usize {
        self.shared.lock().records
    }

    /// Inserts one record (of the sorter's record size).
    pub fn insert_record(&mut self, record: &[u8]) -> Result<(), TaskError> {
        if record.len() != self.record_bytes {
            return Err(TaskError::InvalidSpec(format!(
                "record of {} bytes into a sorter of {}-byte records",
                record.len(),
                self.record_bytes
            )));
        }
        self.insert_with(1, |_, out| out.copy_from_slice(record))?;
        Ok(())
    }

    /// Inserts `count` records, record `i` written by `produce(i, slot)` straight into its
    /// place in a page (no copy). Returns the digest of the records inserted.
    pub fn insert_with(
        &mut self,
        count: u64,
        mut produce: impl FnMut(u64, &mut [u8]),
    ) -> Result<RecordDigest, TaskError> {
        let started = Instant::now();
        let mut digest = RecordDigest::default();
        let mut next = 0u64;
        loop {
            // Once per page or array: a signal stops the task between two records.
            crate::interrupt::check()?;
            let need = {
                let mut st = self.shared.lock();
                st.fill(&mut next, count, &mut produce, &mut digest)
            };
            match need {
                Need::Done => break,
                Need::Array => self.grow_array()?,
                Need::Page => self.add_page()?,
                Need::Spill => {
                    self.shared.lock().spill()?;
                }
            }
        }
        let mut st = self.shared.lock();
        st.metrics.records_in += count;
        st.metrics.insert_ns += started.elapsed().as_nanos() as u64;
        Ok(digest)
    }

    /// `acquireNewPageIfNecessary`: a page of at least `pageSize` for the next record. The
    /// request may spill this sorter (the page is still wanted afterwards).
    fn add_page(&mut self) -> Result<(), TaskError> {
        let page = self
            .consumer
            .allocate_page((self.record_bytes + RECORD_LENGTH_BYTES) as u64)?;
        let mut st = self.shared.lock();
        st.pages.push(page);
        st.cursor = 0;
        Ok(())
    }

    /// `growPointerArrayIfNecessary` (docs/spark-model.md §9.1).
    fn grow_array(&mut self) -> Result<(), TaskError> {
        let (current_longs, records) = {
            let st = self.shared.lock();
            (st.array.as_ref().map_or(0, |a| a.len() / 8), st.records)
        };
        if current_longs == 0 || records == 0 {
            // No array (start, or freed by a spill): the initial one.
            let array = self.consumer.allocate_array(INITIAL_BUFFER_RECORDS * 2)?;
            let mut st = self.shared.lock();
            // Any old array held no records (a spill cannot have run in between, as there was
            // nothing to spill): it is simply replaced.
            let old = st.array.replace(array);
            drop(st);
            drop(old);
            return Ok(());
        }
        // Could spill this sorter (asked last, as the requester).
        let grown = match self.consumer.allocate_array(current_longs * 2) {
            Ok(a) => Some(a),
            Err(TaskMemoryError::TooLargePage(_)) => {
                // "The pointer array is too big to fix in a single page, spill."
                self.shared.lock().spill()?;
                None
            }
            Err(e) => {
                if self.shared.lock().records > 0 {
                    crate::log::warn("UnsafeExternalSorter", "Unable to grow the pointer array");
                    return Err(e.into());
                }
                // All records were spilled while asking: the array is no longer needed.
                None
            }
        };
        let mut st = self.shared.lock();
        match grown {
            Some(mut array) if st.records > 0 => {
                let old = st.array.take().expect("records imply an array");
                copy_pairs(&old, &mut array, st.records);
                st.array = Some(array);
                drop(st);
                drop(old);
            }
            // Spilled while asking: a smaller array suffices (the next round takes the
            // initial size), as Spark frees the new array and allocates the initial one.
            other => {
                st.array = None;
                drop(st);
                drop(other);
            }
        }
        Ok(())
    }

    /// Sorts what is in memory, merges it with the spilled runs and checks the output as it
    /// streams. Runs are deleted once merged (and on any error).
    pub fn finish(self) -> Result<SortOutput, TaskError> {
        self.finish_each(|_| {})
    }

    /// [`finish`](Self::finish), handing every output record, in order, to `out`.
    pub fn finish_each(self, mut out: impl FnMut(&[u8])) -> Result<SortOutput, TaskError> {
        let mut st = self.shared.lock();
        st.merging = true;
        let started = Instant::now();
        let st = &mut *st;
        let records = st.records;
        let sorted_pairs: &[[u64; 2]] = match st.array.as_mut() {
            Some(array) if records > 0 => {
                let t = Instant::now();
                let sorted = sort_pairs(array, records);
                st.metrics.sort_ns += t.elapsed().as_nanos() as u64;
                sorted
            }
            _ => &[],
        };
        let page_table = page_table(&st.pages);
        let mut runs: Vec<Run<'_>> = Vec::with_capacity(st.runs.len() + 1);
        for f in &st.runs {
            runs.push(Run::File(SpillReader::open(f.path())?));
        }
        let mut digest = RecordDigest::default();
        let mut ordered = true;
        let mut last_key = 0u64;
        let mut out_records = 0u64;
        let mut check = |r: &[u8]| {
            let k = record_key(r);
            ordered &= k >= last_key;
            last_key = k;
            digest.add(r);
            out(r);
        };
        if runs.is_empty() {
            // Nothing spilled: the sorted pairs are the output.
            let mut run = MemRun::new(sorted_pairs, &page_table);
            while run.advance()? {
                check(run.current());
                out_records += 1;
                if out_records.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                    crate::interrupt::check()?;
                }
            }
        } else {
            if records > 0 {
                runs.push(Run::Mem(MemRun::new(sorted_pairs, &page_table)));
            }
            let mut merge = SortedMerge::new(runs, record_key)?;
            while let Some(r) = merge.next_record()? {
                check(r);
                out_records += 1;
                if out_records.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                    crate::interrupt::check()?;
                }
            }
        }
        drop(page_table);
        // Merged: delete the runs and give the memory back.
        st.runs.clear();
        st.pages.clear();
        st.array = None;
        st.records = 0;
        st.in_memory = RecordDigest::default();
        st.metrics.spill_read_ns += started.elapsed().as_nanos() as u64;
        st.metrics.records_out = digest.records;
        Ok(SortOutput {
            digest,
            ordered,
            metrics: st.metrics.clone(),
        })
    }
}

impl State {
    /// Writes records into the current page and pairs into the array until the input ends or a
    /// page or the array is full.
    fn fill(
        &mut self,
        next: &mut u64,
        count: u64,
        produce: &mut impl FnMut(u64, &mut [u8]),
        digest: &mut RecordDigest,
    ) -> Need {
        if *next >= count {
            return Need::Done;
        }
        let rb = self.record_bytes;
        let stride = rb + RECORD_LENGTH_BYTES;
        let Some(array) = self.array.as_mut() else {
            return Need::Array;
        };
        let pairs = as_pairs(array.as_mut_slice());
        let capacity = pairs.len() / 2;
        let Some(page) = self.pages.last_mut() else {
            return Need::Page;
        };
        let page_number = page.page_number();
        let bytes = page.as_mut_slice();
        let len_prefix = (rb as u32).to_le_bytes();
        let mut cursor = self.cursor;
        let mut records = self.records;
        let mut added = RecordDigest::default();
        let need = loop {
            if *next >= count {
                break Need::Done;
            }
            if records > 0 && records >= self.force_spill_records {
                break Need::Spill;
            }
            if records >= capacity {
                break Need::Array;
            }
            if cursor + stride > bytes.len() {
                break Need::Page;
            }
            let slot = &mut bytes[cursor..cursor + stride];
            slot[..RECORD_LENGTH_BYTES].copy_from_slice(&len_prefix);
            let rec = &mut slot[RECORD_LENGTH_BYTES..];
            produce(*next, rec);
            added.add(rec);
            pairs[records] = [record_key(rec), encode_address(page_number, cursor as u64)];
            records += 1;
            cursor += stride;
            *next += 1;
        };
        self.cursor = cursor;
        self.records = records;
        *digest = digest.combine(added);
        self.in_memory = self.in_memory.combine(added);
        need
    }

    /// Sorts the in-memory records into a run on disk and frees pages and array. Returns the
    /// bytes released (0 if nothing was held).
    fn spill(&mut self) -> Result<u64, SpillError> {
        if self.records == 0 {
            // Nothing to write, but pages held empty (a page granted after a spill freed the
            // array) are released: otherwise a task at its 1/N share could not get its array
            // back and would fail with UNABLE_TO_ACQUIRE_MEMORY. (Spark re-allocates the array
            // inside `spill` and never holds an empty page this way.) The array stays: it is
            // asked for first, and freeing it here would let array and page take turns.
            let freed = self.pages.iter().map(Page::len).sum::<u64>();
            self.pages.clear();
            self.cursor = 0;
            return Ok(freed);
        }
        let started = Instant::now();
        let records = self.records;
        let array = self.array.as_mut().expect("records imply an array");
        let sorted = sort_pairs(array, records);
        let sorted_at = Instant::now();
        let mut opts = SpillWriterOptions::new(SpillKind::SortRun);
        opts.fixed_record_bytes = Some(self.record_bytes as u32);
        opts.buffer_bytes = self.dirs.buffer_bytes();
        opts.codec = self.codec;
        let table = page_table(&self.pages);
        // The records stay in their pages until the run is on disk, so a spill that fails in
        // one local directory is written again in the next (`write_temp_file`).
        let known = self.in_memory;
        let info = self.dirs.write_temp_file("temp_local", &opts, &mut |w| {
            w.use_known_digest(known);
            let mut run = MemRun::new(sorted, &table);
            let mut written = 0u64;
            while run.advance()? {
                w.write_record(run.current())?;
                written += 1;
                // Stopped by a signal: the unfinished writer deletes its file.
                if written.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                    crate::interrupt::check()?;
                }
            }
            Ok(())
        })?;
        drop(table);
        let run_file = RunFile::new(info.path.clone());
        let page_bytes: u64 = self.pages.iter().map(Page::len).sum();
        let array_bytes = self.array.as_ref().map_or(0, Page::len);
        self.pages.clear();
        self.array = None;
        self.cursor = 0;
        self.records = 0;
        self.in_memory = RecordDigest::default();
        self.runs.push(run_file);
        let m = &mut self.metrics;
        m.spill_count += 1;
        m.memory_bytes_spilled += page_bytes;
        m.disk_bytes_spilled += info.file_bytes;
        self.executor_metrics.record_spill(info.file_bytes);
        m.sort_ns += (sorted_at - started).as_nanos() as u64;
        m.spill_write_ns += started.elapsed().as_nanos() as u64;
        Ok(page_bytes + array_bytes)
    }
}

/// The array page as `(prefix, address)` pairs (all of it: records, then the radix buffer).
///
/// A page is 64-byte aligned relative to its range, but the unified range itself starts
/// wherever reserved + user memory end (not necessarily on 8 bytes), so the pairs start at the
/// page's first 8-byte boundary: at most one pair of the page is lost.
fn as_pairs(bytes: &mut [u8]) -> &mut [[u64; 2]] {
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    let bytes = &mut bytes[skip..];
    let whole = bytes.len() / 16 * 16;
    <[[u64; 2]]>::mut_from_bytes(&mut bytes[..whole]).expect("aligned to 8, whole pairs")
}

fn as_pairs_ref(bytes: &[u8]) -> &[[u64; 2]] {
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    let bytes = &bytes[skip..];
    let whole = bytes.len() / 16 * 16;
    <[[u64; 2]]>::ref_from_bytes(&bytes[..whole]).expect("aligned to 8, whole pairs")
}

fn copy_pairs(from: &Page, to: &mut Page, records: usize) {
    let src = as_pairs_ref(from.as_slice());
    as_pairs(to.as_mut_slice())[..records].copy_from_slice(&src[..records]);
}

/// Sorts the first `records` pairs of the array by prefix; returns the sorted pairs (in the
/// first or the second half of the array).
fn sort_pairs(array: &mut Page, records: usize) -> &[[u64; 2]] {
    let pairs = as_pairs(array.as_mut_slice());
    let half = pairs.len() / 2;
    let (data, buffer) = pairs.split_at_mut(half);
    let data = &mut data[..records];
    if records < RADIX_MIN_RECORDS {
        data.sort_unstable_by_key(|p| p[0]);
        return data;
    }
    let buffer = &mut buffer[..records];
    if radix_sort_pairs(data, buffer) {
        buffer
    } else {
        data
    }
}

/// Bits per radix digit (Spark's): 8 passes over a 64-bit key with a scatter frontier of 256
/// slots. (11-bit digits make 6 passes but scatter over 2048 places of a buffer of 4 KiB
/// pages, and measured slower here: TLB misses.)
const RADIX_BITS: u32 = 8;
const RADIX_DIGITS: usize = 1 << RADIX_BITS;
const RADIX_PASSES: usize = 64usize.div_ceil(RADIX_BITS as usize);

/// LSD radix sort of pairs by their first `u64`, stable, like Spark's
/// `RadixSort.sortKeyPrefixArray`; passes whose digit is the same in every key are skipped. `buffer` is as long as
/// `data`; returns `true` if the result ended up in `buffer`.
pub fn radix_sort_pairs(data: &mut [[u64; 2]], buffer: &mut [[u64; 2]]) -> bool {
    let n = data.len();
    assert_eq!(buffer.len(), n, "the radix buffer is as long as the data");
    let mask = (RADIX_DIGITS - 1) as u64;
    let mut counts = vec![[0u32; RADIX_DIGITS]; RADIX_PASSES];
    for p in data.iter() {
        let k = p[0];
        for (b, c) in counts.iter_mut().enumerate() {
            c[((k >> (RADIX_BITS as usize * b)) & mask) as usize] += 1;
        }
    }
    let mut src: &mut [[u64; 2]] = data;
    let mut dst: &mut [[u64; 2]] = buffer;
    let mut in_buffer = false;
    let mut offsets = vec![0usize; RADIX_DIGITS];
    for (b, c) in counts.iter().enumerate() {
        if c.iter().any(|&x| x as usize == n) {
            continue;
        }
        let mut sum = 0usize;
        for (o, &x) in offsets.iter_mut().zip(c.iter()) {
            *o = sum;
            sum += x as usize;
        }
        let shift = RADIX_BITS as usize * b;
        for p in src.iter() {
            let d = ((p[0] >> shift) & mask) as usize;
            let o = offsets[d];
            dst[o] = *p;
            offsets[d] = o + 1;
        }
        std::mem::swap(&mut src, &mut dst);
        in_buffer = !in_buffer;
    }
    in_buffer
}

/// Page number → the page's bytes, for decoding Tungsten addresses.
fn page_table(pages: &[Page]) -> Vec<&[u8]> {
    let max = pages
        .iter()
        .map(|p| p.page_number())
        .max()
        .map_or(0, |m| m + 1);
    let mut table: Vec<&[u8]> = vec![&[]; max as usize];
    for p in pages {
        table[p.page_number() as usize] = p.as_slice();
    }
    table
}

/// The sorted in-memory records, read through their addresses.
///
/// Records are scattered over the pages, so reading them in key order is a gather of cache
/// misses. The run resolves [`GATHER_BATCH`] addresses at a time (reading each record's length
/// prefix) in a loop with no dependency between iterations, so the CPU overlaps the misses,
/// then hands the records out one by one. (An explicit prefetch would need `unsafe`.)
struct MemRun<'a> {
    pairs: &'a [[u64; 2]],
    table: &'a [&'a [u8]],
    next: usize,
    batch: [&'a [u8]; GATHER_BATCH],
    batch_len: usize,
    batch_pos: usize,
    current: &'a [u8],
}

impl<'a> MemRun<'a> {
    fn new(pairs: &'a [[u64; 2]], table: &'a [&'a [u8]]) -> MemRun<'a> {
        MemRun {
            pairs,
            table,
            next: 0,
            batch: [&[]; GATHER_BATCH],
            batch_len: 0,
            batch_pos: 0,
            current: &[],
        }
    }

    #[inline]
    fn record_at(table: &[&'a [u8]], address: u64) -> &'a [u8] {
        let page = table[decode_page_number(address) as usize];
        let off = decode_offset(address) as usize;
        let len = u32::from_le_bytes(
            page[off..off + RECORD_LENGTH_BYTES]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        &page[off + RECORD_LENGTH_BYTES..off + RECORD_LENGTH_BYTES + len]
    }

    #[inline(never)]
    fn refill(&mut self) {
        let end = (self.next + GATHER_BATCH).min(self.pairs.len());
        let n = end - self.next;
        let mut touch = 0u8;
        for (slot, p) in self.batch.iter_mut().zip(&self.pairs[self.next..end]) {
            let r = Self::record_at(self.table, p[1]);
            // A record crosses into a second cache line more often than not: load its last
            // byte too, so that miss overlaps with the others of the batch.
            touch ^= r.last().copied().unwrap_or(0);
            *slot = r;
        }
        std::hint::black_box(touch);
        self.next = end;
        self.batch_len = n;
        self.batch_pos = 0;
    }
}

impl SortedRun for MemRun<'_> {
    #[inline]
    fn advance(&mut self) -> Result<bool, SpillError> {
        if self.batch_pos == self.batch_len {
            if self.next == self.pairs.len() {
                return Ok(false);
            }
            self.refill();
        }
        self.current = self.batch[self.batch_pos];
        self.batch_pos += 1;
        Ok(true)
    }

    #[inline]
    fn current(&self) -> &[u8] {
        self.current
    }
}

/// A run of the final merge: a spill file or the in-memory remainder.
// A handful of runs per merge: boxing the large variant would cost an indirection per record.
#[allow(clippy::large_enum_variant)]
enum Run<'a> {
    File(SpillReader),
    Mem(MemRun<'a>),
}

impl SortedRun for Run<'_> {
    #[inline]
    fn advance(&mut self) -> Result<bool, SpillError> {
        match self {
            Run::File(r) => r.advance(),
            Run::Mem(m) => m.advance(),
        }
    }

    #[inline]
    fn current(&self) -> &[u8] {
        match self {
            Run::File(r) => r.current_record(),
            Run::Mem(m) => m.current(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_sorts_and_is_stable() {
        let mut s = 7u64;
        let mut data: Vec<[u64; 2]> = (0..10_000u64)
            .map(|i| {
                let k = crate::data::splitmix64(&mut s);
                // Few distinct keys in the low bits, so ties exist; high bytes all equal for
                // some to exercise skipped passes.
                [k % 97, i]
            })
            .collect();
        let mut expected = data.clone();
        expected.sort_by_key(|p| p[0]); // stable
        let mut buffer = vec![[0u64; 2]; data.len()];
        let in_buffer = radix_sort_pairs(&mut data, &mut buffer);
        let got = if in_buffer { &buffer } else { &data };
        assert_eq!(got, &expected);
    }

    #[test]
    fn the_fast_generator_writes_the_partition_data() {
        for rb in [8u64, 13, 56, 100] {
            let data = PartitionData::new(99, rb * 50, rb);
            let mut a = vec![0u8; rb as usize];
            let mut b = vec![0u8; rb as usize];
            for i in 0..50 {
                data.write_record(i, &mut a);
                write_record(99, i, &mut b);
                assert_eq!(a, b, "record {i} of {rb} bytes");
            }
        }
    }

    #[test]
    fn radix_sort_full_width_keys() {
        let mut s = 1u64;
        let mut data: Vec<[u64; 2]> = (0..5000u64)
            .map(|i| [crate::data::splitmix64(&mut s), i])
            .collect();
        let mut expected = data.clone();
        expected.sort_by_key(|p| p[0]);
        let mut buffer = vec![[0u64; 2]; data.len()];
        let got = if radix_sort_pairs(&mut data, &mut buffer) {
            buffer
        } else {
            data
        };
        assert_eq!(got, expected);
    }
}
