//! The memory store against Spark's `MemoryStoreSuite` and `BlockManagerSuite`
//! (core/src/test/scala/org/apache/spark/storage/): unrolling, LRU eviction, the same-RDD
//! rule, all-or-nothing eviction, pinned blocks, memory modes, and execution evicting cached
//! blocks (docs/spark-model.md §4, §6). Each test names the Spark test it follows.
//!
//! The executor is small (M = 8 MiB, storage region 4 MiB) and the blocks are 1.5–2 MB of
//! 1000-byte records, so that Spark's default unroll threshold (1 MiB) and growth factor (1.5)
//! decide what fits; `unroll_model` computes that from the spec, independently of the code.

mod storage_support;

use std::sync::Arc;

use spillway::data::RecordSource;
use spillway::memory::{MemoryConsumer, MemoryEvent, MemoryMode, Unspillable};
use spillway::storage::StorageLevel;
use spillway::storage::block_manager::ReadFrom;
use spillway::storage::memory_store::PutOutcome;
use storage_support::*;

const BLOCK: u64 = 2_000_000;

#[test]
fn unroll_model_matches_the_worked_numbers() {
    // A 2,000,000-byte block: the checks after elements 1057 and 1601 (0-based 1056, 1600)
    // request 1,057,000 × 1.5 − 1,048,576 and 1,601,000 × 1.5 − 1,585,500.
    let d = data(&rdd(0, 0), BLOCK);
    let (reqs, stored) = unroll_model(&lens(&d), UNROLL_THRESHOLD, 16, 1.5, u64::MAX);
    assert_eq!(stored, 2000);
    let expect = [(1056, 536_924), (1600, 816_000)];
    let got: Vec<(u64, u64)> = reqs.iter().map(|r| (r.after_element, r.bytes)).collect();
    assert_eq!(got, expect);
    assert_eq!(unroll_peak(&d), 2_401_500);
}

/// MemoryStoreSuite "safely unroll blocks" (first case): with room, the block is stored at its
/// exact size, no unroll memory is left, and its values come back.
#[test]
fn unroll_success_stores_exact_size() {
    let f = fixture(&[]);
    let b = rdd(0, 0);
    let d = data(&b, BLOCK);
    let task = f.ex.next_task_attempt_id();
    let mut src = d.iter();
    match f
        .store()
        .put_records(&b, StorageLevel::MEMORY_ONLY, task, RECORD_BYTES, &mut src)
    {
        PutOutcome::Stored { size } => assert_eq!(size, BLOCK),
        PutOutcome::Failed(p) => panic!("failed after {} records", p.records),
    }
    assert_eq!(f.store().current_unroll_memory(MemoryMode::OnHeap), 0);
    assert_eq!(f.ex.memory_manager().storage_memory_used(), BLOCK);
    assert_eq!(f.store().memory_used(MemoryMode::OnHeap), BLOCK);
    assert_eq!(f.store().size(&b), Some(BLOCK));
    let entry = f.store().get(&b).unwrap();
    let mut got = spillway::spill::RecordDigest::default();
    entry.for_each_record(|r| got.add(r));
    assert_eq!(got, digest(&d));
    assert_eq!(entry.records(), d.records());
}

/// MemoryStoreSuite "reserve/release unroll memory" and "safely unroll blocks" (huge block):
/// an unroll that cannot get memory returns the partial block, whose unroll memory stays
/// reserved for the task until it is dropped; its records are the generator's prefix.
#[test]
fn unroll_failure_holds_unroll_memory_until_the_partial_is_dropped() {
    let f = fixture(&[]);
    let b = rdd(0, 0);
    let d = data(&b, 20_000_000);
    let task = f.ex.next_task_attempt_id();
    let mut src = d.iter();
    let partial =
        match f
            .store()
            .put_records(&b, StorageLevel::MEMORY_ONLY, task, RECORD_BYTES, &mut src)
        {
            PutOutcome::Failed(p) => p,
            PutOutcome::Stored { size } => panic!("a 20 MB block was stored ({size}) in 8 MiB"),
        };
    let (reqs, stored) = unroll_model(&lens(&d), UNROLL_THRESHOLD, 16, 1.5, UNIFIED_BYTES);
    let granted: u64 = UNROLL_THRESHOLD
        + reqs
            .iter()
            .filter(|r| r.granted)
            .map(|r| r.bytes)
            .sum::<u64>();
    assert!(!reqs.last().unwrap().granted);
    assert_eq!(
        partial.records, stored,
        "unrolling stops at the refused request"
    );
    assert_eq!(partial.unroll_bytes(), granted);
    assert_eq!(f.store().current_unroll_memory(MemoryMode::OnHeap), granted);
    assert_eq!(f.ex.memory_manager().storage_memory_used(), granted);
    assert!(!f.store().contains(&b));
    let mut got = spillway::spill::RecordDigest::default();
    partial.for_each_record(|r| got.add(r));
    assert_eq!(got, digest_prefix(&d, stored));
    drop(partial);
    assert_eq!(f.store().current_unroll_memory(MemoryMode::OnHeap), 0);
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 0);
}

/// Spec §6.5a–c, observed through the task's unroll memory before each record is pulled:
/// 1 MiB first, then a request after elements 1, 17, 33, … once the size reached the
/// threshold, of `trunc(size × 1.5 − threshold)`; a refusal stops unrolling at once.
#[test]
fn unroll_requests_follow_spark_sequence() {
    for (bytes, last_record_bytes) in [(BLOCK, 0), (5_555_555, 555), (20_000_000, 0)] {
        let f = fixture(&[]);
        let b = rdd(0, 0);
        let d = data(&b, bytes);
        if last_record_bytes > 0 {
            assert_eq!(d.record_len(d.records() - 1) as u64, last_record_bytes);
        }
        let (reqs, stored) = unroll_model(&lens(&d), UNROLL_THRESHOLD, 16, 1.5, UNIFIED_BYTES);
        let mut spy = SpySource {
            inner: d.iter(),
            store: Arc::clone(f.store()),
            mode: MemoryMode::OnHeap,
            seen: Vec::new(),
        };
        let task = f.ex.next_task_attempt_id();
        let outcome =
            f.store()
                .put_records(&b, StorageLevel::MEMORY_ONLY, task, RECORD_BYTES, &mut spy);
        // Expected: before pull i, the initial 1 MiB plus every granted request made after an
        // element < i.
        let completes = reqs.iter().all(|r| r.granted);
        let pulls = if completes { stored + 1 } else { stored };
        let expected: Vec<u64> = (0..pulls)
            .map(|i| {
                UNROLL_THRESHOLD
                    + reqs
                        .iter()
                        .filter(|r| r.granted && r.after_element < i)
                        .map(|r| r.bytes)
                        .sum::<u64>()
            })
            .collect();
        assert_eq!(spy.seen.len(), expected.len(), "{bytes}: records pulled");
        let changes = |v: &[u64]| -> Vec<(usize, u64)> {
            v.iter()
                .enumerate()
                .filter(|(i, x)| *i == 0 || v[i - 1] != **x)
                .map(|(i, x)| (i, *x))
                .collect()
        };
        assert_eq!(changes(&spy.seen), changes(&expected), "{bytes}");
        match outcome {
            PutOutcome::Stored { size } => {
                assert!(
                    completes,
                    "{bytes}: stored although a request must be refused"
                );
                assert_eq!(size, bytes);
            }
            PutOutcome::Failed(p) => {
                assert!(!completes, "{bytes}: failed although every request fits");
                assert_eq!(p.records, stored);
                assert_eq!(p.unroll_bytes(), *expected.last().unwrap());
            }
        }
        assert_eq!(f.store().current_unroll_memory(MemoryMode::OnHeap), 0);
    }
}

/// BlockManagerSuite "in-memory LRU storage": reading a block makes it most recently used,
/// so the next eviction takes the least recently used other block.
#[test]
fn lru_eviction_order_follows_reads() {
    let f = fixture(&[]);
    let ids: Vec<_> = ["a1", "a2", "a3", "a4"].map(test_block).into();
    // Three fit: 2 × 2,000,000 cached + the 2,401,500 unroll peak ≤ 8 MiB; the fourth's unroll
    // (6,000,000 + 2,401,500 > 8,388,608) must evict one.
    assert!(2 * BLOCK + unroll_peak(&data(&ids[0], BLOCK)) <= UNIFIED_BYTES);
    assert!(3 * BLOCK + unroll_peak(&data(&ids[0], BLOCK)) > UNIFIED_BYTES);
    for b in &ids[..3] {
        assert!(
            f.put(b, StorageLevel::MEMORY_ONLY, &data(b, BLOCK))
                .in_memory
        );
    }
    assert_eq!(f.store().blocks_lru(), ids[..3].to_vec());
    // Reading a1 moves it to the most recently used end.
    f.read_ok(
        &ids[0],
        StorageLevel::MEMORY_ONLY,
        &data(&ids[0], BLOCK),
        ReadFrom::Memory,
    );
    assert_eq!(
        f.store().blocks_lru(),
        vec![ids[1].clone(), ids[2].clone(), ids[0].clone()]
    );
    // `contains` and `size` are not reads.
    assert!(f.store().contains(&ids[1]) && f.store().size(&ids[1]).is_some());
    assert!(
        f.put(&ids[3], StorageLevel::MEMORY_ONLY, &data(&ids[3], BLOCK))
            .in_memory
    );
    assert!(!f.in_memory(&ids[1]), "a2 was least recently used");
    assert!(f.in_memory(&ids[0]) && f.in_memory(&ids[2]) && f.in_memory(&ids[3]));
    assert_eq!(
        f.store().blocks_lru(),
        vec![ids[2].clone(), ids[0].clone(), ids[3].clone()]
    );
    let c = f.ex.block_manager().counters();
    assert_eq!((c.blocks_evicted, c.bytes_evicted), (1, BLOCK));
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 3 * BLOCK);
    // a2 is gone (MEMORY_ONLY): the next read recomputes it.
    f.read_ok(
        &ids[1],
        StorageLevel::MEMORY_ONLY,
        &data(&ids[1], BLOCK),
        ReadFrom::Recomputed,
    );
}

/// BlockManagerSuite "SPARK-1194 regression: fix the same-RDD rule for cache replacement":
/// storing rdd_0_x evicts rdd_1_0 even though rdd_0_0 is less recently used.
#[test]
fn same_rdd_rule_spark_1194() {
    let f = fixture(&[]);
    let l = StorageLevel::MEMORY_ONLY;
    for b in [rdd(0, 0), rdd(1, 0), rdd(0, 1)] {
        assert!(f.put(&b, l, &data(&b, BLOCK)).in_memory, "{b}");
    }
    f.read_ok(&rdd(1, 0), l, &data(&rdd(1, 0), BLOCK), ReadFrom::Memory);
    assert!(f.put(&rdd(0, 2), l, &data(&rdd(0, 2), BLOCK)).in_memory);
    assert!(f.in_memory(&rdd(0, 0)), "rdd_0_0 was not in store");
    assert!(f.in_memory(&rdd(0, 1)), "rdd_0_1 was not in store");
    assert!(f.in_memory(&rdd(0, 2)), "rdd_0_2 was not in store");
    assert!(!f.in_memory(&rdd(1, 0)), "rdd_1_0 was in store");
}

/// MemoryStore.evictBlocksToFreeSpace `blockIsEvictable`: another RDD's blocks and broadcast
/// blocks are evictable for an RDD block; the RDD's own blocks never are, so a put that only
/// its own blocks could make room for fails and evicts nothing.
#[test]
fn same_rdd_rule_evicts_broadcasts_and_other_rdds_only() {
    let f = fixture(&[]);
    let l = StorageLevel::MEMORY_ONLY;
    let bc = spillway::storage::BlockId::Broadcast { broadcast_id: 0 };
    for b in [bc.clone(), rdd(2, 0), rdd(1, 0)] {
        assert!(f.put(&b, l, &data(&b, BLOCK)).in_memory, "{b}");
    }
    // rdd_1_1 needs one block: the broadcast is least recently used.
    assert!(f.put(&rdd(1, 1), l, &data(&rdd(1, 1), BLOCK)).in_memory);
    assert!(!f.in_memory(&bc));
    assert!(f.in_memory(&rdd(2, 0)) && f.in_memory(&rdd(1, 0)));
    // rdd_1_2 needs one more: rdd_2_0 is the only other-RDD block.
    assert!(f.put(&rdd(1, 2), l, &data(&rdd(1, 2), BLOCK)).in_memory);
    assert!(!f.in_memory(&rdd(2, 0)));
    assert_eq!(
        f.store().blocks_lru(),
        vec![rdd(1, 0), rdd(1, 1), rdd(1, 2)]
    );
    // rdd_1_3: only rdd_1 blocks are cached, so nothing is evicted and the put fails.
    let r = f.put(&rdd(1, 3), l, &data(&rdd(1, 3), BLOCK));
    assert!(!r.in_memory && !r.on_disk);
    assert_eq!(
        f.store().blocks_lru(),
        vec![rdd(1, 0), rdd(1, 1), rdd(1, 2)]
    );
    assert_eq!(f.ex.block_manager().counters().blocks_evicted, 2);
    assert_eq!(f.ex.block_manager().counters().unroll_failures, 1);
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 3 * BLOCK);
    // A block of another RDD may evict rdd_1 blocks (LRU first).
    assert!(f.put(&rdd(3, 0), l, &data(&rdd(3, 0), BLOCK)).in_memory);
    assert_eq!(
        f.store().blocks_lru(),
        vec![rdd(1, 1), rdd(1, 2), rdd(3, 0)]
    );
}

/// MemoryStore.evictBlocksToFreeSpace: "all or nothing" — when the evictable blocks cannot
/// cover the space, none is dropped.
#[test]
fn eviction_is_all_or_nothing() {
    let f = fixture(&[]);
    let l = StorageLevel::MEMORY_ONLY;
    let bc = spillway::storage::BlockId::Broadcast { broadcast_id: 0 };
    let small = 100_000;
    assert!(f.put(&bc, l, &data(&bc, small)).in_memory);
    for s in 0..3 {
        assert!(f.put(&rdd(1, s), l, &data(&rdd(1, s), BLOCK)).in_memory);
    }
    // rdd_1_3's last request needs 3 × 2,000,000 + 100,000 + 2,401,500 − 8,388,608 = 112,892
    // bytes freed, more than the broadcast's 100,000: nothing may be evicted.
    let need = small + 3 * BLOCK + unroll_peak(&data(&rdd(1, 3), BLOCK)) - UNIFIED_BYTES;
    assert!(need > small);
    let r = f.put(&rdd(1, 3), l, &data(&rdd(1, 3), BLOCK));
    assert!(!r.in_memory);
    assert!(
        f.in_memory(&bc),
        "the broadcast was dropped although it could not make room"
    );
    assert_eq!(f.ex.block_manager().counters().blocks_evicted, 0);
    assert_eq!(
        f.ex.memory_manager().storage_memory_used(),
        small + 3 * BLOCK
    );
}

/// BlockManagerSuite "read-locked blocks cannot be evicted from memory": a block being read
/// (pinned by its `ReadGuard`) is skipped; with every candidate pinned nothing is evicted.
#[test]
fn blocks_being_read_are_not_evicted() {
    let f = fixture(&[]);
    let l = StorageLevel::MEMORY_ONLY;
    let ids: Vec<_> = ["a1", "a2", "a3", "a4", "a5"].map(test_block).into();
    for b in &ids[..3] {
        assert!(f.put(b, l, &data(b, BLOCK)).in_memory);
    }
    {
        let _reading = f.store().get(&ids[0]).unwrap();
        // The guard made a1 most recently used; pin it and make it least recent again.
        f.read_ok(&ids[1], l, &data(&ids[1], BLOCK), ReadFrom::Memory);
        f.read_ok(&ids[2], l, &data(&ids[2], BLOCK), ReadFrom::Memory);
        assert_eq!(f.store().blocks_lru()[0], ids[0]);
        assert!(f.put(&ids[3], l, &data(&ids[3], BLOCK)).in_memory);
        assert!(f.in_memory(&ids[0]), "a block being read was evicted");
        assert!(!f.in_memory(&ids[1]));
        // Pin every cached block: a5 cannot make room and nothing is dropped.
        let _g2 = f.store().get(&ids[2]).unwrap();
        let _g3 = f.store().get(&ids[3]).unwrap();
        assert!(!f.put(&ids[4], l, &data(&ids[4], BLOCK)).in_memory);
        assert!(f.in_memory(&ids[0]) && f.in_memory(&ids[2]) && f.in_memory(&ids[3]));
    }
    // Unpinned, the least recently used (a1) goes.
    assert!(f.put(&ids[4], l, &data(&ids[4], BLOCK)).in_memory);
    assert!(!f.in_memory(&ids[0]));
}

/// Spec §6.3 ("blocks of the same mode") and §7 (OFF_HEAP): OFF_HEAP blocks are accounted in
/// the off-heap storage pool and live in the off-heap arena; on-heap pressure never evicts
/// them, and off-heap pressure evicts only off-heap blocks (to disk: OFF_HEAP uses disk).
#[test]
fn modes_are_evicted_separately_and_off_heap_lives_in_the_arena() {
    let f = fixture(&[("spark.memory.offHeap.size", "8m")]);
    let arena =
        f.ex.off_heap_allocator()
            .expect("offHeap.size > 0 maps the arena");
    let unified = f.ex.unified_allocator();
    let off = rdd(5, 0);
    let r = f.put(&off, StorageLevel::OFF_HEAP, &data(&off, BLOCK));
    assert!(r.in_memory && !r.on_disk);
    assert_eq!(f.storage_used(MemoryMode::OffHeap), BLOCK);
    assert_eq!(f.storage_used(MemoryMode::OnHeap), 0);
    assert_eq!(f.store().memory_used(MemoryMode::OffHeap), BLOCK);
    assert!(
        arena.allocated_bytes() >= BLOCK,
        "off-heap block not in the arena"
    );
    assert_eq!(
        unified.allocated_bytes(),
        0,
        "off-heap block took unified memory"
    );
    // On-heap pressure: four on-heap blocks of other RDDs; the fourth must evict, and only an
    // on-heap block may go although the off-heap block is least recently used.
    for s in 0..4 {
        let b = rdd(10 + s, 0);
        assert!(
            f.put(&b, StorageLevel::MEMORY_ONLY_SER, &data(&b, BLOCK))
                .in_memory
        );
    }
    assert!(
        f.in_memory(&off),
        "on-heap pressure evicted an OFF_HEAP block"
    );
    assert!(!f.in_memory(&rdd(10, 0)));
    assert_eq!(f.storage_used(MemoryMode::OffHeap), BLOCK);
    // Off-heap pressure: three more OFF_HEAP blocks of rdd 6 evict rdd_5_0 (to disk) only.
    for s in 0..3 {
        let b = rdd(6, s);
        assert!(
            f.put(&b, StorageLevel::OFF_HEAP, &data(&b, BLOCK))
                .in_memory
        );
    }
    assert!(!f.in_memory(&off) && f.on_disk(&off));
    for s in 1..4 {
        assert!(
            f.in_memory(&rdd(10 + s, 0)),
            "off-heap pressure evicted rdd_{}_0",
            10 + s
        );
    }
    assert_eq!(f.storage_used(MemoryMode::OffHeap), 3 * BLOCK);
    assert_eq!(f.storage_used(MemoryMode::OnHeap), 3 * BLOCK);
    f.read_ok(
        &off,
        StorageLevel::OFF_HEAP,
        &data(&off, BLOCK),
        ReadFrom::Disk,
    );
}

/// MemoryStoreSuite "safely unroll blocks through putIteratorAsBytes" and BlockManagerSuite
/// "disk and memory storage with serialization": serialized levels cache on-heap and read
/// back; MEMORY_AND_DISK_SER blocks evicted by storage go to disk, MEMORY_ONLY_SER ones are
/// recomputed.
#[test]
fn serialized_levels() {
    let f = fixture(&[]);
    let ser = StorageLevel::MEMORY_ONLY_SER;
    let ser_disk = StorageLevel::MEMORY_AND_DISK_SER;
    let (a, b) = (rdd(1, 0), rdd(2, 0));
    assert!(f.put(&a, ser, &data(&a, BLOCK)).in_memory);
    assert!(f.put(&b, ser_disk, &data(&b, BLOCK)).in_memory);
    assert_eq!(f.storage_used(MemoryMode::OnHeap), 2 * BLOCK);
    f.read_ok(&a, ser, &data(&a, BLOCK), ReadFrom::Memory);
    f.read_ok(&a, ser, &data(&a, BLOCK), ReadFrom::Memory);
    // a is now more recent than b. Two blocks of rdd 3 evict b (to disk), then a (gone).
    for s in 0..2 {
        let c = rdd(3, s);
        assert!(f.put(&c, ser, &data(&c, BLOCK)).in_memory);
    }
    assert!(!f.in_memory(&b) && f.on_disk(&b));
    assert!(f.in_memory(&a));
    let c = rdd(3, 2);
    assert!(f.put(&c, ser, &data(&c, BLOCK)).in_memory);
    assert!(!f.in_memory(&a) && !f.on_disk(&a));
    let counters = f.ex.block_manager().counters();
    assert_eq!(counters.blocks_dropped_to_disk, 1);
    assert_eq!(counters.bytes_dropped_to_disk, BLOCK);
    f.read_ok(&b, ser_disk, &data(&b, BLOCK), ReadFrom::Disk);
    f.read_ok(&a, ser, &data(&a, BLOCK), ReadFrom::Recomputed);
    // A too-large MEMORY_AND_DISK_SER block goes straight to disk, whole.
    let big = rdd(4, 0);
    let r = f.put(&big, ser_disk, &data(&big, 12_000_000));
    assert!(!r.in_memory && r.on_disk);
    f.read_ok(
        &big,
        StorageLevel::DISK_ONLY,
        &data(&big, 12_000_000),
        ReadFrom::Disk,
    );
}

struct Holder;
impl MemoryConsumer for Holder {
    fn spill(
        &self,
        size: u64,
        trigger: spillway::memory::ConsumerId,
    ) -> Result<u64, spillway::memory::ConsumerSpillError> {
        Unspillable.spill(size, trigger)
    }
}

/// UnifiedMemoryManagerSuite "execution evicts storage" / "execution can evict cached blocks
/// beyond the storage region" (docs/spark-model.md §3.4, §4.2, §6.4): execution evicts least recently used
/// blocks for the bytes storage holds beyond its region (whole blocks, so the pool may end
/// below it), never the blocks inside it; MEMORY_AND_DISK blocks it evicts land on disk,
/// MEMORY_ONLY ones are gone and recomputed on the next read.
#[test]
fn execution_evicts_down_to_the_storage_region() {
    let f = fixture(&[]);
    let size = 1_500_000;
    let only = StorageLevel::MEMORY_ONLY;
    let disk = StorageLevel::MEMORY_AND_DISK;
    let blocks = [
        (rdd(2, 0), only),
        (rdd(1, 0), disk),
        (rdd(1, 1), disk),
        (rdd(1, 2), disk),
        (rdd(1, 3), disk),
    ];
    let peak = unroll_peak(&data(&rdd(1, 0), size));
    assert_eq!(peak, 1_585_500);
    assert!(4 * size + peak <= UNIFIED_BYTES, "five blocks fit");
    for (b, l) in &blocks {
        assert!(f.put(b, *l, &data(b, size)).in_memory, "{b}");
    }
    let snap = f.ex.memory_manager().snapshot().on_heap;
    assert_eq!(snap.storage_used_bytes, 5 * size);
    // The pool grew to the last put's peak by borrowing free execution memory.
    assert_eq!(snap.storage_pool_bytes, 4 * size + peak);

    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_events = Arc::clone(&events);
    f.ex.memory_manager()
        .set_event_sink(Arc::new(move |e: &MemoryEvent| {
            sink_events.lock().unwrap().push(e.clone())
        }));
    let task = f.ex.next_task_attempt_id();
    let tmm = f.ex.task_memory_manager(task);
    let consumer = tmm.register("holder", Arc::new(Holder));
    let granted = consumer.acquire_memory(UNIFIED_BYTES).unwrap();
    // Storage held 7,500,000, 3,305,696 beyond the region: the three least recently used
    // blocks (4,500,000) go; the two inside the region stay.
    let beyond_region = 5 * size - STORAGE_REGION_BYTES;
    assert_eq!(beyond_region, 3_305_696);
    let evicted = [rdd(2, 0), rdd(1, 0), rdd(1, 1)];
    for b in &evicted {
        assert!(!f.in_memory(b), "{b} not evicted");
    }
    assert!(f.in_memory(&rdd(1, 2)) && f.in_memory(&rdd(1, 3)));
    let snap = f.ex.memory_manager().snapshot().on_heap;
    assert_eq!(snap.storage_used_bytes, 2 * size);
    assert_eq!(
        snap.storage_pool_bytes,
        2 * size,
        "whole blocks: below the region"
    );
    assert_eq!(granted, UNIFIED_BYTES - 2 * size);
    // More execution cannot evict what is inside the storage region.
    assert_eq!(consumer.acquire_memory(1 << 20).unwrap(), 0);
    assert!(f.in_memory(&rdd(1, 2)) && f.in_memory(&rdd(1, 3)));
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 2 * size);
    // Where the evicted blocks went.
    assert!(
        !f.on_disk(&rdd(2, 0)),
        "a MEMORY_ONLY block was written to disk"
    );
    assert!(f.on_disk(&rdd(1, 0)) && f.on_disk(&rdd(1, 1)));
    let c = f.ex.block_manager().counters();
    assert_eq!((c.blocks_evicted, c.bytes_evicted), (3, 3 * size));
    assert_eq!(
        (c.blocks_dropped_to_disk, c.bytes_dropped_to_disk),
        (2, 2 * size)
    );
    let s = f.ex.block_manager().rdd_storage(2);
    assert_eq!(s.num_cached_partitions, 0, "{s:?}");
    // Every record comes back: from memory, from disk (rdd_1_0 cannot be re-cached: storage is
    // full and only rdd_1 blocks could make room), recomputed.
    f.read_ok(&rdd(1, 3), disk, &data(&rdd(1, 3), size), ReadFrom::Memory);
    f.read_ok(&rdd(1, 0), disk, &data(&rdd(1, 0), size), ReadFrom::Disk);
    assert!(!f.in_memory(&rdd(1, 0)));
    f.read_ok(
        &rdd(2, 0),
        only,
        &data(&rdd(2, 0), size),
        ReadFrom::Recomputed,
    );
    // Storage (unlike execution) may evict blocks inside the region (docs/spark-model.md §4.1c): re-caching
    // rdd_2_0 in the 3,000,000-byte pool drops rdd_1_2 (LRU) for its first 1 MiB and rdd_1_3
    // for its 536,924-byte request, both to disk.
    assert!(f.in_memory(&rdd(2, 0)));
    assert!(!f.in_memory(&rdd(1, 2)) && f.on_disk(&rdd(1, 2)));
    assert!(!f.in_memory(&rdd(1, 3)) && f.on_disk(&rdd(1, 3)));
    assert_eq!(f.ex.block_manager().counters().blocks_dropped_to_disk, 4);
    let refused = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, MemoryEvent::WillNotStore { .. }))
        .count();
    assert_eq!(
        refused, 0,
        "the initial unroll request fits the limit and just fails"
    );
    tmm.clean_up_all_allocated_memory(false).unwrap();
    drop(consumer);
    // Execution gone, a disk read re-caches the block (maybeCacheDiskValuesInMemory).
    f.read_ok(&rdd(1, 1), disk, &data(&rdd(1, 1), size), ReadFrom::Disk);
    assert!(f.in_memory(&rdd(1, 1)));
    f.read_ok(&rdd(1, 1), disk, &data(&rdd(1, 1), size), ReadFrom::Memory);
}

/// A generator that must never be pulled (a put that could not reserve its first unroll
/// memory takes no record).
struct Untouched;
impl RecordSource for Untouched {
    fn next_record(&mut self) -> Option<&[u8]> {
        panic!("a record was pulled");
    }
}

/// MemoryStore.putIterator: when the initial threshold cannot be reserved, no element is
/// unrolled and the put fails with no unroll memory held.
#[test]
fn failed_initial_reservation_pulls_nothing() {
    let f = fixture(&[]);
    let task = f.ex.next_task_attempt_id();
    let tmm = f.ex.task_memory_manager(task);
    let c = tmm.register("holder", Arc::new(Holder));
    // Execution takes everything but half a MiB: max storage memory < 1 MiB.
    assert_eq!(
        c.acquire_memory(UNIFIED_BYTES - (1 << 19)).unwrap(),
        UNIFIED_BYTES - (1 << 19)
    );
    let other = f.ex.next_task_attempt_id();
    match f.store().put_records(
        &rdd(0, 0),
        StorageLevel::MEMORY_ONLY,
        other,
        RECORD_BYTES,
        &mut Untouched,
    ) {
        PutOutcome::Failed(p) => {
            assert_eq!((p.records, p.unroll_bytes()), (0, 0));
        }
        PutOutcome::Stored { .. } => panic!("stored without memory"),
    }
    assert_eq!(f.store().current_unroll_memory(MemoryMode::OnHeap), 0);
    tmm.clean_up_all_allocated_memory(false).unwrap();
}

/// MemoryStore `PartiallyUnrolledIterator.hasNext` / `PartiallySerializedBlock
/// .finishWritingToStream` (docs/spark-model.md §6.5c): a failed unroll's memory is released as soon as the
/// unrolled prefix has been consumed — written to disk (MEMORY_AND_DISK) or handed to the task
/// (MEMORY_ONLY) — before the rest of the partition is computed. Observed from the visitor of
/// a recompute, which sees each record as it is pulled from the generator.
#[test]
fn failed_unroll_memory_is_released_before_the_rest_is_computed() {
    for level in [
        StorageLevel::MEMORY_AND_DISK,
        StorageLevel::MEMORY_ONLY,
        StorageLevel::MEMORY_AND_DISK_SER,
    ] {
        let f = fixture(&[]);
        let b = rdd(1, 0);
        let d = data(&b, 12_000_000);
        let (reqs, unrolled) = unroll_model(&lens(&d), UNROLL_THRESHOLD, 16, 1.5, UNIFIED_BYTES);
        assert!(!reqs.last().unwrap().granted);
        let store = Arc::clone(f.store());
        let mut seen = Vec::new();
        let task = f.ex.next_task_attempt_id();
        let (from, got) =
            f.ex.block_manager()
                .get_or_compute(&b, level, task, &d, &mut |_| {
                    seen.push(store.current_unroll_memory(MemoryMode::OnHeap))
                })
                .unwrap();
        assert_eq!((from, got), (ReadFrom::Recomputed, digest(&d)), "{level}");
        assert_eq!(seen.len() as u64, d.records());
        let unrolled = unrolled as usize;
        assert!(seen[..unrolled].iter().all(|&u| u > 0), "{level}");
        let held: Vec<_> = seen[unrolled..].iter().filter(|&&u| u > 0).collect();
        assert!(
            held.is_empty(),
            "{level}: {} of {} records after the failed unroll were computed while {} bytes of \
             unroll memory were still held",
            held.len(),
            seen.len() - unrolled,
            held[0]
        );
        f.store().release_all_unroll_memory_for_task(task);
    }
}
