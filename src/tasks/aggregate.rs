//! Hash aggregation: Spark's `ExternalAppendOnlyMap` under `Spillable` (docs/spark-model.md §8), count and sum per key.
//!
//! # The map
//!
//! Open-addressing tables (linear probing) of `[key, count, sum]` entries of three `u64`s;
//! `count == 0` marks a free slot. A key's home slot is its hash scaled to the table's size,
//! so a table may hold any number of entries. The map's size estimate is what its entries need
//! at a load of 1/2: `entries × 48` bytes (Spark samples its map's size; here it is exact).
//!
//! The map is made of the memory it was given, each piece a table of its own:
//!
//! - the **heap table**, for the first `spark.shuffle.spill.initialMemoryThreshold` (5 MiB)
//!   that Spark does not take from the pool (§8.1): heap memory nothing accounts, so a block of
//!   the **user range** (where spillway keeps every unaccounted heap object). It starts at 128
//!   entries (Spark's map starts with a small array too) and doubles, rehashing, up to the
//!   threshold's bytes; a failure is `java.lang.OutOfMemoryError: Java heap space` in the task.
//! - the **granted table**: a block of exactly the granted bytes of the heap's unified range,
//!   accounted to the map's ON_HEAP consumer. A new grant makes a new block of all the
//!   granted bytes into which the entries are rehashed (through a scratch block of the user
//!   range, as the JVM briefly holds the old array while `growTable` copies it; see
//!   `merge_into_one_table`). Should a block not be had, the grant is a table of its own.
//!
//! A key is looked up in every table that holds entries; a new key goes to the first table
//! below load 1/2 (the heap table growing first). Between two checks up to 31 new keys may
//! arrive; they take the tables' room above load 1/2 (up to 7/8), and should none be left, the
//! heap table grows past the threshold, as Spark's map grows on the heap between checks.
//!
//! # When to grow, when to spill: `Spillable.maybeSpill` (§8.2)
//!
//! `threshold` starts at the initial threshold. Every 32 records, if `estimate ≥ threshold`
//! the map asks for `2 × estimate − threshold` bytes (`acquireMemory`: the task memory manager
//! may spill other consumers, and grants what it can, possibly less or nothing); whatever is
//! granted becomes a granted table and is added to `threshold`, and the map spills iff
//! `estimate ≥ threshold` still. It also spills once more than
//! `spark.shuffle.spill.numElementsForceSpillThreshold` records arrived since its last spill.
//! `ExternalAppendOnlyMap` checks before inserting a record and counts it after;
//! `ExternalSorter` (the map-side combine, [`EntryOrder::Partition`]) counts, inserts, then
//! checks. A spill writes the entries sorted by `(rank, key)` as a run of 24-byte records in
//! frames of `spark.shuffle.spill.batchSize` (`SpillKind::AggregationSpill`; compressed when
//! `spark.shuffle.spill.compress` is true, docs/spark-model.md §19.3), adds the estimate to
//! `memoryBytesSpilled` and the file's bytes to `diskBytesSpilled`, frees every table (the
//! granted bytes, `threshold − initial`, go back to the pool) and resets `threshold`.
//!
//! The map is always an ON_HEAP consumer (Spark's `Spillable` extends
//! `MemoryConsumer(taskMemoryManager, MemoryMode.ON_HEAP)`), also in a task whose Tungsten
//! pages are OFF_HEAP.
//!
//! Spilling for another consumer (`Spillable.spill`, §8.3): only when the trigger is another
//! consumer and the task's Tungsten mode is ON_HEAP; the map then spills and returns
//! `threshold − initial` (also added to `memoryBytesSpilled`). Asked as the requester it
//! returns 0: its own shortfalls are handled by `maybeSpill`.
//!
//! # Merging
//!
//! Each table's entries are compacted and sorted in place, then merged with the spills by
//! `(rank, key)` through [`SortedMerge`]; equal keys, adjacent in that order, are combined.
//! The output is verified against an independent `HashMap` pass over the regenerated input
//! ([`expected_aggregates`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::SharedState;
use std::time::Instant;

use zerocopy::{FromBytes, IntoBytes};

use crate::codec::Codec;
use crate::data::{splitmix64, stream_seed};
use crate::memory::{Consumer, ConsumerId, MemoryConsumer, MemoryMode, TaskMemoryManager};
use crate::metrics::ExecutorMetrics;
use crate::region::{MemoryBlock, PageAllocator, UserMemoryError};
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

/// Smallest heap table, in entries; it doubles from here (Spark's map starts small too).
pub const MIN_TABLE_ENTRIES: u64 = 128;

/// Bytes of a block holding `entries` entries: one long more than they need, because a block
/// need not start on 8 bytes (see [`as_entries`]).
fn table_bytes(entries: u64) -> u64 {
    entries * ENTRY_BYTES + 8
}

/// One table of the map, over one block of memory (see the module doc).
struct Table {
    block: MemoryBlock,
    /// Entries the block holds.
    cap: usize,
    /// Live entries.
    len: usize,
}

impl Table {
    /// An empty table over `block` (zeroed here: every slot free).
    fn new(mut block: MemoryBlock) -> Table {
        block.fill(0);
        let cap = as_entries(block.as_mut_slice()).len();
        Table { block, cap, len: 0 }
    }

    #[inline]
    fn entries(&mut self) -> &mut [[u64; 3]] {
        as_entries(self.block.as_mut_slice())
    }

    /// Below load 1/2.
    #[inline]
    fn has_room(&self) -> bool {
        self.len < self.cap / 2
    }

    /// Below load 7/8 (and a free slot left): room for the keys that arrive between checks.
    fn has_slack(&self) -> bool {
        self.len + (self.cap / 8).max(1) < self.cap
    }

    /// Adds to `key`'s entry if this table holds it.
    #[inline]
    fn update(&mut self, key: u64, count: u64, sum: u64) -> bool {
        if self.len == 0 {
            return false;
        }
        let cap = self.cap;
        let entries = self.entries();
        let mut i = home(key, cap);
        loop {
            let e = &mut entries[i];
            if e[1] == 0 {
                return false;
            }
            if e[0] == key {
                e[1] += count;
                e[2] += sum;
                return true;
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// Inserts an entry whose key this table does not hold; the table has a free slot.
    #[inline]
    fn insert_new(&mut self, entry: [u64; 3]) {
        let cap = self.cap;
        let entries = self.entries();
        let mut i = home(entry[0], cap);
        while entries[i][1] != 0 {
            i += 1;
            if i == cap {
                i = 0;
            }
        }
        entries[i] = entry;
        self.len += 1;
    }

    /// Moves the live entries to the front, sorted by `(rank, key)`, and returns them.
    fn sorted(&mut self, order: EntryOrder) -> &[[u64; 3]] {
        let len = self.len;
        let entries = self.entries();
        compact_and_sort(entries, len, order);
        &entries[..len]
    }
}

/// A key's home slot in a table of `cap` entries: its hash, mixed again, scaled to the table.
/// The extra multiply matters: spills and map outputs are sorted by the hash's high bits, so a
/// merged run inserted in that order would otherwise land in slot order and pile up into one
/// ever-growing probe cluster.
#[inline]
fn home(key: u64, cap: usize) -> usize {
    let h = key_hash(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((u128::from(h) * cap as u128) >> 64) as usize
}

struct State {
    order: EntryOrder,
    /// The table over the initial threshold's bytes: unaccounted heap, in the user range.
    heap: Option<Table>,
    /// One table per grant of execution memory, in grant order; their bytes are
    /// `threshold − initial`.
    grants: Vec<Table>,
    /// Entries in all tables.
    len: u64,
    /// `spark.shuffle.spill.initialMemoryThreshold` (`initialMemoryThreshold`).
    initial: u64,
    /// `myMemoryThreshold`.
    threshold: u64,
    /// The heap table's largest size within the initial threshold.
    heap_max_entries: u64,
    runs: Vec<RunFile>,
    merging: bool,
    own_id: Option<ConsumerId>,
    /// The task's Tungsten mode is ON_HEAP (`Spillable.spill` acts only then).
    tungsten_on_heap: bool,
    tmm: TaskMemoryManager,
    user: Arc<PageAllocator>,
    dirs: Arc<DiskBlockManager>,
    /// The spills' codec: `spark.shuffle.spill.compress` (`TempLocalBlockId`, docs/spark-model.md §19.3).
    codec: Option<Codec>,
    /// `spark.shuffle.spill.batchSize`: records per frame of a spill.
    batch_records: u32,
    metrics: TaskMetrics,
    /// The executor's counters, which the timeline reads while the task runs.
    executor_metrics: Arc<ExecutorMetrics>,
}

/// The callback half: what the task memory manager holds.
type Shared = SharedState<State>;

impl MemoryConsumer for SharedState<State> {
    /// `Spillable.spill(size, trigger)`: only for another consumer, and only when the task's
    /// Tungsten mode is ON_HEAP; returns `threshold − initial`.
    fn spill(
        &self,
        _size: u64,
        trigger: ConsumerId,
    ) -> Result<u64, crate::memory::ConsumerSpillError> {
        // The owner holds the state (merging): nothing can be released now.
        let Some(mut st) = self.try_lock() else {
            return Ok(0);
        };
        // `forceSpill` is false for an empty map: nothing is released.
        if st.merging || st.own_id == Some(trigger) || !st.tungsten_on_heap || st.len == 0 {
            return Ok(0);
        }
        st.write_spill()
            .map_err(crate::memory::ConsumerSpillError::File)?;
        let freed = st.release_tables();
        st.metrics.memory_bytes_spilled += freed;
        st.metrics.spills_for_others += 1;
        Ok(freed)
    }
}

/// Spark's `ExternalAppendOnlyMap` (or `ExternalSorter`'s map) with a count-and-sum combiner.
pub struct SpillableAggregator {
    consumer: Consumer,
    shared: Arc<Shared>,
    /// The unified range's allocator: granted bytes are real blocks of the heap.
    unified: Arc<PageAllocator>,
    /// Records since the last spill (`_elementsRead`).
    elements_read: u64,
    /// `spark.shuffle.spill.numElementsForceSpillThreshold`.
    force_spill_elements: i64,
    /// `ExternalSorter`'s order of counting, inserting and checking (else
    /// `ExternalAppendOnlyMap`'s: check, insert, count).
    sorter_order: bool,
}

impl SpillableAggregator {
    /// A map registered with the task's memory manager.
    pub fn new(ctx: &TaskContext) -> SpillableAggregator {
        Self::with_order(ctx, EntryOrder::Hash, "ExternalAppendOnlyMap")
    }

    /// A map whose spills and output follow `order`, registered under `name`. With
    /// [`EntryOrder::Partition`] it is `ExternalSorter`'s map (a map-side combine) and checks
    /// as `ExternalSorter.insertAll` does.
    pub fn with_order(ctx: &TaskContext, order: EntryOrder, name: &str) -> SpillableAggregator {
        let conf = *ctx.executor.spillable();
        let shared = Arc::new(SharedState::new(State {
            order,
            heap: None,
            grants: Vec::new(),
            len: 0,
            initial: conf.initial_threshold,
            threshold: conf.initial_threshold,
            heap_max_entries: (conf.initial_threshold.saturating_sub(8) / ENTRY_BYTES)
                .max(MIN_TABLE_ENTRIES),
            runs: Vec::new(),
            merging: false,
            own_id: None,
            tungsten_on_heap: ctx.memory.tungsten_mode() == MemoryMode::OnHeap,
            tmm: ctx.memory.clone(),
            user: Arc::clone(ctx.executor.user_allocator()),
            dirs: Arc::clone(ctx.executor.local_dirs()),
            codec: ctx.executor.compression().spill,
            batch_records: conf.batch_records,
            metrics: TaskMetrics::default(),
            executor_metrics: Arc::clone(ctx.memory.metrics()),
        }));
        // `Spillable` is an ON_HEAP consumer whatever the task's Tungsten mode.
        let consumer = ctx
            .memory
            .register_in(name, MemoryMode::OnHeap, Arc::clone(&shared) as _);
        shared.lock().own_id = Some(consumer.id());
        SpillableAggregator {
            consumer,
            shared,
            unified: Arc::clone(ctx.executor.unified_allocator()),
            elements_read: 0,
            force_spill_elements: conf.force_spill_elements,
            sorter_order: matches!(order, EntryOrder::Partition(_)),
        }
    }

    /// Spills and timings so far.
    pub fn metrics(&self) -> TaskMetrics {
        self.shared.lock().metrics.clone()
    }

    /// `myMemoryThreshold`: the initial threshold plus the execution memory the map holds.
    pub fn threshold(&self) -> u64 {
        self.shared.lock().threshold
    }

    /// Bytes of the heap table (user range, not accounted); 0 before the first record.
    pub fn heap_table_bytes(&self) -> u64 {
        self.shared
            .lock()
            .heap
            .as_ref()
            .map_or(0, |t| t.block.len())
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
        if self.sorter_order {
            // `ExternalSorter.insertAll`: count, insert, `maybeSpillCollection`.
            self.elements_read += 1;
            self.shared.lock().upsert(key, count, sum)?;
            self.maybe_spill()
        } else {
            // `ExternalAppendOnlyMap.insertAll`: `maybeSpill`, insert, count.
            self.maybe_spill()?;
            self.shared.lock().upsert(key, count, sum)?;
            self.elements_read += 1;
            Ok(())
        }
    }

    /// `Spillable.maybeSpill` (§8.2).
    #[inline]
    fn maybe_spill(&mut self) -> Result<(), TaskError> {
        let mut should_spill = false;
        if self.elements_read.is_multiple_of(CHECK_PERIOD_RECORDS) {
            let (estimate, threshold) = {
                let st = self.shared.lock();
                (st.len * ESTIMATE_BYTES_PER_ENTRY, st.threshold)
            };
            // An empty map estimates 0 here (Spark's never does); it asks for nothing.
            if estimate >= threshold && estimate > 0 {
                self.acquire(2 * estimate - threshold)?;
                let st = self.shared.lock();
                should_spill = st.len > 0 && estimate >= st.threshold;
            }
        }
        should_spill |=
            i64::try_from(self.elements_read).unwrap_or(i64::MAX) > self.force_spill_elements;
        if should_spill {
            let mut st = self.shared.lock();
            // A forced spill of an empty map writes nothing (Spark writes an empty file).
            if st.len > 0 {
                let estimate = st.len * ESTIMATE_BYTES_PER_ENTRY;
                st.write_spill()?;
                st.metrics.memory_bytes_spilled += estimate;
            }
            st.release_tables();
            drop(st);
            self.elements_read = 0;
        }
        Ok(())
    }

    /// `acquireMemory(request)`: whatever is granted, possibly less than asked, becomes a
    /// table of exactly those bytes of the unified range and is added to the threshold.
    fn acquire(&mut self, request: u64) -> Result<u64, TaskError> {
        let granted = self.consumer.acquire_memory(request)?;
        if granted == 0 {
            return Ok(0);
        }
        if self.merge_into_one_table(granted) {
            return Ok(granted);
        }
        match self.unified.allocate(granted) {
            Ok(block) => {
                let table = Table::new(block);
                let mut st = self.shared.lock();
                st.grants.push(table);
                st.threshold += granted;
                Ok(granted)
            }
            Err(e) => {
                // The pool granted bytes the range cannot place (fragmentation): give them
                // back, as if nothing had been granted.
                crate::log::warn(
                    "Spillable",
                    &format!("Failed to allocate {granted} granted bytes ({e}); releasing them"),
                );
                self.consumer.free_memory(granted);
                Ok(0)
            }
        }
    }

    /// Makes the granted tables and a new grant one table of all the granted bytes, so that a
    /// key is looked up in two tables (heap and granted), not one per grant. The new block is
    /// taken first (not yet resident), the live entries are moved to a scratch block of the
    /// user range — unaccounted heap, as the JVM holds the old array while `growTable` copies
    /// it — the old blocks are freed, and only then is the new one written. `false` (nothing
    /// changed) when there is nothing to merge or either block cannot be had: the grant then
    /// becomes a table of its own.
    fn merge_into_one_table(&mut self, granted: u64) -> bool {
        let held = {
            let st = self.shared.lock();
            st.threshold - st.initial
        };
        if held == 0 {
            return false;
        }
        let Ok(block) = self.unified.allocate(held + granted) else {
            return false;
        };
        let mut st = self.shared.lock();
        // Spilled meanwhile: the granted tables are gone.
        if st.threshold - st.initial != held {
            return false;
        }
        let live: usize = st.grants.iter().map(|t| t.len).sum();
        let Ok(mut scratch) = st.user.allocate(table_bytes(live as u64)) else {
            return false;
        };
        let moved = as_entries(scratch.as_mut_slice());
        let mut n = 0;
        for t in &mut st.grants {
            for e in t.entries().iter().filter(|e| e[1] != 0) {
                moved[n] = *e;
                n += 1;
            }
        }
        debug_assert_eq!(n, live, "live entries of the granted tables");
        st.grants.clear();
        let mut table = Table::new(block);
        for e in &moved[..n] {
            table.insert_new(*e);
        }
        drop(scratch);
        st.grants.push(table);
        st.threshold += granted;
        true
    }

    /// Merges the spills with the in-memory map; `out(key, count, sum)` sees every key once, in
    /// the map's order (`(rank, key)`, see [`EntryOrder`]). Spills are deleted once merged (and on any error).
    pub fn finish(self, mut out: impl FnMut(u64, u64, u64)) -> Result<TaskMetrics, TaskError> {
        let mut guard = self.shared.lock();
        guard.merging = true;
        let started = Instant::now();
        let st = &mut *guard;
        let order = st.order;
        let sort_started = Instant::now();
        let tables: Vec<&[[u64; 3]]> = st
            .heap
            .iter_mut()
            .chain(st.grants.iter_mut())
            .filter(|t| t.len > 0)
            .map(|t| t.sorted(order))
            .collect();
        st.metrics.sort_ns += sort_started.elapsed().as_nanos() as u64;
        let mut runs: Vec<Run<'_>> = Vec::with_capacity(st.runs.len() + tables.len());
        for f in &st.runs {
            runs.push(Run::File(SpillReader::open(f.path())?));
        }
        for entries in tables {
            runs.push(Run::Mem(MemEntries {
                entries,
                next: 0,
                current: [0; 24],
            }));
        }
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
        st.release_tables();
        st.metrics.spill_read_ns += started.elapsed().as_nanos() as u64;
        st.metrics.records_out = keys_out;
        Ok(st.metrics.clone())
    }
}

impl Drop for SpillableAggregator {
    /// A map dropped before `finish` (an error) gives back its tables and granted memory here,
    /// so that nothing is left for task clean-up to report as a leak.
    fn drop(&mut self) {
        self.shared.lock().release_tables();
    }
}

impl State {
    #[inline]
    fn upsert(&mut self, key: u64, count: u64, sum: u64) -> Result<(), UserMemoryError> {
        if let Some(h) = self.heap.as_mut()
            && h.update(key, count, sum)
        {
            return Ok(());
        }
        for g in &mut self.grants {
            if g.update(key, count, sum) {
                return Ok(());
            }
        }
        self.table_for_new_key()?.insert_new([key, count, sum]);
        self.len += 1;
        Ok(())
    }

    /// The table a new key goes to: the heap table while it is below load 1/2 (growing it up
    /// to the initial threshold), else the first granted table below 1/2, else the first with
    /// slack; else the heap table grows past the threshold, as Spark's map grows on the heap
    /// between two checks.
    fn table_for_new_key(&mut self) -> Result<&mut Table, UserMemoryError> {
        let heap_cap = self.heap.as_ref().map_or(0, |h| h.cap as u64);
        if !self.heap.as_ref().is_some_and(Table::has_room) && heap_cap < self.heap_max_entries {
            self.grow_heap((heap_cap * 2).clamp(MIN_TABLE_ENTRIES, self.heap_max_entries))?;
        }
        if self.heap.as_ref().is_some_and(Table::has_room) {
            return Ok(self.heap.as_mut().expect("checked"));
        }
        if let Some(i) = self.grants.iter().position(Table::has_room) {
            return Ok(&mut self.grants[i]);
        }
        if self.heap.as_ref().is_some_and(Table::has_slack) {
            return Ok(self.heap.as_mut().expect("checked"));
        }
        if let Some(i) = self.grants.iter().position(Table::has_slack) {
            return Ok(&mut self.grants[i]);
        }
        let heap_cap = self.heap.as_ref().map_or(0, |h| h.cap as u64);
        self.grow_heap((heap_cap * 2).max(MIN_TABLE_ENTRIES))?;
        Ok(self.heap.as_mut().expect("just grown"))
    }

    /// Rehashes the heap table into a new block of the user range of `entries` entries.
    fn grow_heap(&mut self, entries: u64) -> Result<(), UserMemoryError> {
        let bytes = table_bytes(entries);
        let block = self
            .user
            .allocate(bytes)
            .map_err(|e| UserMemoryError::OutOfUserMemory {
                requested: bytes,
                task_used: self.heap.as_ref().map_or(0, |h| h.block.footprint_bytes()),
                range_free: e.free_bytes,
                range_len: e.range_len,
            })?;
        let mut table = Table::new(block);
        if let Some(mut old) = self.heap.take() {
            for e in old.entries().iter().filter(|e| e[1] != 0) {
                table.insert_new(*e);
            }
        }
        self.heap = Some(table);
        Ok(())
    }

    /// Frees every table: the heap table's block goes back to the user range, the granted
    /// blocks to the unified range and their bytes (`threshold − initial`) to the pool
    /// (`releaseMemory`); the threshold is the initial one again. Returns the bytes released.
    fn release_tables(&mut self) -> u64 {
        self.heap = None;
        // Memory first, accounting second (as a page does).
        self.grants.clear();
        self.len = 0;
        let granted = self.threshold - self.initial;
        if granted > 0 {
            let id = self.own_id.expect("registered");
            self.tmm.release_execution_memory(granted, id);
        }
        self.threshold = self.initial;
        granted
    }

    /// Writes the entries sorted by `(rank, key)` as a spill (the tables are left sorted and
    /// are freed by the caller).
    fn write_spill(&mut self) -> Result<(), SpillError> {
        let started = Instant::now();
        let order = self.order;
        let tables: Vec<&[[u64; 3]]> = self
            .heap
            .iter_mut()
            .chain(self.grants.iter_mut())
            .filter(|t| t.len > 0)
            .map(|t| t.sorted(order))
            .collect();
        let mut opts = SpillWriterOptions::new(SpillKind::AggregationSpill);
        opts.fixed_record_bytes = Some(ENTRY_BYTES as u32);
        opts.buffer_bytes = self.dirs.buffer_bytes();
        opts.codec = self.codec;
        opts.batch_records = self.batch_records;
        // The tables are freed only once the spill is on disk, so a spill that fails in one
        // local directory is written again in the next (`write_temp_file`).
        let info = self.dirs.write_temp_file("temp_local", &opts, &mut |w| {
            let mut n = 0u64;
            let mut write = |rec: &[u8]| -> Result<(), SpillError> {
                w.write_record(rec)?;
                n += 1;
                // Stopped by a signal: the unfinished writer deletes its file.
                if n.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                    crate::interrupt::check()?;
                }
                Ok(())
            };
            if let [only] = tables.as_slice() {
                for e in only.iter() {
                    write(e.as_bytes())?;
                }
                return Ok(());
            }
            let runs: Vec<Run<'_>> = tables
                .iter()
                .map(|entries| {
                    Run::Mem(MemEntries {
                        entries,
                        next: 0,
                        current: [0; 24],
                    })
                })
                .collect();
            let mut merge = SortedMerge::new(runs, |r: &[u8]| {
                let k = read_u64(r, 0);
                (order.rank(k), k)
            })?;
            while let Some(r) = merge.next_record()? {
                write(r)?;
            }
            Ok(())
        })?;
        self.runs.push(RunFile::new(info.path.clone()));
        let m = &mut self.metrics;
        m.spill_count += 1;
        m.disk_bytes_spilled += info.file_bytes;
        self.executor_metrics.record_spill(info.file_bytes);
        m.spill_write_ns += started.elapsed().as_nanos() as u64;
        Ok(())
    }
}

fn read_u64(r: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"))
}

/// A block as entries (from its first 8-byte boundary; as many whole entries as fit).
fn as_entries(bytes: &mut [u8]) -> &mut [[u64; 3]] {
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    let bytes = &mut bytes[skip..];
    let n = bytes.len() / ENTRY_BYTES as usize;
    <[[u64; 3]]>::mut_from_bytes(&mut bytes[..n * ENTRY_BYTES as usize])
        .expect("aligned to 8, whole entries")
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
