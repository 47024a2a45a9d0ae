//! One executor's event counters: tasks bump them as they spill and as they zero fresh pages,
//! so the timeline sampler can mark spills as they happen and tell pages being zeroed from
//! memory at rest, and the bytes of shuffle fetch buffers held outside the heap (per-task
//! metrics are reported by the tasks themselves).
//!
//! The counters belong to an executor ([`crate::executor::Executor::metrics`]), not to the
//! process: several executors in one process (the tests run many) each see only their own
//! tasks. A task reaches them through its `TaskMemoryManager` (`TaskContext::memory`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Spill, page-zeroing and fetch-buffer counters of one executor.
#[derive(Debug, Default)]
pub struct ExecutorMetrics {
    spills: AtomicU64,
    spill_bytes: AtomicU64,
    touching: AtomicU64,
    fetch_in_flight: AtomicU64,
}

impl ExecutorMetrics {
    /// Counters at zero.
    pub fn new() -> ExecutorMetrics {
        ExecutorMetrics::default()
    }

    /// Records one spill of `disk_bytes` written.
    pub fn record_spill(&self, disk_bytes: u64) {
        self.spills.fetch_add(1, Ordering::Relaxed);
        self.spill_bytes.fetch_add(disk_bytes, Ordering::Relaxed);
    }

    /// Spills and spilled bytes so far in this executor.
    pub fn spills(&self) -> (u64, u64) {
        (
            self.spills.load(Ordering::Relaxed),
            self.spill_bytes.load(Ordering::Relaxed),
        )
    }

    /// Marks `bytes` of freshly granted pages as being zeroed (granted, not yet resident); the
    /// returned guard unmarks them. The timeline subtracts these from what it expects resident.
    pub fn touching(&self, bytes: u64) -> TouchGuard<'_> {
        self.touching.fetch_add(bytes, Ordering::Relaxed);
        TouchGuard {
            metrics: self,
            bytes,
        }
    }

    /// Bytes of pages being zeroed right now.
    pub fn touching_bytes(&self) -> u64 {
        self.touching.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of a shuffle fetch buffer (native memory outside the heap, as Netty's
    /// direct buffers) from before it is mapped until the returned guard drops, after it is
    /// unmapped. The guard owns a handle to the counters, so it can travel with its buffer
    /// from the fetcher thread to the task.
    pub fn fetch_buffer(self: &Arc<Self>, bytes: u64) -> FetchBufferGuard {
        self.fetch_in_flight.fetch_add(bytes, Ordering::Relaxed);
        FetchBufferGuard {
            metrics: Arc::clone(self),
            bytes,
        }
    }

    /// Bytes of shuffle fetch buffers allocated and not yet freed, right now.
    pub fn fetch_bytes_in_flight(&self) -> u64 {
        self.fetch_in_flight.load(Ordering::Relaxed)
    }
}

/// Uncounts a fetch buffer when it is freed.
#[must_use = "the buffer counts as in flight only while the guard lives"]
#[derive(Debug)]
pub struct FetchBufferGuard {
    metrics: Arc<ExecutorMetrics>,
    bytes: u64,
}

impl Drop for FetchBufferGuard {
    fn drop(&mut self) {
        self.metrics
            .fetch_in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Unmarks pages when they are resident.
#[must_use = "the pages count as being zeroed only while the guard lives"]
pub struct TouchGuard<'a> {
    metrics: &'a ExecutorMetrics,
    bytes: u64,
}

impl Drop for TouchGuard<'_> {
    fn drop(&mut self) {
        self.metrics
            .touching
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_add_up_and_touching_lasts_as_long_as_its_guard() {
        let m = ExecutorMetrics::new();
        m.record_spill(10);
        m.record_spill(5);
        assert_eq!(m.spills(), (2, 15));
        let a = m.touching(4096);
        {
            let _b = m.touching(8192);
            assert_eq!(m.touching_bytes(), 12288);
        }
        assert_eq!(m.touching_bytes(), 4096);
        drop(a);
        assert_eq!(m.touching_bytes(), 0);
    }

    #[test]
    fn fetch_buffers_count_until_their_guards_drop_on_any_thread() {
        let m = Arc::new(ExecutorMetrics::new());
        let a = m.fetch_buffer(1000);
        let b = m.fetch_buffer(24);
        assert_eq!(m.fetch_bytes_in_flight(), 1024);
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(m.fetch_bytes_in_flight(), 1000);
        drop(a);
        assert_eq!(m.fetch_bytes_in_flight(), 0);
    }
}
