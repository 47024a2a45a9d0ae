//! Fair sharing of the execution pool (docs/spark-model.md §3.2) with real threads: blocking below 1/2N,
//! wake-ups on release, arrival and exit, the 1/N cap, and a many-task stress run.
//!
//! Tests wait for "task is blocked" by polling the manager's waiter count, never by sleeping;
//! the only timeout is a watchdog that turns a deadlock into a failure with the pool numbers.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use spillway::memory::testing::{EventLog, FakeBlockStore};
use spillway::memory::{MemoryEvent, MemoryMode, PoolSizes, UnifiedMemoryManager};
use spillway::storage::BlockId;

fn manager(unified: u64, region: u64) -> Arc<UnifiedMemoryManager> {
    Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(
        unified, region,
    )))
}

/// Spin (yielding) until `n` threads are blocked in the manager.
fn wait_for_waiters(mm: &UnifiedMemoryManager, n: usize) {
    while mm.snapshot().waiting_tasks != n {
        thread::yield_now();
    }
}

/// Run `f` on a thread; its result, or a panic with the pool numbers after a generous
/// deadlock watchdog.
fn spawn_acquire(
    mm: &Arc<UnifiedMemoryManager>,
    bytes: u64,
    task: u64,
    mode: MemoryMode,
) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    let mm = Arc::clone(mm);
    thread::spawn(move || {
        let _ = tx.send(mm.acquire_execution_memory(bytes, task, mode));
    });
    rx
}

fn recv(rx: &mpsc::Receiver<u64>, mm: &UnifiedMemoryManager) -> u64 {
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("acquire never returned (deadlock?): {:?}", mm.snapshot()))
}

// MemoryManagerSuite: "tasks can block to get at least 1 / 2N of on-heap execution memory"
// (requirement (a): the second task blocks until the first releases, then proceeds).
#[test]
fn tasks_block_to_get_at_least_half_their_share() {
    for mode in MemoryMode::ALL {
        let mm = manager(1000, 500);
        assert_eq!(mm.acquire_execution_memory(1000, 1, mode), 1000);
        let t2 = spawn_acquire(&mm, 250, 2, mode);
        wait_for_waiters(&mm, 1);
        assert!(t2.try_recv().is_err(), "t2 must still be blocked");
        assert_eq!(mm.snapshot().mode(mode).active_tasks, 2);
        mm.release_execution_memory(250, 1, mode);
        // The memory freed from t1 should now be granted to t2.
        assert_eq!(recv(&t2, &mm), 250);
        // Further requests by t2 are denied at once: it has its 1/2N.
        assert_eq!(mm.acquire_execution_memory(100, 2, mode), 0);
        let stats = mm.task_wait_stats(2);
        assert_eq!(stats.waits, 1);
        assert!(stats.waited > Duration::ZERO);
        assert_eq!(mm.task_wait_stats(1).waits, 0);
        assert_eq!(mm.take_task_wait_stats(2).waits, 1);
        assert_eq!(mm.task_wait_stats(2).waits, 0);
    }
}

// MemoryManagerSuite: "TaskMemoryManager.cleanUpAllAllocatedMemory" (task exit wakes waiters).
#[test]
fn task_exit_wakes_waiters() {
    for mode in MemoryMode::ALL {
        let mm = manager(1000, 500);
        assert_eq!(mm.acquire_execution_memory(1000, 1, mode), 1000);
        let t2 = spawn_acquire(&mm, 500, 2, mode);
        wait_for_waiters(&mm, 1);
        // t1 releases all of its memory, so t2 should be able to grab all of the memory
        assert_eq!(mm.release_all_execution_memory_for_task(1), 1000);
        assert_eq!(recv(&t2, &mm), 500);
        assert_eq!(mm.acquire_execution_memory(500, 2, mode), 500);
        assert_eq!(mm.acquire_execution_memory(500, 2, mode), 0);
    }
}

// Spec §3.2: a task arriving (N grows, 1/2N shrinks) wakes waiters, which re-evaluate.
#[test]
fn task_arrival_wakes_waiters() {
    for mode in MemoryMode::ALL {
        let mm = manager(1000, 500);
        assert_eq!(mm.acquire_execution_memory(800, 1, mode), 800);
        // N = 2: 1/2N = 250, only 200 free → t2 blocks.
        let t2 = spawn_acquire(&mm, 300, 2, mode);
        wait_for_waiters(&mm, 1);
        // t3 arrives and takes 1 byte: N = 3, 1/2N = 166, t2 can now take 199 ≥ 166.
        assert_eq!(mm.acquire_execution_memory(1, 3, mode), 1);
        assert_eq!(recv(&t2, &mm), 199);
        assert_eq!(mm.execution_memory_used(), 1000);
    }
}

// MemoryManagerSuite: "two tasks requesting full on-heap execution memory"
#[test]
fn two_tasks_requesting_full_execution_memory() {
    for mode in MemoryMode::ALL {
        let mm = manager(1000, 500);
        let a = spawn_acquire(&mm, 500, 1, mode);
        let b = spawn_acquire(&mm, 500, 2, mode);
        assert_eq!(recv(&a, &mm), 500);
        assert_eq!(recv(&b, &mm), 500);
        // Both at 1/N: both get 0 at once.
        let a = spawn_acquire(&mm, 500, 1, mode);
        let b = spawn_acquire(&mm, 500, 2, mode);
        assert_eq!(recv(&a, &mm), 0);
        assert_eq!(recv(&b, &mm), 0);
    }
}

// MemoryManagerSuite: "two tasks cannot grow past 1 / N of on-heap execution memory"
#[test]
fn two_tasks_cannot_grow_past_one_nth() {
    for mode in MemoryMode::ALL {
        let mm = manager(1000, 500);
        let a = spawn_acquire(&mm, 250, 1, mode);
        let b = spawn_acquire(&mm, 250, 2, mode);
        assert_eq!(recv(&a, &mm), 250);
        assert_eq!(recv(&b, &mm), 250);
        let a = spawn_acquire(&mm, 500, 1, mode);
        let b = spawn_acquire(&mm, 500, 2, mode);
        assert_eq!(recv(&a, &mm), 250);
        assert_eq!(recv(&b, &mm), 250);
    }
}

/// Tiny deterministic PRNG (splitmix64) so each thread's ops are reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `tasks` threads run `ops` random acquire/release/cache/uncache operations each on a shared
/// manager with an LRU store, then exit; returns the manager and store for checks.
fn stress(
    tasks: u64,
    ops: usize,
    sink: Option<&EventLog>,
) -> (Arc<UnifiedMemoryManager>, Arc<FakeBlockStore>) {
    let unified = 1 << 20;
    let mm = manager(unified, unified / 2);
    let store = FakeBlockStore::new();
    mm.set_evictor(store.clone());
    if let Some(log) = sink {
        mm.set_event_sink(log.sink());
    }
    let start = Arc::new(Barrier::new(tasks as usize));
    let (done_tx, done_rx) = mpsc::channel();
    for task in 0..tasks {
        let (mm, store, start, done_tx) = (
            Arc::clone(&mm),
            Arc::clone(&store),
            Arc::clone(&start),
            done_tx.clone(),
        );
        thread::spawn(move || {
            let mut rng = Rng(0x5EED ^ task.wrapping_mul(0x1234_5678_9ABC));
            let mut held = [0u64; 2];
            let mut my_blocks: Vec<BlockId> = Vec::new();
            start.wait();
            for op in 0..ops {
                let mode = MemoryMode::ALL[rng.below(2) as usize];
                let m = mode as usize;
                match rng.below(10) {
                    0..=4 => {
                        let want = 1 + rng.below(unified / 8);
                        held[m] += mm.acquire_execution_memory(want, task, mode);
                    }
                    5..=7 => {
                        let give = if held[m] == 0 {
                            0
                        } else {
                            rng.below(held[m] + 1)
                        };
                        mm.release_execution_memory(give, task, mode);
                        held[m] -= give;
                    }
                    8 => {
                        let id = BlockId::Rdd {
                            rdd_id: task as u32,
                            split_index: op as u32,
                        };
                        if store.cache(&mm, id.clone(), 1 + rng.below(unified / 16), mode) {
                            my_blocks.push(id);
                        }
                    }
                    _ => {
                        if let Some(id) = my_blocks.pop() {
                            store.remove(&mm, &id); // may already have been evicted
                        }
                    }
                }
                assert_eq!(mm.execution_memory_used_by_in(task, mode), held[m]);
            }
            assert_eq!(
                mm.release_all_execution_memory_for_task(task),
                held[0] + held[1]
            );
            let _ = done_tx.send(task);
        });
    }
    drop(done_tx);
    for _ in 0..tasks {
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("a task never finished (deadlock?): {:?}", mm.snapshot()));
    }
    (mm, store)
}

// Requirement (c): 16 tasks on 2 cores, thousands of random ops each, all finish and the pools
// return to 0; the store's cached bytes always match storage `used`.
#[test]
fn sixteen_tasks_random_ops_all_finish_and_pools_drain() {
    let (mm, store) = stress(16, 3000, None);
    let waits: u64 = (0..16).map(|t| mm.task_wait_stats(t).waits).sum();
    eprintln!("fair-share waits across 16 tasks: {waits}");
    let snap = mm.snapshot();
    for mode in MemoryMode::ALL {
        let p = snap.mode(mode);
        assert_eq!(p.execution_used_bytes, 0, "{mode}: {snap:?}");
        assert_eq!(p.active_tasks, 0, "{mode}: {snap:?}");
        assert_eq!(p.storage_used_bytes, store.bytes(mode), "{mode}: {snap:?}");
        assert_eq!(p.execution_pool_bytes + p.storage_pool_bytes, 1 << 20);
    }
    assert_eq!(snap.waiting_tasks, 0);
    for b in store.blocks() {
        store.remove(&mm, &b.id);
    }
    assert_eq!(mm.storage_memory_used(), 0);
    assert_eq!(mm.execution_memory_used(), 0);
}

// Requirement (b): at every grant, no task holds more than maxPoolSize / N, recomputed here from
// the raw numbers the manager reports at the moment of the grant.
#[test]
fn no_grant_lifts_a_task_above_one_nth() {
    let log = EventLog::new();
    let (mm, _) = stress(6, 1500, Some(&log));
    let unified = mm.sizes().on_heap_unified;
    let region = mm.sizes().on_heap_storage_region;
    let mut grants = 0;
    for e in log.events() {
        if let MemoryEvent::ExecutionGranted {
            granted_bytes,
            held_bytes,
            active_tasks,
            storage_used_bytes,
            max_per_task_bytes,
            min_per_task_bytes,
            execution_pool_bytes,
            requested_bytes,
            ..
        } = e
        {
            let max_pool = unified - storage_used_bytes.min(region);
            let max_per_task = max_pool / active_tasks as u64;
            assert_eq!(max_per_task_bytes, max_per_task);
            assert_eq!(
                min_per_task_bytes,
                execution_pool_bytes / (2 * active_tasks as u64)
            );
            assert!(granted_bytes <= requested_bytes);
            if granted_bytes > 0 {
                assert!(held_bytes <= max_per_task, "{e}");
                grants += 1;
            }
            // Not blocked ⇒ full grant or at least 1/2N held.
            assert!(
                granted_bytes == requested_bytes || held_bytes >= min_per_task_bytes,
                "{e}"
            );
        }
    }
    assert!(grants > 100, "only {grants} grants observed");
}
