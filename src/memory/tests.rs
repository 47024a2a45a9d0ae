//! Unit tests of the manager's construction, vocabulary and bookkeeping details.

use super::testing::EventLog;
use super::*;
use crate::ids::BlockId;

#[test]
fn modes_display_as_spark_names_them() {
    assert_eq!(MemoryMode::OnHeap.to_string(), "ON_HEAP");
    assert_eq!(MemoryMode::OffHeap.to_string(), "OFF_HEAP");
}

#[test]
fn initial_pools_follow_the_layout() {
    let mm = UnifiedMemoryManager::new(PoolSizes {
        on_heap_unified: 1000,
        on_heap_storage_region: 300,
        off_heap_unified: 0,
        off_heap_storage_region: 0,
    });
    let snap = mm.snapshot();
    assert_eq!(snap.on_heap.execution_pool_bytes, 700);
    assert_eq!(snap.on_heap.storage_pool_bytes, 300);
    assert_eq!(snap.off_heap, PoolSnapshot::default());
    // §1.10: max storage memory is M − execution used, not the storage region.
    assert_eq!(mm.max_on_heap_storage_memory(), 1000);
    assert_eq!(mm.max_off_heap_storage_memory(), 0);
}

#[test]
fn inconsistent_sizes_are_errors_with_numbers() {
    let err = UnifiedMemoryManager::try_new(PoolSizes {
        on_heap_unified: 100,
        on_heap_storage_region: 50,
        off_heap_unified: 10,
        off_heap_storage_region: 20,
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "OFF_HEAP storage region (20 bytes) exceeds the unified region (10 bytes)"
    );
    let err = UnifiedMemoryManager::try_new(PoolSizes::symmetric(100, 100)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "onHeapExecutionMemory must be > 0 (unified 100 bytes, storage region 100 bytes)"
    );
}

#[test]
fn storage_acquire_without_evictor_evicts_nothing() {
    let mm = UnifiedMemoryManager::new(PoolSizes::symmetric(100, 50));
    let b = BlockId::Test("x".into());
    assert!(mm.acquire_storage_memory(&b, 100, MemoryMode::OnHeap));
    assert_eq!(mm.acquire_execution_memory(10, 1, MemoryMode::OnHeap), 0);
    // Storage holds 100 > region 50: execution would evict, but there is no evictor.
    assert!(!mm.acquire_unroll_memory(&b, 1, MemoryMode::OnHeap));
    mm.release_unroll_memory(100, MemoryMode::OnHeap);
    assert_eq!(mm.acquire_execution_memory(10, 1, MemoryMode::OnHeap), 10);
}

#[test]
fn grant_events_carry_the_fair_share_inputs() {
    let mm = UnifiedMemoryManager::new(PoolSizes::symmetric(1000, 500));
    let log = EventLog::attach(&mm);
    assert_eq!(
        mm.acquire_execution_memory(600, 4, MemoryMode::OffHeap),
        600
    );
    assert_eq!(
        log.events(),
        vec![MemoryEvent::ExecutionGranted {
            task: 4,
            mode: MemoryMode::OffHeap,
            requested_bytes: 600,
            granted_bytes: 600,
            held_bytes: 600,
            active_tasks: 1,
            // grew by 100 from free storage: only what the request needed
            execution_pool_bytes: 600,
            storage_used_bytes: 0,
            max_per_task_bytes: 1000,
            min_per_task_bytes: 300,
        }]
    );
    assert_eq!(
        log.events()[0].to_string(),
        "TID 4 granted 600 of 600 bytes from the off-heap execution pool, now holds 600 \
         (N = 1, 1/N = 1000, 1/2N = 300)"
    );
}
