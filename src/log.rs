//! Spark-style log lines (`WARN MemoryStore: ...`) on stderr, filtered by `SPILLWAY_LOG`
//! (`error`, `warn` — the default — `info`, or `off`), and counted so a run can report how
//! many warnings it printed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
}

static WARNINGS: AtomicU64 = AtomicU64::new(0);

fn max_level() -> u8 {
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        match std::env::var("SPILLWAY_LOG")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "off" => 0,
            "error" => 1,
            "info" | "debug" => 3,
            _ => 2,
        }
    })
}

/// Prints `LEVEL component: message` if the level is enabled.
pub fn log(level: Level, component: &str, message: &str) {
    if level == Level::Warn {
        WARNINGS.fetch_add(1, Ordering::Relaxed);
    }
    if (level as u8) <= max_level() {
        let tag = match level {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
        };
        eprintln!("{tag} {component}: {message}");
    }
}

/// A warning (`logWarning`).
pub fn warn(component: &str, message: &str) {
    log(Level::Warn, component, message);
}

/// An info line (`logInfo`), off unless `SPILLWAY_LOG=info`.
pub fn info(component: &str, message: &str) {
    log(Level::Info, component, message);
}

/// Warnings logged so far by this process (printed or not).
pub fn warnings_logged() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}
