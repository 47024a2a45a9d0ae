//! The `cgroup` section of report.json: what a supervised executor's memory cgroup saw, and
//! how the executor ended. The `--cgroup` supervisor (`crate::cgroup_run`) fills it; the
//! report (`crate::run::Report`) carries it typed.

use serde::{Deserialize, Serialize};

use super::CgroupVersion;

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChildOutcome {
    /// It exited by itself with this code.
    Exited { code: i32 },
    /// SIGKILL while the cgroup's `oom_kill` counter rose: the kernel's memory cgroup OOM killer.
    OomKilled,
    /// Killed by a signal, with no OOM kill counted: cause unknown (an operator, another tool).
    Killed { signal: i32 },
}

impl ChildOutcome {
    /// The shell's exit status of the child (137 = 128 + SIGKILL).
    pub fn shell_status(&self) -> i32 {
        match *self {
            ChildOutcome::Exited { code } => code,
            ChildOutcome::OomKilled => 128 + crate::proc_ctl::SIGKILL,
            ChildOutcome::Killed { signal } => 128 + signal,
        }
    }
}

/// The `cgroup` object of report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupReport {
    pub version: CgroupVersion,
    /// The memory cgroup directory the executor ran in (removed since).
    pub path: String,
    /// Its `memory.pressure` (the cgroup2 tree on a hybrid host), if any.
    pub pressure_path: Option<String>,
    pub limit_bytes: u64,
    /// Where the limit came from: `container` (the layout) or `--cgroup=SIZE`.
    pub limit_source: String,
    /// The kernel's peak (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`), else the sampled
    /// maximum.
    pub peak_usage_bytes: u64,
    pub sampled_peak_usage_bytes: u64,
    pub oom_kill: u64,
    /// PSI totals of the executor's cgroup (µs stalled; the cgroup was new, so since start).
    pub psi_some_total_us: u64,
    pub psi_full_total_us: u64,
    pub events: std::collections::BTreeMap<String, u64>,
    pub stat: std::collections::BTreeMap<String, u64>,
    pub samples: u64,
    pub child_pid: u32,
    pub outcome: ChildOutcome,
    /// The shell's view of the child's exit (137 for SIGKILL).
    pub exit_status: i32,
}
