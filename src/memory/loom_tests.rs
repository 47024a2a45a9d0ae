//! Loom models of fair-share blocking and waking: every interleaving terminates (no lost
//! wake-up, no deadlock) and the pool invariants hold.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --lib memory::`.

use super::sync::Arc;
use super::{MemoryMode, PoolSizes, UnifiedMemoryManager};

const MODE: MemoryMode = MemoryMode::OnHeap;

fn manager(unified: u64) -> Arc<UnifiedMemoryManager> {
    // storage region 0: execution owns the whole unified region.
    Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(unified, 0)))
}

fn assert_drained(mm: &UnifiedMemoryManager) {
    let snap = mm.snapshot();
    assert_eq!(snap.on_heap.execution_used_bytes, 0, "{snap:?}");
    assert_eq!(snap.on_heap.active_tasks, 0, "{snap:?}");
    assert_eq!(snap.waiting_tasks, 0, "{snap:?}");
    assert_eq!(
        snap.on_heap.execution_pool_bytes + snap.on_heap.storage_pool_bytes,
        100
    );
}

/// Task 1 takes the whole pool, then releases it; task 2 asks for half. Whenever task 2
/// arrives while task 1 holds everything it must block, and task 1's release must wake it.
#[test]
fn blocked_task_is_woken_by_release() {
    loom::model(|| {
        let mm = manager(100);
        let t1 = {
            let mm = mm.clone();
            loom::thread::spawn(move || {
                let got = mm.acquire_execution_memory(100, 1, MODE);
                // 100 if first; 50 (its 1/N) if task 2 registered first.
                assert!(got == 100 || got == 50, "t1 got {got}");
                mm.release_execution_memory(got, 1, MODE);
                mm.release_all_execution_memory_for_task(1);
            })
        };
        let got2 = mm.acquire_execution_memory(50, 2, MODE);
        // Task 2 always ends with its full request: 50 is within 1/N whatever N is.
        assert_eq!(got2, 50);
        assert!(mm.execution_memory_used_by(2) == 50);
        mm.release_all_execution_memory_for_task(2);
        t1.join().unwrap();
        assert_drained(&mm);
    });
}

/// Task exit (release_all) wakes a waiter, and arrival of a third task changes N under a
/// waiter: three tasks, one of which must block in some interleavings.
#[test]
fn three_tasks_exit_and_arrival_wake_waiters() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let mm = manager(90);
        let spawn = |task: u64, want: u64| {
            let mm = mm.clone();
            loom::thread::spawn(move || {
                let got = mm.acquire_execution_memory(want, task, MODE);
                assert!(got > 0, "task {task} got 0");
                assert_eq!(mm.release_all_execution_memory_for_task(task), got);
            })
        };
        let a = spawn(1, 90);
        let b = spawn(2, 30);
        let got = mm.acquire_execution_memory(30, 3, MODE);
        assert!(got > 0);
        mm.release_all_execution_memory_for_task(3);
        a.join().unwrap();
        b.join().unwrap();
        let snap = mm.snapshot();
        assert_eq!(snap.on_heap.execution_used_bytes, 0, "{snap:?}");
        assert_eq!(snap.on_heap.active_tasks, 0, "{snap:?}");
        assert_eq!(snap.waiting_tasks, 0);
    });
}

/// The lock-free fast path against a task arrival that lowers 1/N: task 1 (holding 40 of 100)
/// acquires 20 and releases it on the fast path while task 2 registers and asks for 50. Every
/// outcome must be one of Spark's serial orders: (20, 40) task 1 first, (20, 50) task 1's pair
/// before task 2, (10, 50) task 2 first (task 1 capped at 1/N = 50). A fast grant checked
/// against a stale N would give (20, 50) with task 1 still holding 60 — caught by the totals.
#[test]
fn fast_path_respects_a_concurrent_arrival() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let mm = manager(100);
        assert_eq!(mm.acquire_execution_memory(40, 1, MODE), 40);
        let t1 = {
            let mm = mm.clone();
            loom::thread::spawn(move || {
                let got = mm.acquire_execution_memory(20, 1, MODE);
                mm.release_execution_memory(got, 1, MODE);
                got
            })
        };
        let got2 = mm.acquire_execution_memory(50, 2, MODE);
        let used_then = mm.snapshot().on_heap.execution_used_bytes;
        assert!(used_then <= 100, "used {used_then}");
        mm.release_all_execution_memory_for_task(2);
        let got1 = t1.join().unwrap();
        assert!(
            matches!((got1, got2), (20, 40) | (20, 50) | (10, 50)),
            "not a serial order of Spark's rules: task 1 got {got1}, task 2 got {got2}"
        );
        assert_eq!(mm.execution_memory_used_by(1), 40);
        assert_eq!(mm.release_all_execution_memory_for_task(1), 40);
        assert_drained(&mm);
    });
}

/// A fast-path release racing the task's `releaseAll` from another thread: either the release
/// comes first (releaseAll frees 20) or it finds the task gone (releaseAll freed 30, the
/// release is an over-release of nothing). Nothing is lost or freed twice.
#[test]
fn fast_release_races_release_all() {
    loom::model(|| {
        let mm = manager(100);
        assert_eq!(mm.acquire_execution_memory(30, 1, MODE), 30);
        let t = {
            let mm = mm.clone();
            loom::thread::spawn(move || mm.release_execution_memory(10, 1, MODE))
        };
        let freed = mm.release_all_execution_memory_for_task(1);
        t.join().unwrap();
        assert!(freed == 20 || freed == 30, "releaseAll freed {freed}");
        assert_drained(&mm);
    });
}
