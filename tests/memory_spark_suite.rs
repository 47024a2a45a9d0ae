//! Expectations ported from Spark's `UnifiedMemoryManagerSuite` and `MemoryManagerSuite`
//! (`core/src/test/scala/org/apache/spark/memory/`), run in both memory modes.
//!
//! Spark's suites use a mocked `MemoryStore` that frees exactly the bytes asked for; here the
//! evictor is `FakeBlockStore`, which drops whole blocks as the real `MemoryStore` does. Where
//! that changes a number, the blocks are sized so the Spark expectation still holds, or the
//! comment says what the real behaviour is instead.

use std::sync::Arc;

use spillway::memory::testing::{EventLog, FakeBlockStore};
use spillway::memory::{MemoryEvent, MemoryMode, PoolSizes, UnifiedMemoryManager};
use spillway::storage::BlockId;

fn block(name: &str) -> BlockId {
    BlockId::Test(name.to_string())
}

/// Spark's `makeThings(maxMemory)`: `spark.memory.fraction = 1`, `storageFraction = 0.5`,
/// here with the same sizes for both modes so each scenario runs on- and off-heap.
fn make_things(max_memory: u64) -> (UnifiedMemoryManager, Arc<FakeBlockStore>) {
    make_things_with_region(max_memory, max_memory / 2)
}

fn make_things_with_region(
    max_memory: u64,
    region: u64,
) -> (UnifiedMemoryManager, Arc<FakeBlockStore>) {
    let mm = UnifiedMemoryManager::new(PoolSizes::symmetric(max_memory, region));
    let store = FakeBlockStore::new();
    mm.set_evictor(store.clone());
    (mm, store)
}

fn storage_used(mm: &UnifiedMemoryManager, mode: MemoryMode) -> u64 {
    mm.snapshot().mode(mode).storage_used_bytes
}

fn execution_used(mm: &UnifiedMemoryManager, mode: MemoryMode) -> u64 {
    mm.snapshot().mode(mode).execution_used_bytes
}

// UnifiedMemoryManagerSuite: "basic execution memory"
#[test]
fn basic_execution_memory() {
    for mode in MemoryMode::ALL {
        let (mm, _) = make_things(1000);
        let task = 0;
        assert_eq!(mm.execution_memory_used(), 0);
        assert_eq!(mm.acquire_execution_memory(10, task, mode), 10);
        assert_eq!(mm.execution_memory_used(), 10);
        assert_eq!(mm.acquire_execution_memory(100, task, mode), 100);
        // Acquire up to the max
        assert_eq!(mm.acquire_execution_memory(1000, task, mode), 890);
        assert_eq!(mm.execution_memory_used(), 1000);
        assert_eq!(mm.acquire_execution_memory(1, task, mode), 0);
        assert_eq!(mm.execution_memory_used(), 1000);
        mm.release_execution_memory(800, task, mode);
        assert_eq!(mm.execution_memory_used(), 200);
        // Acquire after release
        assert_eq!(mm.acquire_execution_memory(1, task, mode), 1);
        assert_eq!(mm.execution_memory_used(), 201);
        // Release beyond what was acquired
        mm.release_execution_memory(1000, task, mode);
        assert_eq!(mm.execution_memory_used(), 0);
    }
}

// UnifiedMemoryManagerSuite: "basic storage memory" (whole-block eviction: see comments)
#[test]
fn basic_storage_memory() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000);
        assert_eq!(mm.storage_memory_used(), 0);
        assert!(store.cache(&mm, block("a"), 10, mode));
        assert!(store.cache(&mm, block("b"), 100, mode));
        assert!(store.eviction_requests().is_empty());
        assert_eq!(mm.storage_memory_used(), 110);
        // Acquire more than the max, not granted, nothing evicted
        assert!(!store.cache(&mm, block("too-big"), 1001, mode));
        assert!(store.eviction_requests().is_empty());
        assert_eq!(mm.storage_memory_used(), 110);
        // Acquire up to the max: LRU eviction of the 110 bytes cached
        assert!(store.cache(&mm, block("c"), 1000, mode));
        assert_eq!(
            store.eviction_requests(),
            vec![(Some(block("c")), 110, mode, 110)]
        );
        assert_eq!(store.evicted(), vec![block("a"), block("b")]);
        assert_eq!(mm.storage_memory_used(), 1000);
        // Spark's mock frees exactly 1 byte here; a real store drops the whole 1000-byte block.
        assert!(store.cache(&mm, block("d"), 1, mode));
        assert_eq!(
            store.eviction_requests()[1],
            (Some(block("d")), 1, mode, 1000)
        );
        assert_eq!(mm.storage_memory_used(), 1);
        // Acquire after release
        assert!(store.cache(&mm, block("e"), 800, mode));
        mm.release_storage_memory(600, mode);
        assert_eq!(mm.storage_memory_used(), 201);
        mm.release_all_storage_memory();
        assert_eq!(mm.storage_memory_used(), 0);
        assert!(mm.acquire_storage_memory(&block("f"), 1, mode));
        assert_eq!(store.eviction_requests().len(), 2);
        assert_eq!(mm.storage_memory_used(), 1);
        // Release beyond what was acquired
        mm.release_storage_memory(100, mode);
        assert_eq!(mm.storage_memory_used(), 0);
    }
}

// UnifiedMemoryManagerSuite: "execution evicts storage"
#[test]
fn execution_evicts_storage() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000);
        let task = 0;
        // Acquire enough storage memory to exceed the storage region (as two blocks, so the
        // 50-byte eviction below drops exactly 50 bytes as Spark's mock does)
        assert!(store.cache(&mm, block("small"), 50, mode));
        assert!(store.cache(&mm, block("big"), 700, mode));
        assert!(store.eviction_requests().is_empty());
        assert_eq!(mm.execution_memory_used(), 0);
        assert_eq!(mm.storage_memory_used(), 750);
        // Execution needs to request 250 bytes to evict storage memory
        assert_eq!(mm.acquire_execution_memory(100, task, mode), 100);
        assert_eq!(mm.execution_memory_used(), 100);
        assert_eq!(mm.storage_memory_used(), 750);
        assert!(store.eviction_requests().is_empty());
        // Execution wants 200 bytes but only 150 are free, so storage is evicted
        assert_eq!(mm.acquire_execution_memory(200, task, mode), 200);
        assert_eq!(mm.execution_memory_used(), 300);
        assert_eq!(mm.storage_memory_used(), 700);
        assert_eq!(store.eviction_requests(), vec![(None, 50, mode, 50)]);
        assert_eq!(store.evicted(), vec![block("small")]);
        mm.release_all_storage_memory();
        assert_eq!(mm.execution_memory_used(), 300);
        assert_eq!(mm.storage_memory_used(), 0);
        // Acquire some storage memory again, but this time keep it within the storage region
        assert!(mm.acquire_storage_memory(&block("x"), 400, mode));
        assert_eq!(store.eviction_requests().len(), 1);
        assert_eq!(mm.storage_memory_used(), 400);
        assert_eq!(mm.execution_memory_used(), 300);
        // Execution cannot evict storage because the latter is within the storage fraction,
        // so grant only what's remaining without evicting anything, i.e. 1000 - 300 - 400 = 300
        assert_eq!(mm.acquire_execution_memory(400, task, mode), 300);
        assert_eq!(mm.execution_memory_used(), 600);
        assert_eq!(mm.storage_memory_used(), 400);
        assert_eq!(store.eviction_requests().len(), 1);
    }
}

// UnifiedMemoryManagerSuite: "execution memory requests smaller than free memory should evict
// storage (SPARK-12165)"
#[test]
fn execution_requests_smaller_than_free_memory_evict_storage_only_when_necessary() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000);
        assert!(store.cache(&mm, block("a"), 200, mode));
        assert!(store.cache(&mm, block("b"), 500, mode));
        assert_eq!(mm.storage_memory_used(), 700);
        // A request that fits in free execution memory evicts nothing.
        assert_eq!(mm.acquire_execution_memory(300, 0, mode), 300);
        assert!(store.eviction_requests().is_empty());
        mm.release_execution_memory(300, 0, mode);
        // 500 > 300 free: the 300 free bytes alone are not enough, 200 must be evicted.
        assert_eq!(mm.acquire_execution_memory(500, 0, mode), 500);
        assert_eq!(store.eviction_requests(), vec![(None, 200, mode, 200)]);
        assert_eq!(mm.storage_memory_used(), 500);
        assert_eq!(mm.execution_memory_used(), 500);
        assert_eq!(store.evicted(), vec![block("a")]);
    }
}

// UnifiedMemoryManagerSuite: "storage does not evict execution"
#[test]
fn storage_does_not_evict_execution() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000);
        let task = 0;
        // Acquire enough execution memory to exceed the execution region
        assert_eq!(mm.acquire_execution_memory(800, task, mode), 800);
        assert_eq!(mm.execution_memory_used(), 800);
        assert_eq!(mm.storage_memory_used(), 0);
        // Storage should not be able to evict execution
        assert!(store.cache(&mm, block("a"), 100, mode));
        assert_eq!(mm.execution_memory_used(), 800);
        assert_eq!(mm.storage_memory_used(), 100);
        assert!(store.eviction_requests().is_empty());
        assert!(!store.cache(&mm, block("b"), 250, mode));
        assert_eq!(mm.execution_memory_used(), 800);
        assert_eq!(mm.storage_memory_used(), 100);
        // Do not attempt to evict blocks, since evicting will not free enough memory:
        // 250 > 1000 - 800 is refused by the limit check before the store is asked.
        assert!(store.eviction_requests().is_empty());
        mm.release_execution_memory(1000, task, mode);
        store.remove(&mm, &block("a"));
        // Acquire some execution memory again, but this time keep it within the execution region
        assert_eq!(mm.acquire_execution_memory(200, task, mode), 200);
        assert_eq!(mm.execution_memory_used(), 200);
        assert_eq!(mm.storage_memory_used(), 0);
        // Storage should still not be able to evict execution
        assert!(store.cache(&mm, block("c"), 750, mode));
        assert_eq!(mm.execution_memory_used(), 200);
        assert_eq!(mm.storage_memory_used(), 750);
        assert!(store.eviction_requests().is_empty()); // since there were 800 bytes free
        assert!(!store.cache(&mm, block("d"), 850, mode));
        assert_eq!(mm.execution_memory_used(), 200);
        assert_eq!(mm.storage_memory_used(), 750);
        // 850 > 1000 - 200: refused by the limit check, the store is not asked.
        assert!(store.eviction_requests().is_empty());
    }
}

// UnifiedMemoryManagerSuite: "not enough free memory in the storage pool --OFF_HEAP"
// (max storage memory refusal), run in both modes.
#[test]
fn max_storage_memory_refusal_and_borrowing() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000);
        let log = EventLog::attach(&mm);
        assert_eq!(mm.acquire_execution_memory(400, 0, mode), 400);
        assert_eq!(mm.storage_memory_used(), 0);
        assert_eq!(mm.execution_memory_used(), 400);
        // Fail fast: 700 > 1000 - 400
        assert!(!store.cache(&mm, block("big"), 700, mode));
        assert_eq!(mm.storage_memory_used(), 0);
        assert_eq!(
            log.messages(),
            vec![
                "Will not store test_big as the required space (700 bytes) exceeds our memory \
                 limit (600 bytes)"
            ]
        );
        // Spark caches 100 as one block; two halves let a 50-byte eviction free exactly 50.
        assert!(store.cache(&mm, block("a1"), 50, mode));
        assert!(store.cache(&mm, block("a2"), 50, mode));
        assert_eq!(mm.storage_memory_used(), 100);
        // Borrow 50 from execution memory
        assert!(store.cache(&mm, block("b"), 450, mode));
        assert!(store.eviction_requests().is_empty());
        assert_eq!(mm.storage_memory_used(), 550);
        let s = *mm.snapshot().mode(mode);
        assert_eq!((s.execution_pool_bytes, s.storage_pool_bytes), (450, 550));
        // Borrow 50 from execution memory and evict 50 to free space
        assert!(store.cache(&mm, block("c"), 100, mode));
        assert_eq!(
            store.eviction_requests(),
            vec![(Some(block("c")), 50, mode, 50)]
        );
        assert_eq!(mm.storage_memory_used(), 600);
        let s = *mm.snapshot().mode(mode);
        assert_eq!((s.execution_pool_bytes, s.storage_pool_bytes), (400, 600));
        assert_eq!(
            mm.max_on_heap_storage_memory() + mm.max_off_heap_storage_memory(),
            1600
        );
    }
}

// UnifiedMemoryManagerSuite: "execution can evict cached blocks when there are multiple active
// tasks (SPARK-12155)"
#[test]
fn execution_can_evict_cached_blocks_with_multiple_active_tasks() {
    for mode in MemoryMode::ALL {
        // storageFraction 0.0
        let (mm, store) = make_things_with_region(1000, 0);
        assert_eq!(mm.acquire_execution_memory(100, 0, mode), 100);
        assert_eq!(mm.acquire_execution_memory(100, 1, mode), 100);
        // Fill up all of the remaining memory with storage.
        assert!(store.cache(&mm, block("a"), 100, mode));
        assert!(store.cache(&mm, block("b"), 700, mode));
        assert!(store.eviction_requests().is_empty());
        assert_eq!(mm.storage_memory_used(), 800);
        assert_eq!(mm.execution_memory_used(), 200);
        // A task should still be able to allocate 100 bytes execution memory by evicting blocks
        assert_eq!(mm.acquire_execution_memory(100, 0, mode), 100);
        assert_eq!(store.eviction_requests(), vec![(None, 100, mode, 100)]);
        assert_eq!(mm.execution_memory_used(), 300);
        assert_eq!(mm.storage_memory_used(), 700);
    }
}

// Spec §4.2/§4.3 (UnifiedMemoryManager.maybeGrowExecutionPool): execution evicts cached blocks
// down to the storage region and not below; whole blocks can leave the pool below the region.
#[test]
fn execution_evicts_down_to_the_storage_region_and_not_below() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000); // region 500
        for name in ["a", "b", "c"] {
            assert!(store.cache(&mm, block(name), 300, mode));
        }
        let s = *mm.snapshot().mode(mode);
        assert_eq!((s.storage_pool_bytes, s.storage_used_bytes), (900, 900));
        // Reclaimable = 900 - 500 = 400; the store drops whole 300-byte blocks: 600.
        assert_eq!(mm.acquire_execution_memory(1000, 0, mode), 700);
        assert_eq!(store.eviction_requests(), vec![(None, 400, mode, 600)]);
        assert_eq!(store.evicted(), vec![block("a"), block("b")]);
        let s = *mm.snapshot().mode(mode);
        assert_eq!(
            s.storage_pool_bytes, 300,
            "storage pool ends below the 500-byte region"
        );
        assert_eq!(s.storage_used_bytes, 300);
        assert_eq!(s.execution_pool_bytes, 700);
        // The remaining block is inside the region: execution cannot evict below it.
        assert_eq!(mm.acquire_execution_memory(100, 0, mode), 0);
        assert!(store.contains(&block("c")));
        assert_eq!(store.eviction_requests().len(), 1);
    }
}

// Eviction respects the RDD exclusion: storage never evicts blocks of the RDD it is caching.
#[test]
fn storage_eviction_skips_the_requesting_rdd() {
    for mode in MemoryMode::ALL {
        let (mm, store) = make_things(1000);
        let rdd = |r, s| BlockId::Rdd {
            rdd_id: r,
            split_index: s,
        };
        assert!(store.cache(&mm, rdd(1, 0), 600, mode));
        assert!(store.cache(&mm, rdd(2, 0), 300, mode));
        // Needs 200 more: rdd_1_0 is same-RDD, rdd_2_0 is enough.
        assert!(store.cache(&mm, rdd(1, 1), 300, mode));
        assert_eq!(store.evicted(), vec![rdd(2, 0)]);
        // Needs 800: only rdd_1_* are cached, none evictable for RDD 1.
        assert!(!store.cache(&mm, rdd(1, 2), 900, mode));
        assert_eq!(mm.storage_memory_used(), 900);
    }
}

// MemoryManagerSuite: "off-heap execution allocations cannot exceed limit", plus independence of
// the two modes' pools.
#[test]
fn off_heap_pools_are_independent_of_on_heap_pools() {
    let mm = UnifiedMemoryManager::new(PoolSizes {
        on_heap_unified: 1000,
        on_heap_storage_region: 500,
        off_heap_unified: 2000,
        off_heap_storage_region: 1000,
    });
    let store = FakeBlockStore::new();
    mm.set_evictor(store.clone());
    assert_eq!(
        mm.acquire_execution_memory(1000, 1, MemoryMode::OnHeap),
        1000
    );
    assert_eq!(mm.acquire_execution_memory(300, 1, MemoryMode::OnHeap), 0);
    assert_eq!(mm.max_on_heap_storage_memory(), 0);
    assert_eq!(mm.max_off_heap_storage_memory(), 2000);
    assert!(store.cache(&mm, block("off"), 1000, MemoryMode::OffHeap));
    assert!(!store.cache(&mm, block("on"), 1, MemoryMode::OnHeap));
    // The off-heap block sits inside the off-heap storage region: execution cannot evict it.
    assert_eq!(
        mm.acquire_execution_memory(2000, 1, MemoryMode::OffHeap),
        1000
    );
    assert!(store.eviction_requests().is_empty());
    assert_eq!(mm.execution_memory_used_by(1), 2000);
    assert_eq!(mm.execution_memory_used_by_in(1, MemoryMode::OffHeap), 1000);
    mm.release_execution_memory(500, 1, MemoryMode::OffHeap);
    assert_eq!(mm.execution_memory_used_by(1), 1500);
    mm.release_execution_memory(500, 1, MemoryMode::OffHeap);
    assert_eq!(mm.execution_memory_used_by(1), 1000);
    assert_eq!(execution_used(&mm, MemoryMode::OffHeap), 0);
    assert_eq!(storage_used(&mm, MemoryMode::OnHeap), 0);
    assert_eq!(mm.release_all_execution_memory_for_task(1), 1000);
    let snap = mm.snapshot();
    assert_eq!(snap.on_heap.active_tasks, 0);
    assert_eq!(snap.off_heap.active_tasks, 0);
}

// MemoryManagerSuite: "single task requesting on-heap execution memory" (TaskMemoryManager
// calls straight through to the manager here).
#[test]
fn single_task_requesting_execution_memory() {
    for mode in MemoryMode::ALL {
        let (mm, _) = make_things(1000);
        let t = 0;
        assert_eq!(mm.acquire_execution_memory(100, t, mode), 100);
        assert_eq!(mm.acquire_execution_memory(400, t, mode), 400);
        assert_eq!(mm.acquire_execution_memory(400, t, mode), 400);
        assert_eq!(mm.acquire_execution_memory(200, t, mode), 100);
        assert_eq!(mm.acquire_execution_memory(100, t, mode), 0);
        assert_eq!(mm.acquire_execution_memory(100, t, mode), 0);
        mm.release_execution_memory(500, t, mode);
        assert_eq!(mm.acquire_execution_memory(300, t, mode), 300);
        assert_eq!(mm.acquire_execution_memory(300, t, mode), 200);
        assert_eq!(mm.release_all_execution_memory_for_task(t), 1000);
        assert_eq!(mm.acquire_execution_memory(1000, t, mode), 1000);
        assert_eq!(mm.acquire_execution_memory(100, t, mode), 0);
    }
}

// MemoryManagerSuite: "tasks should not be granted a negative amount of execution memory"
// (SPARK-4715); sequential, since no request here blocks.
#[test]
fn tasks_are_never_granted_a_negative_amount() {
    for mode in MemoryMode::ALL {
        let (mm, _) = make_things(1000);
        assert_eq!(mm.acquire_execution_memory(700, 1, mode), 700);
        assert_eq!(mm.acquire_execution_memory(300, 2, mode), 300);
        // t1 holds 700 > 1/N = 500: 0, at once.
        assert_eq!(mm.acquire_execution_memory(300, 1, mode), 0);
    }
}

// ExecutionMemoryPool.releaseMemory / StorageMemoryPool.releaseMemory: over-release warns and
// clamps (docs/spark-model.md §3.5, §4.4).
#[test]
fn over_release_warns_and_clamps() {
    for mode in MemoryMode::ALL {
        let (mm, _) = make_things(1000);
        let log = EventLog::attach(&mm);
        assert_eq!(mm.acquire_execution_memory(100, 7, mode), 100);
        mm.release_execution_memory(150, 7, mode);
        assert_eq!(mm.execution_memory_used(), 0);
        assert_eq!(mm.snapshot().mode(mode).active_tasks, 0);
        // A task that holds nothing: warn, nothing changes.
        mm.release_execution_memory(10, 8, mode);
        assert!(mm.acquire_storage_memory(&block("s"), 40, mode));
        mm.release_storage_memory(50, mode);
        assert_eq!(mm.storage_memory_used(), 0);
        let prefix = mode.pool_prefix();
        assert_eq!(
            log.warnings(),
            vec![
                format!(
                    "Internal error: release called on 150 bytes but task only has 100 bytes \
                     of memory from the {prefix} execution pool (TID 7)"
                ),
                format!(
                    "Internal error: release called on 10 bytes but task only has 0 bytes of \
                     memory from the {prefix} execution pool (TID 8)"
                ),
                format!(
                    "Attempted to release 50 bytes of storage memory when we only have 40 \
                     bytes ({prefix} storage pool)"
                ),
            ]
        );
    }
}

// ExecutionMemoryPool.acquireMemory: `assert(numBytes > 0)`. Here: 0, a warning, no
// registration.
#[test]
fn zero_byte_execution_request_is_refused_without_registering() {
    for mode in MemoryMode::ALL {
        let (mm, _) = make_things(1000);
        let log = EventLog::attach(&mm);
        assert_eq!(mm.acquire_execution_memory(0, 3, mode), 0);
        assert_eq!(mm.snapshot().mode(mode).active_tasks, 0);
        assert!(matches!(
            log.events()[..],
            [MemoryEvent::InvalidExecutionRequest { task: 3, .. }]
        ));
    }
}

// ExecutionMemoryPool.releaseMemory: a holding that reaches 0 leaves the map (N drops), and a
// task at 0 bytes still counts in N.
#[test]
fn tasks_at_zero_bytes_count_until_they_release() {
    for mode in MemoryMode::ALL {
        let (mm, _) = make_things(1000);
        assert_eq!(mm.acquire_execution_memory(1000, 1, mode), 1000);
        // Task 2 arriving now would block (0 free, 0 < 1/2N = 250): release first.
        mm.release_execution_memory(500, 1, mode);
        assert_eq!(mm.acquire_execution_memory(600, 2, mode), 500);
        assert_eq!(mm.snapshot().mode(mode).active_tasks, 2);
        mm.release_execution_memory(500, 2, mode);
        assert_eq!(mm.snapshot().mode(mode).active_tasks, 1);
        // release(0) on a task at 0 bytes removes it, as in Spark.
        assert_eq!(mm.release_all_execution_memory_for_task(1), 500);
        assert_eq!(mm.snapshot().mode(mode).active_tasks, 0);
    }
}
