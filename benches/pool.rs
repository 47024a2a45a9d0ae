//! Execution pool hot path: one acquire+release pair, on one thread and on two threads — with
//! room for both (no contention) and at their fair-share caps (every acquire contends for the
//! manager's lock) — against a `Mutex<u64>` add+sub baseline measured in the same run.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use spillway::memory::{MemoryMode, PoolSizes, UnifiedMemoryManager};

const PAIR_BYTES: u64 = 4096;

fn manager() -> UnifiedMemoryManager {
    let gib = 1 << 30;
    UnifiedMemoryManager::new(PoolSizes::symmetric(gib, gib / 2))
}

fn baseline(c: &mut Criterion) {
    let m = Mutex::new(0u64);
    c.bench_function("baseline/mutex_u64_add_sub", |b| {
        b.iter(|| {
            *m.lock().unwrap() += black_box(PAIR_BYTES);
            *m.lock().unwrap() -= black_box(PAIR_BYTES);
        })
    });
}

fn one_thread(c: &mut Criterion) {
    let mm = manager();
    // Register the task once, as a running task would be.
    assert_eq!(mm.acquire_execution_memory(1, 1, MemoryMode::OnHeap), 1);
    c.bench_function("execution/acquire_release_pair/1_thread", |b| {
        b.iter(|| {
            let got = mm.acquire_execution_memory(black_box(PAIR_BYTES), 1, MemoryMode::OnHeap);
            mm.release_execution_memory(got, 1, MemoryMode::OnHeap);
        })
    });
}

/// Two threads, distinct tasks, same manager; the reported time is wall time per pair per
/// thread (each iteration, both threads complete one pair).
fn two_threads(c: &mut Criterion) {
    // Without contention: a 1 GiB pool, every request fits the task's fair share (the
    // lock-free fast path).
    pairs_on_two_threads(
        c,
        "execution/acquire_release_pair/2_threads",
        manager(),
        PAIR_BYTES,
    );
    // With contention: a pool of 1.5 requests, so each task's 1/N cap (3 KiB) is below the
    // 4 KiB asked for; every acquire takes the manager's lock, grants what the fair-share
    // rule allows (here 3 KiB or whatever the other task left), and the two threads fight
    // over that lock.
    let small = UnifiedMemoryManager::new(PoolSizes::symmetric(PAIR_BYTES * 3 / 2, 0));
    pairs_on_two_threads(
        c,
        "execution/acquire_release_pair/2_threads_at_fair_share",
        small,
        PAIR_BYTES,
    );
    mutex_on_two_threads(c);
}

fn pairs_on_two_threads(c: &mut Criterion, name: &str, mm: UnifiedMemoryManager, bytes: u64) {
    for task in [1, 2] {
        assert_eq!(mm.acquire_execution_memory(1, task, MemoryMode::OnHeap), 1);
    }
    let mm = &mm;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            let elapsed = thread::scope(|s| {
                let run = |task: u64| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        let got =
                            mm.acquire_execution_memory(black_box(bytes), task, MemoryMode::OnHeap);
                        debug_assert!(got > 0);
                        mm.release_execution_memory(got, task, MemoryMode::OnHeap);
                    }
                    start.elapsed()
                };
                let other = s.spawn(move || run(2));
                let mine = run(1);
                mine.max(other.join().unwrap())
            });
            elapsed.max(Duration::from_nanos(1))
        })
    });
}

fn mutex_on_two_threads(c: &mut Criterion) {
    c.bench_function("baseline/mutex_u64_add_sub/2_threads", |b| {
        let m = Mutex::new(0u64);
        b.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            thread::scope(|s| {
                let run = || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        *m.lock().unwrap() += black_box(PAIR_BYTES);
                        *m.lock().unwrap() -= black_box(PAIR_BYTES);
                    }
                    start.elapsed()
                };
                let other = s.spawn(run);
                let mine = run();
                mine.max(other.join().unwrap())
            })
        })
    });
}

criterion_group!(benches, baseline, one_thread, two_threads);
criterion_main!(benches);
