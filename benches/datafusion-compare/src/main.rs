//! Side-by-side: spillway's execution acquire+release pair against DataFusion's
//! `GreedyMemoryPool` and `FairSpillPool` `try_grow`+`shrink` pair, on 1 and 2 threads.
//!
//! Fairness rules (what makes the comparison fair to both pools):
//! - the same request size for every pool; pools large enough that nothing is ever refused
//!   (every call is on the grant path, none on an error path);
//! - registration outside the timed loop: spillway's task is registered by holding 1 byte
//!   (as a running task would), DataFusion's consumer is registered once (`can_spill = true`
//!   for FairSpill, so its fair-share branch runs — the one analogous to Spark's 1/N);
//! - on 2 threads each thread is its own task / its own reservation on one shared pool;
//! - warm: every case runs once untimed before the rounds; each round times every case back
//!   to back (in a rotating order), so the ratios printed are from the same run, round by
//!   round, and their spread is the noise of this machine at that moment.
//!
//! No memory is allocated: these are the accounting calls only (spillway's manager and
//! DataFusion's pools both only count bytes; the pages come from elsewhere).
//!
//! `cargo run --release` (in this directory). Options: `--rounds N` (default 21),
//! `--pairs N` pairs per thread per round (default 2,000,000), `--bytes N` (default 4096).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use datafusion_execution::memory_pool::{
    FairSpillPool, GreedyMemoryPool, MemoryConsumer, MemoryPool, MemoryReservation,
};
use spillway::memory::{MemoryMode, PoolSizes, UnifiedMemoryManager};

const GIB: u64 = 1 << 30;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Spillway,
    Greedy,
    FairSpill,
}

const CASES: [Case; 3] = [Case::Spillway, Case::Greedy, Case::FairSpill];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Spillway => "spillway acquire+release",
            Case::Greedy => "datafusion Greedy try_grow+shrink",
            Case::FairSpill => "datafusion FairSpill try_grow+shrink",
        }
    }
}

/// One pool of each kind, shared by the threads of a round, with one registered task or
/// consumer per thread.
struct Pools {
    spillway: Arc<UnifiedMemoryManager>,
    greedy: Vec<MemoryReservation>,
    fair: Vec<MemoryReservation>,
}

impl Pools {
    fn new(threads: usize) -> Pools {
        // 4 GiB unified, 1 GiB storage region: 3 GiB of execution, 1.5 GiB per task at N = 2.
        let spillway = Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(
            4 * GIB,
            GIB,
        )));
        for task in 0..threads as u64 {
            // Register the task: it holds 1 byte for the whole run, so N stays `threads`.
            assert_eq!(
                spillway.acquire_execution_memory(1, task, MemoryMode::OnHeap),
                1
            );
        }
        let greedy: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(3 * GIB as usize));
        let fair: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(3 * GIB as usize));
        let reg = |pool: &Arc<dyn MemoryPool>, i: usize| {
            MemoryConsumer::new(format!("task-{i}"))
                .with_can_spill(true)
                .register(pool)
        };
        Pools {
            spillway,
            greedy: (0..threads).map(|i| reg(&greedy, i)).collect(),
            fair: (0..threads).map(|i| reg(&fair, i)).collect(),
        }
    }

    /// Runs `pairs` grant+release pairs of `bytes` as thread `i`.
    fn run(&self, case: Case, i: usize, pairs: u64, bytes: u64) {
        match case {
            Case::Spillway => {
                let mm = &*self.spillway;
                let task = i as u64;
                for _ in 0..pairs {
                    let got =
                        mm.acquire_execution_memory(black_box(bytes), task, MemoryMode::OnHeap);
                    debug_assert_eq!(got, bytes);
                    mm.release_execution_memory(black_box(got), task, MemoryMode::OnHeap);
                }
            }
            Case::Greedy | Case::FairSpill => {
                let r = if case == Case::Greedy {
                    &self.greedy[i]
                } else {
                    &self.fair[i]
                };
                let n = bytes as usize;
                for _ in 0..pairs {
                    r.try_grow(black_box(n)).expect("the pool is large enough");
                    r.shrink(black_box(n));
                }
            }
        }
    }
}

/// Wall time per pair per thread: all threads start together; the slowest one's time counts.
fn time_case(pools: &Pools, case: Case, threads: usize, pairs: u64, bytes: u64) -> f64 {
    let barrier = Barrier::new(threads);
    let elapsed = thread::scope(|s| {
        let run = |i: usize| {
            barrier.wait();
            let t = Instant::now();
            pools.run(case, i, pairs, bytes);
            t.elapsed()
        };
        let others: Vec<_> = (1..threads).map(|i| s.spawn(move || run(i))).collect();
        let mine = run(0);
        others
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(mine, Duration::max)
    });
    elapsed.as_nanos() as f64 / pairs as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let rounds = arg("--rounds", 21) as usize;
    let pairs = arg("--pairs", 2_000_000);
    let bytes = arg("--bytes", 4096);
    println!(
        "{rounds} rounds x {pairs} pairs per thread, {bytes}-byte requests; ns per pair per thread"
    );
    for threads in [1usize, 2] {
        let pools = Pools::new(threads);
        // Warm-up: one untimed pass of every case (caches, branch predictors, thread spawn).
        for case in CASES {
            time_case(&pools, case, threads, pairs / 4, bytes);
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
        let mut vs_greedy = Vec::new();
        let mut vs_fair = Vec::new();
        for round in 0..rounds {
            let mut t = [0.0; 3];
            for k in 0..CASES.len() {
                let c = (round + k) % CASES.len();
                t[c] = time_case(&pools, CASES[c], threads, pairs, bytes);
                times[c].push(t[c]);
            }
            // Speed-up of spillway = their time / spillway's time, within the round.
            vs_greedy.push(t[1] / t[0]);
            vs_fair.push(t[2] / t[0]);
        }
        println!("\n{threads} thread(s):");
        println!("  {:<40} {:>9} {:>9} {:>9}", "case", "median", "min", "max");
        for (c, case) in CASES.iter().enumerate() {
            let v = &mut times[c];
            let (lo, hi) = (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "  {:<40} {:>7.1}ns {:>7.1}ns {:>7.1}ns",
                case.name(),
                median(v),
                lo,
                hi
            );
        }
        let spread = |v: &mut Vec<f64>| {
            let m = median(v);
            (m, v[0], v[v.len() - 1])
        };
        let (g, glo, ghi) = spread(&mut vs_greedy);
        let (f, flo, fhi) = spread(&mut vs_fair);
        println!(
            "  spillway speed-up vs Greedy:    {g:.2}x (rounds: {glo:.2}x..{ghi:.2}x)  target >= 1x"
        );
        println!(
            "  spillway speed-up vs FairSpill: {f:.2}x (rounds: {flo:.2}x..{fhi:.2}x)  target >= 2x"
        );
    }
}
