//! Hash aggregation: Spark's `ExternalAppendOnlyMap` under `Spillable` (docs/spark-model.md §8), count and sum per key.
//!
//! # The map
//!
//! An open-addressing table (linear probing) of `[key, count, sum]` entries of three `u64`s,
//! held in one **execution page** (`Consumer::allocate_array`); `count == 0` marks a free
//! slot. Its size estimate is what the entries need at the table's maximum load of 1/2:
//! `entries × 48` bytes (Spark samples the map's size; here it is exact).
//!
//! # When to grow, when to spill: `Spillable.maybeSpill` (§8.2)
//!
//! `threshold` starts at `spark.shuffle.spill.initialMemoryThreshold` = 5 MiB. After every 32nd
//! record, if `estimate ≥ threshold` the map requests `2 × estimate − threshold` bytes: it asks
//! the task memory manager for a table that many bytes larger (its capacity rounded up to a
//! power of two), rehashes into it and frees the old one; `threshold` grows by the bytes the new
//! table added. If the request cannot be met it spills (`estimate ≥ threshold` still holds).
//! A spill writes the entries sorted by key hash (then key) as a run of 24-byte records
//! (`SpillKind::AggregationSpill`; compressed as the sort's runs are, when
//! `spark.shuffle.spill.compress` is true, docs/spark-model.md §19.3), adds the estimate to
//! `memoryBytesSpilled` and the file's bytes on disk to `diskBytesSpilled`, frees the table and
//! resets `threshold` to 5 MiB.
//!
//! Deviations, because spillway accounts every real byte: the table's bytes are pages taken
//! from the execution pool, including the first 5 MiB (Spark leaves the initial threshold
//! unaccounted); and a request is all or nothing (Spark adds a partial grant to the threshold,
//! but half a table holds nothing). Between checks the table may gain 31 entries, so it grows
//! (through the same request) whenever fewer than 32 free slots would remain under load 1/2.
//!
//! Spilling for another consumer (`Spillable.spill`, §8.3): only when the trigger is another
//! consumer and the task's Tungsten mode is ON_HEAP; the map then spills and frees its table.
//! Its own shortfalls are handled by `maybeSpill`, so asked as the requester it returns 0.
//!
//! # Merging
//!
//! The in-memory entries are compacted and sorted in their own page, then merged with the
//! spills by `(hash, key)` through [`SortedMerge`]; equal keys, adjacent in that order, are
//! combined. The output is verified against an independent `HashMap` pass over the
//! regenerated input ([`expected_aggregates`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::SharedState;
use std::time::Instant;

use zerocopy::{FromBytes, IntoBytes};

use crate::codec::Codec;
use crate::data::{splitmix64, stream_seed};
use crate::memory::{Consumer, ConsumerId, MemoryConsumer, MemoryMode, Page, TaskMemoryError};
use crate::metrics::ExecutorMetrics;
use crate::scheduler::TaskContext;
use crate::spill::{
    RecordDigest, SortedMerge, SortedRun, SpillError, SpillKind, SpillReader, SpillWriterOptions,
};
use crate::storage::disk::DiskBlockManager;

use super::{RunFile, TaskError, TaskMetrics, Verification};

/// `spark.shuffle.spill.initialMemoryThreshold`, 5 MiB.
pub const INITIAL_MEMORY_THRESHOLD: u64 = 5 * 1024 * 1024;
/// `maybeSpill` looks at the size every this many records.
pub const CHECK_PERIOD_RECORDS: u64 = 32;
/// Bytes of one entry: key, count, sum.
pub const ENTRY_BYTES: u64 = 24;
/// Estimated bytes per entry: the table is kept at most half full.
const ESTIMATE_BYTES_PER_ENTRY: u64 = 2 * ENTRY_BYTES;
/// Values are drawn from `0..VALUE_RANGE`, so sums never overflow.
pub const VALUE_RANGE: u64 = 1000;

/// What one aggregation task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSpec {
    pub records_per_task: u64,
    /// Bytes per record (at least 16: key, value); default 56.
    pub record_bytes: usize,
    pub seed: u64,
    /// Keys are drawn uniformly from `0..distinct_keys`.
    pub distinct_keys: u64,
}

impl Default for AggregateSpec {
    fn default() -> Self {
        AggregateSpec {
            records_per_task: 1_000_000,
            record_bytes: 56,
            seed: 42,
            distinct_keys: 100_000,
        }
    }
}

impl AggregateSpec {
    fn validate(&self) -> Result<(), TaskError> {
        if self.record_bytes < 16 {
            return Err(TaskError::InvalidSpec(format!(
                "record_bytes = {}: aggregation records carry an 8-byte key and an 8-byte value",
                self.record_bytes
            )));
        }
        if self.distinct_keys == 0 {
            return Err(TaskError::InvalidSpec("distinct_keys = 0".into()));
        }
        Ok(())
    }
}

/// Record `index` of stream `seed`: `key ‖ value ‖ filler`, key in `0..distinct_keys`, value in
/// `0..VALUE_RANGE`, little-endian.
#[inline]
pub fn write_record(seed: u64, distinct_keys: u64, index: u64, out: &mut [u8]) {
    let mut state = seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93);
    let key = splitmix64(&mut state) % distinct_keys;
    let value = splitmix64(&mut state) % VALUE_RANGE;
    out[0..8].copy_from_slice(&key.to_le_bytes());
    out[8..16].copy_from_slice(&value.to_le_bytes());
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = (index as u8).wrapping_add(i as u8);
    }
}

/// The reference: count and sum per key by a plain `HashMap` pass over the regenerated stream
/// (no pages, no spills, no merge).
pub fn expected_aggregates(spec: &AggregateSpec, seed: u64) -> HashMap<u64, (u64, u64)> {
    let mut m: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut buf = vec![0u8; spec.record_bytes];
    for i in 0..spec.records_per_task {
        write_record(seed, spec.distinct_keys, i, &mut buf);
        let key = u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes"));
        let value = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        let e = m.entry(key).or_insert((0, 0));
        e.0 += 1;
        e.1 += value;
    }
    m
}

/// Runs one aggregation task and verifies every key's count and sum.
pub fn run_aggregate_task(
    ctx: &TaskContext,
    spec: &AggregateSpec,
) -> Result<TaskMetrics, TaskError> {
    let start = Instant::now();
    spec.validate()?;
    let seed = stream_seed(spec.seed, ctx.stage_id as u64, ctx.partition as u64);
    let mut agg = SpillableAggregator::new(ctx);
    let mut buf = vec![0u8; spec.record_bytes];
    let insert_started = Instant::now();
    for i in 0..spec.records_per_task {
        if i.is_multiple_of(crate::interrupt::CHECK_EVERY) {
            crate::interrupt::check()?;
        }
        write_record(seed, spec.distinct_keys, i, &mut buf);
        let key = u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes"));
        let value = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        agg.insert(key, value)?;
    }
    let insert_ns = insert_started.elapsed().as_nanos() as u64;
    let mut expected = expected_aggregates(spec, seed);
    crate::interrupt::check()?;
    let mut expected_digest = RecordDigest::default();
    for (&k, &(c, s)) in &expected {
        expected_digest.add(entry_bytes(&[k, c, s]).as_slice());
    }
    let mut mismatches = 0u64;
    let mut first_mismatch = None;
    let mut output_digest = RecordDigest::default();
    let mut metrics = agg.finish(|key, count, sum| {
        output_digest.add(entry_bytes(&[key, count, sum]).as_slice());
        if expected.remove(&key) != Some((count, sum)) {
            mismatches += 1;
            first_mismatch.get_or_insert((key, count, sum));
        }
    })?;
    let missing = expected.len() as u64;
    metrics.records_in = spec.records_per_task;
    metrics.insert_ns = insert_ns;
    metrics.verification = Verification::new(
        expected_digest,
        output_digest,
        mismatches == 0 && missing == 0,
    );
    metrics.peak_execution_memory = ctx.memory.peak_execution_memory();
    metrics.executor_run_time = start.elapsed().as_millis() as u64;
    if !metrics.verification.ok {
        return Err(TaskError::Verification(format!(
            "aggregation of task {} (partition {}): {mismatches} keys with a wrong count or sum \
             (first: {first_mismatch:?}), {missing} keys missing, {} keys out, {} expected",
            ctx.task_attempt_id, ctx.partition, output_digest.records, expected_digest.records
        )));
    }
    Ok(metrics)
}

fn entry_bytes(e: &[u64; 3]) -> [u8; 24] {
    let mut b = [0u8; 24];
    b.copy_from_slice(e.as_bytes());
    b
}

/// The hash that places a key in the table and orders the spills (murmur3's `fmix64`).
#[inline]
pub fn key_hash(key: u64) -> u64 {
    let mut h = key;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The order in which the map writes its entries: spills, and the merge's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOrder {
    /// By key hash, then key (`ExternalAppendOnlyMap`'s hash-code order).
    Hash,
    /// By reduce partition (Spark's `HashPartitioner` over this many partitions), then key
    /// hash, then key: a map-side combine's `PartitionedAppendOnlyMap`, whose output goes to
    /// the partitions in order.
    Partition(u32),
}

impl EntryOrder {
    /// The sort key of an entry; ties are broken by the key itself.
    #[inline]
    pub fn rank(self, key: u64) -> u64 {
        match self {
            EntryOrder::Hash => key_hash(key),
            EntryOrder::Partition(n) => {
                (u64::from(crate::data::hash_partition(key, n)) << 40) | (key_hash(key) >> 24)
            }
        }
    }
}

struct State {
    order: EntryOrder,
    table: Option<Page>,
    /// Entries in the table.
    len: u64,
    threshold: u64,
    runs: Vec<RunFile>,
    merging: bool,
    own_id: Option<ConsumerId>,
    on_heap: bool,
    dirs: Arc<DiskBlockManager>,
    /// The spills' codec: `spark.shuffle.spill.compress` (`TempLocalBlockId`, docs/spark-model.md §19.3).
    codec: Option<Codec>,
    metrics: TaskMetrics,
    /// The executor's counters, which the timeline reads while the task runs.
    executor_metrics: Arc<ExecutorMetrics>,
}

/// The callback half: what the task memory manager holds.
type Shared = SharedState<State>;

impl MemoryConsumer for SharedState<State> {
    /// `Spillable.spill(size, trigger)`: only for another consumer, and only ON_HEAP.
    fn spill(
        &self,
        _size: u64,
        trigger: ConsumerId,
    ) -> Result<u64, crate::memory::ConsumerSpillError> {
        // The owner holds the state (merging): nothing can be released now.
        let Some(mut st) = self.try_lock() else {
            return Ok(0);
        };
        if st.merging || st.own_id == Some(trigger) || !st.on_heap || st.len == 0 {
            return Ok(0);
        }
        let freed = st
            .spill()
            .map_err(crate::memory::ConsumerSpillError::File)?;
        st.metrics.spills_for_others += 1;
        Ok(freed)
    }
}

/// Spark's `ExternalAppendOnlyMap` with a count-and-sum combiner.
pub struct SpillableAggregator {
    consumer: Consumer,
    shared: Arc<Shared>,
    /// Records since the last spill (`_elementsRead`).
    elements_read: u64,
}

impl SpillableAggregator {
    /// A map registered with the task's memory manager.
    pub fn new(ctx: &TaskContext) -> SpillableAggregator {
        Self::with_order(ctx, EntryOrder::Hash, "ExternalAppendOnlyMap")
    }

    /// A map whose spills and output follow `order`, registered under `name`.
    pub fn with_order(ctx: &TaskContext, order: EntryOrder, name: &str) -> SpillableAggregator {
        let shared = Arc::new(SharedState::new(State {
            order,
            table: None,
            len: 0,
            threshold: INITIAL_MEMORY_THRESHOLD,
            runs: Vec::new(),
            merging: false,
            own_id: None,
            on_heap: ctx.memory.tungsten_mode() == MemoryMode::OnHeap,
            dirs: Arc::clone(ctx.executor.local_dirs()),
            codec: ctx.executor.compression().spill,
            metrics: TaskMetrics::default(),
            executor_metrics: Arc::clone(ctx.memory.metrics()),
        }));
        let consumer = ctx.memory.register(name, Arc::clone(&shared) as _);
        shared.lock().own_id = Some(consumer.id());
        SpillableAggregator {
            consumer,
            shared,
            elements_read: 0,
        }
    }

    /// Spills and timings so far.
    pub fn metrics(&self) -> TaskMetrics {
        self.shared.lock().metrics.clone()
    }

    /// Adds `value` to `key`'s count and sum.
    #[inline]
    pub fn insert(&mut self, key: u64, value: u64) -> Result<(), TaskError> {
        self.insert_combined(key, 1, value)
    }

    /// Merges a combiner (`count` records summing to `sum`) into `key`'s (`mergeCombiners`).
    #[inline]
    pub fn insert_combined(&mut self, key: u64, count: u64, sum: u64) -> Result<(), TaskError> {
        debug_assert!(count > 0, "a combiner counts at least one record");
        {
            let mut st = self.shared.lock();
            if st.table.is_some() {
                st.upsert(key, count, sum);
            } else {
                drop(st);
                self.allocate_initial()?;
                self.shared.lock().upsert(key, count, sum);
            }
        }
        self.elements_read += 1;
        if self.elements_read.is_multiple_of(CHECK_PERIOD_RECORDS) {
            self.maybe_spill()?;
        }
        Ok(())
    }

    fn allocate_initial(&mut self) -> Result<(), TaskError> {
        let capacity = (INITIAL_MEMORY_THRESHOLD / ENTRY_BYTES).next_power_of_two();
        let mut page = self.consumer.allocate_array(table_longs(capacity))?;
        page.as_mut_slice().fill(0);
        let mut st = self.shared.lock();
        st.table = Some(page);
        st.len = 0;
        Ok(())
    }

    /// `Spillable.maybeSpill` (§8.2), plus growth whenever the next 32 records might not fit.
    fn maybe_spill(&mut self) -> Result<(), TaskError> {
        let (estimate, threshold, capacity, len) = {
            let st = self.shared.lock();
            let Some(table) = st.table.as_ref() else {
                return Ok(());
            };
            (
                st.len * ESTIMATE_BYTES_PER_ENTRY,
                st.threshold,
                table_capacity(table),
                st.len,
            )
        };
        let crowded = (len + CHECK_PERIOD_RECORDS) * 2 > capacity;
        if estimate < threshold && !crowded {
            return Ok(());
        }
        let request = (2 * estimate).saturating_sub(threshold).max(1);
        let wanted_capacity = (capacity * ENTRY_BYTES + request)
            .div_ceil(ENTRY_BYTES)
            .next_power_of_two()
            .max(capacity * 2);
        let grown = match self.consumer.allocate_array(table_longs(wanted_capacity)) {
            Ok(p) => Some(p),
            Err(TaskMemoryError::UnableToAcquire { .. } | TaskMemoryError::TooLargePage(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut st = self.shared.lock();
        match grown {
            Some(mut new_table) if st.table.is_some() => {
                new_table.as_mut_slice().fill(0);
                let old = st.table.take().expect("checked");
                rehash(&old, &mut new_table);
                let added = new_table.len().saturating_sub(old.len());
                st.table = Some(new_table);
                st.threshold += added;
                drop(st);
                drop(old);
            }
            // Spilled for someone else meanwhile: nothing to grow.
            Some(unused) => {
                drop(st);
                drop(unused);
            }
            None => {
                if st.len * ESTIMATE_BYTES_PER_ENTRY >= st.threshold || crowded {
                    st.spill()?;
                    drop(st);
                    self.elements_read = 0;
                }
            }
        }
        Ok(())
    }

    /// Merges the spills with the in-memory map; `out(key, count, sum)` sees every key once, in
    /// the map's order (`(rank, key)`, see [`EntryOrder`]). Spills are deleted once merged (and on any error).
    pub fn finish(self, mut out: impl FnMut(u64, u64, u64)) -> Result<TaskMetrics, TaskError> {
        let mut guard = self.shared.lock();
        guard.merging = true;
        let started = Instant::now();
        let st = &mut *guard;
        let len = st.len as usize;
        let sorted: &[[u64; 3]] = match st.table.as_mut() {
            Some(table) if len > 0 => {
                let t = Instant::now();
                let entries = as_entries(table.as_mut_slice());
                compact_and_sort(entries, len, st.order);
                st.metrics.sort_ns += t.elapsed().as_nanos() as u64;
                &entries[..len]
            }
            _ => &[],
        };
        let mut runs: Vec<Run<'_>> = Vec::with_capacity(st.runs.len() + 1);
        for f in &st.runs {
            runs.push(Run::File(SpillReader::open(f.path())?));
        }
        runs.push(Run::Mem(MemEntries {
            entries: sorted,
            next: 0,
            current: [0; 24],
        }));
        let order = st.order;
        let mut merge = SortedMerge::new(runs, |r: &[u8]| {
            let k = read_u64(r, 0);
            (order.rank(k), k)
        })?;
        let mut current: Option<[u64; 3]> = None;
        let mut keys_out = 0u64;
        let mut merged = 0u64;
        while let Some(r) = merge.next_record()? {
            merged += 1;
            if merged.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                crate::interrupt::check()?;
            }
            let (k, c, s) = (read_u64(r, 0), read_u64(r, 8), read_u64(r, 16));
            match current.as_mut() {
                Some(e) if e[0] == k => {
                    e[1] += c;
                    e[2] += s;
                }
                _ => {
                    if let Some(e) = current.replace([k, c, s]) {
                        out(e[0], e[1], e[2]);
                        keys_out += 1;
                    }
                }
            }
        }
        if let Some(e) = current {
            out(e[0], e[1], e[2]);
            keys_out += 1;
        }
        drop(merge);
        st.runs.clear();
        st.table = None;
        st.len = 0;
        st.metrics.spill_read_ns += started.elapsed().as_nanos() as u64;
        st.metrics.records_out = keys_out;
        Ok(st.metrics.clone())
    }
}

impl State {
    #[inline]
    fn upsert(&mut self, key: u64, count: u64, sum: u64) {
        let table = self.table.as_mut().expect("a table");
        let entries = as_entries(table.as_mut_slice());
        let mask = entries.len() - 1;
        let mut i = key_hash(key) as usize & mask;
        loop {
            let e = &mut entries[i];
            if e[1] == 0 {
                *e = [key, count, sum];
                self.len += 1;
                return;
            }
            if e[0] == key {
                e[1] += count;
                e[2] += sum;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Writes the entries sorted by `(rank, key)` as a spill and frees the table. Returns the
    /// bytes freed.
    fn spill(&mut self) -> Result<u64, SpillError> {
        let Some(mut table) = self.table.take() else {
            return Ok(0);
        };
        let started = Instant::now();
        let len = self.len as usize;
        let entries = as_entries(table.as_mut_slice());
        compact_and_sort(entries, len, self.order);
        let mut opts = SpillWriterOptions::new(SpillKind::AggregationSpill);
        opts.fixed_record_bytes = Some(ENTRY_BYTES as u32);
        opts.buffer_bytes = self.dirs.buffer_bytes();
        opts.codec = self.codec;
        // The table is freed only once the spill is on disk, so a spill that fails in one
        // local directory is written again in the next (`write_temp_file`).
        let info = self.dirs.write_temp_file("temp_local", &opts, &mut |w| {
            for (n, e) in entries[..len].iter().enumerate() {
                w.write_record(e.as_bytes())?;
                // Stopped by a signal: the unfinished writer deletes its file.
                if (n as u64 + 1).is_multiple_of(crate::interrupt::CHECK_EVERY) {
                    crate::interrupt::check()?;
                }
            }
            Ok(())
        })?;
        self.runs.push(RunFile::new(info.path.clone()));
        let freed = table.len();
        drop(table);
        let m = &mut self.metrics;
        m.spill_count += 1;
        m.memory_bytes_spilled += self.len * ESTIMATE_BYTES_PER_ENTRY;
        m.disk_bytes_spilled += info.file_bytes;
        self.executor_metrics.record_spill(info.file_bytes);
        m.spill_write_ns += started.elapsed().as_nanos() as u64;
        self.len = 0;
        self.threshold = INITIAL_MEMORY_THRESHOLD;
        Ok(freed)
    }
}

fn read_u64(r: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"))
}

/// The table page as entries (from its first 8-byte boundary; a power-of-two count).
fn as_entries(bytes: &mut [u8]) -> &mut [[u64; 3]] {
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    let bytes = &mut bytes[skip..];
    let n = bytes.len() / ENTRY_BYTES as usize;
    let n = if n == 0 { 0 } else { 1 << n.ilog2() };
    <[[u64; 3]]>::mut_from_bytes(&mut bytes[..n * ENTRY_BYTES as usize])
        .expect("aligned to 8, whole entries")
}

fn as_entries_ref(bytes: &[u8]) -> &[[u64; 3]] {
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    let bytes = &bytes[skip..];
    let n = bytes.len() / ENTRY_BYTES as usize;
    let n = if n == 0 { 0 } else { 1 << n.ilog2() };
    <[[u64; 3]]>::ref_from_bytes(&bytes[..n * ENTRY_BYTES as usize])
        .expect("aligned to 8, whole entries")
}

/// Longs of a table of `capacity` entries: one more than the entries need, because a page
/// need not start on 8 bytes (see [`as_entries`]).
fn table_longs(capacity: u64) -> u64 {
    capacity * 3 + 1
}

fn table_capacity(table: &Page) -> u64 {
    let skip = table.as_slice().as_ptr().align_offset(8) as u64;
    let n = (table.len().saturating_sub(skip)) / ENTRY_BYTES;
    if n == 0 { 0 } else { 1 << n.ilog2() }
}

fn rehash(old: &Page, new: &mut Page) {
    let old_entries = as_entries_ref(old.as_slice());
    let entries = as_entries(new.as_mut_slice());
    let mask = entries.len() - 1;
    for e in old_entries.iter().filter(|e| e[1] != 0) {
        let mut i = key_hash(e[0]) as usize & mask;
        while entries[i][1] != 0 {
            i = (i + 1) & mask;
        }
        entries[i] = *e;
    }
}

/// Moves the `len` live entries to the front and sorts them by `(rank, key)`.
fn compact_and_sort(entries: &mut [[u64; 3]], len: usize, order: EntryOrder) {
    let mut w = 0;
    for r in 0..entries.len() {
        if entries[r][1] != 0 {
            entries[w] = entries[r];
            w += 1;
        }
    }
    debug_assert_eq!(w, len, "live entries");
    entries[..w].sort_unstable_by_key(|e| (order.rank(e[0]), e[0]));
}

struct MemEntries<'a> {
    entries: &'a [[u64; 3]],
    next: usize,
    current: [u8; 24],
}

// A handful of runs per merge: boxing the large variant would cost an indirection per record.
#[allow(clippy::large_enum_variant)]
enum Run<'a> {
    File(SpillReader),
    Mem(MemEntries<'a>),
}

impl SortedRun for Run<'_> {
    fn advance(&mut self) -> Result<bool, SpillError> {
        match self {
            Run::File(r) => r.advance(),
            Run::Mem(m) => match m.entries.get(m.next) {
                Some(e) => {
                    m.current = entry_bytes(e);
                    m.next += 1;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }

    fn current(&self) -> &[u8] {
        match self {
            Run::File(r) => r.current_record(),
            Run::Mem(m) => &m.current,
        }
    }
}
