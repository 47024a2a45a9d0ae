//! Process-wide event counters that tasks bump as they spill, so the timeline sampler can mark
//! spills as they happen (per-task metrics are reported by the tasks themselves).

use std::sync::atomic::{AtomicU64, Ordering};

static SPILLS: AtomicU64 = AtomicU64::new(0);
static SPILL_BYTES: AtomicU64 = AtomicU64::new(0);

/// Records one spill of `disk_bytes` written.
pub fn record_spill(disk_bytes: u64) {
    SPILLS.fetch_add(1, Ordering::Relaxed);
    SPILL_BYTES.fetch_add(disk_bytes, Ordering::Relaxed);
}

/// Spills and spilled bytes so far in this process.
pub fn spills() -> (u64, u64) {
    (
        SPILLS.load(Ordering::Relaxed),
        SPILL_BYTES.load(Ordering::Relaxed),
    )
}

static TOUCHING: AtomicU64 = AtomicU64::new(0);

/// Marks `bytes` of freshly granted pages as being zeroed (granted, not yet resident); the
/// returned guard unmarks them. The timeline subtracts these from what it expects resident.
pub fn touching(bytes: u64) -> TouchGuard {
    TOUCHING.fetch_add(bytes, Ordering::Relaxed);
    TouchGuard(bytes)
}

/// Bytes of pages being zeroed right now.
pub fn touching_bytes() -> u64 {
    TOUCHING.load(Ordering::Relaxed)
}

/// Unmarks pages when they are resident.
pub struct TouchGuard(u64);

impl Drop for TouchGuard {
    fn drop(&mut self) {
        TOUCHING.fetch_sub(self.0, Ordering::Relaxed);
    }
}
