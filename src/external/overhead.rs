//! The overhead account and the container monitor (docs/spark-model.md §11, §13): what lives
//! outside the heap — the workers' resident memory and the executor's beyond its touched heap
//! pages — against `spark.executor.memoryOverhead` + `spark.executor.pyspark.memory`, and the
//! executor with its workers against the container (YARN's `ContainersMonitorImpl` pmem check).
//!
//! The monitor only judges numbers: the pool measures the processes it owns and, when a check
//! decides a kill, kills them. Keeping the two apart lets the verdicts be tested without
//! starting a single process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::report::ContainerKill;
use super::{MonitorPolicy, yarn_size};

/// `ContainerExitStatus.KILLED_EXCEEDED_PMEM`.
pub const EXIT_KILLED_EXCEEDED_PMEM: i32 = -104;

/// The largest numbers the checks have seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peaks {
    pub workers_rss: u64,
    pub executor_rss: u64,
    /// The executor's resident memory beyond the heap pages it has touched.
    pub executor_beyond_heap: u64,
    /// Workers + executor-beyond-heap, from checks that knew the touched heap.
    pub overhead_used: u64,
    /// Executor + workers.
    pub total: u64,
    /// Times the total crossed the container limit (each crossing counted once).
    pub times_exceeded: u64,
}

impl Peaks {
    /// What the overhead budget had to cover at its largest. Checks made at a task's result
    /// do not know the touched heap, so they measure only the workers; those are overhead too.
    pub fn overhead_used(&self) -> u64 {
        self.overhead_used.max(self.workers_rss)
    }
}

/// The overhead account and the container monitor of one pool.
#[derive(Debug)]
pub struct OverheadMonitor {
    policy: MonitorPolicy,
    container_bytes: u64,
    peaks: Mutex<Peaks>,
    /// Whether the last check was over the limit (so a crossing is counted once).
    over: AtomicBool,
    kill: Mutex<Option<ContainerKill>>,
    killed: AtomicBool,
    /// The workers' resident memory at the last check, for the timeline.
    last_workers_rss: AtomicU64,
}

impl OverheadMonitor {
    /// A monitor with nothing seen yet.
    pub fn new(policy: MonitorPolicy, container_bytes: u64) -> OverheadMonitor {
        OverheadMonitor {
            policy,
            container_bytes,
            peaks: Mutex::new(Peaks::default()),
            over: AtomicBool::new(false),
            kill: Mutex::new(None),
            killed: AtomicBool::new(false),
            last_workers_rss: AtomicU64::new(0),
        }
    }

    /// One check of `executor` and `workers` resident bytes (with the executor's touched heap
    /// when known, for the overhead account); then what `spillway.container.monitor` says.
    /// Returns true when this check killed the container: the caller must kill the workers.
    pub fn observe(&self, executor: u64, workers: u64, heap_touched_bytes: Option<u64>) -> bool {
        self.last_workers_rss.store(workers, Ordering::Relaxed);
        let total = executor + workers;
        let crossed = {
            let mut p = lock(&self.peaks);
            p.workers_rss = p.workers_rss.max(workers);
            p.executor_rss = p.executor_rss.max(executor);
            p.total = p.total.max(total);
            if let Some(heap) = heap_touched_bytes {
                let beyond = executor.saturating_sub(heap);
                p.executor_beyond_heap = p.executor_beyond_heap.max(beyond);
                p.overhead_used = p.overhead_used.max(beyond + workers);
            }
            let over = total > self.container_bytes;
            let crossed = over && !self.over.swap(over, Ordering::AcqRel);
            if !over {
                self.over.store(false, Ordering::Release);
            }
            if crossed {
                p.times_exceeded += 1;
            }
            crossed
        };
        if !crossed || self.policy == MonitorPolicy::Off {
            return false;
        }
        let limit = self.container_bytes;
        let yarn_line = format!(
            "Container [pid={},containerID=container_spillway_{}_01_000001] is running {}B beyond \
             the 'PHYSICAL' memory limit. Current usage: {} of {} physical memory used \
             (executor {}, Python workers {})",
            std::process::id(),
            std::process::id(),
            total - limit,
            yarn_size(total),
            yarn_size(limit),
            yarn_size(executor),
            yarn_size(workers),
        );
        match self.policy {
            MonitorPolicy::Off => false,
            MonitorPolicy::Warn => {
                crate::log::warn("ContainersMonitorImpl", &yarn_line);
                false
            }
            MonitorPolicy::Kill => {
                let message = format!(
                    "Container killed by YARN for exceeding physical memory limits. {} of {} \
                     physical memory used. Consider boosting spark.executor.memoryOverhead.",
                    yarn_size(total),
                    yarn_size(limit)
                );
                {
                    let mut k = lock(&self.kill);
                    if k.is_some() {
                        return false;
                    }
                    *k = Some(ContainerKill {
                        total_rss_bytes: total,
                        executor_rss_bytes: executor,
                        workers_rss_bytes: workers,
                        container_bytes: limit,
                        exit_status: EXIT_KILLED_EXCEEDED_PMEM,
                        message: message.clone(),
                    });
                }
                self.killed.store(true, Ordering::Release);
                crate::log::log(
                    crate::log::Level::Error,
                    "ContainersMonitorImpl",
                    &format!("{yarn_line}. Killing container."),
                );
                crate::log::log(
                    crate::log::Level::Error,
                    "YarnAllocator",
                    &format!(
                        "Container exited with exit status {EXIT_KILLED_EXCEEDED_PMEM}: {message}"
                    ),
                );
                true
            }
        }
    }

    /// The kill, if the container was killed.
    pub fn kill(&self) -> Option<ContainerKill> {
        lock(&self.kill).clone()
    }

    /// Whether the container was killed.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// The workers' resident memory at the last check.
    pub fn last_workers_rss(&self) -> u64 {
        self.last_workers_rss.load(Ordering::Relaxed)
    }

    /// The peaks so far.
    pub fn peaks(&self) -> Peaks {
        *lock(&self.peaks)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn peaks_and_the_overhead_used_follow_the_checks() {
        let m = OverheadMonitor::new(MonitorPolicy::Warn, 1000 * MIB);
        m.observe(300 * MIB, 50 * MIB, Some(280 * MIB));
        m.observe(200 * MIB, 90 * MIB, None);
        let p = m.peaks();
        assert_eq!(p.executor_rss, 300 * MIB);
        assert_eq!(p.workers_rss, 90 * MIB);
        assert_eq!(p.executor_beyond_heap, 20 * MIB);
        assert_eq!(p.overhead_used, 70 * MIB);
        // The check without the heap still saw 90 MiB of workers, all of it overhead.
        assert_eq!(p.overhead_used(), 90 * MIB);
        assert_eq!(p.total, 350 * MIB);
        assert_eq!(m.last_workers_rss(), 90 * MIB);
        assert_eq!(p.times_exceeded, 0);
    }

    #[test]
    fn each_crossing_counts_once_and_warn_never_kills() {
        let m = OverheadMonitor::new(MonitorPolicy::Warn, 100 * MIB);
        assert!(!m.observe(90 * MIB, 20 * MIB, None));
        assert!(!m.observe(95 * MIB, 20 * MIB, None));
        m.observe(50 * MIB, 0, None);
        m.observe(150 * MIB, 0, None);
        assert_eq!(m.peaks().times_exceeded, 2);
        assert!(!m.is_killed());
        assert!(m.kill().is_none());
    }

    #[test]
    fn kill_decides_once_with_yarn_numbers() {
        let m = OverheadMonitor::new(MonitorPolicy::Kill, 100 * MIB);
        assert!(!m.observe(60 * MIB, 30 * MIB, None));
        assert!(m.observe(60 * MIB, 50 * MIB, None));
        assert!(m.is_killed());
        m.observe(10 * MIB, 0, None);
        // A second crossing after the kill decides nothing more.
        assert!(!m.observe(60 * MIB, 60 * MIB, None));
        let k = m.kill().unwrap();
        assert_eq!(k.total_rss_bytes, 110 * MIB);
        assert_eq!(k.workers_rss_bytes, 50 * MIB);
        assert_eq!(k.container_bytes, 100 * MIB);
        assert_eq!(k.exit_status, EXIT_KILLED_EXCEEDED_PMEM);
        assert!(
            k.message
                .starts_with("Container killed by YARN for exceeding physical memory limits."),
            "{}",
            k.message
        );
    }

    #[test]
    fn off_counts_but_says_nothing() {
        let m = OverheadMonitor::new(MonitorPolicy::Off, 10 * MIB);
        assert!(!m.observe(20 * MIB, 0, None));
        assert_eq!(m.peaks().times_exceeded, 1);
        assert!(!m.is_killed());
    }
}
