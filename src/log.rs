//! The `log` facade's logger: Spark-style lines (`WARN MemoryStore: ...`) on stderr, filtered by
//! `SPILLWAY_LOG`, and a count of warnings so a run can report how many it logged.
//!
//! Code anywhere in the crate logs through the `log` macros with the Spark component as the
//! target (`::log::warn!(target: "MemoryStore", "...")`), or through the small helpers below
//! ([`warn()`], [`info()`], [`log()`]) that do exactly that. The binary installs [`SpillwayLogger`]
//! once with [`init`]; without it (a library user, a unit test) the records go to the facade's
//! no-op logger.
//!
//! `SPILLWAY_LOG` is one of `error`, `warn` (the default), `info`, `debug`, `trace`, `off`, in
//! any case. Another value is reported once, as a warning, and the default is used: a typo in a
//! logging variable must not stop a run, nor pass unnoticed.
//!
//! Warnings are counted whether or not they are printed (`SPILLWAY_LOG=off` still counts them),
//! so the facade's maximum level is never set below `warn`; the logger itself filters what it
//! prints.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use ::log::Level;
use ::log::{LevelFilter, Metadata, Record};

/// The environment variable that sets the level.
pub const ENV_VAR: &str = "SPILLWAY_LOG";

/// The level used when `SPILLWAY_LOG` is unset, empty or not a level.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Warn;

/// The logger: prints `LEVEL target: message` to stderr for records at or above its level and
/// counts every warning it is handed.
#[derive(Debug)]
pub struct SpillwayLogger {
    level: LevelFilter,
    warnings: AtomicU64,
}

impl SpillwayLogger {
    /// A logger printing records up to `level`.
    pub fn new(level: LevelFilter) -> SpillwayLogger {
        SpillwayLogger {
            level,
            warnings: AtomicU64::new(0),
        }
    }

    /// The level it prints up to.
    pub fn level(&self) -> LevelFilter {
        self.level
    }

    /// Warnings handed to this logger so far, printed or not.
    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }
}

impl ::log::Log for SpillwayLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if record.level() == Level::Warn {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
        if self.enabled(record.metadata()) {
            // One write per line, under the stderr lock: lines of concurrent tasks never mix.
            let _ = writeln!(
                std::io::stderr().lock(),
                "{} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The level `SPILLWAY_LOG`'s value asks for, and the complaint to log if the value is not a
/// level (`None` for an unset or empty variable: the default, silently).
pub fn parse_level(value: Option<&str>) -> (LevelFilter, Option<String>) {
    match value.map(str::trim) {
        None | Some("") => (DEFAULT_LEVEL, None),
        Some(v) => match v.parse::<LevelFilter>() {
            Ok(level) => (level, None),
            Err(_) => (
                DEFAULT_LEVEL,
                Some(format!(
                    "{ENV_VAR}={v:?} is not one of error, warn, info, debug, trace, off; \
                     using {}",
                    DEFAULT_LEVEL.as_str().to_ascii_lowercase()
                )),
            ),
        },
    }
}

static LOGGER: OnceLock<SpillwayLogger> = OnceLock::new();

/// Installs [`SpillwayLogger`] as the `log` facade's logger, with the level from
/// `SPILLWAY_LOG`. Idempotent: the second and later calls (tests, a library user who also
/// calls it) change nothing. If another logger was installed first, that one stays and
/// spillway's lines go through it; the warning count then stays 0.
pub fn init() {
    let mut complaint = None;
    let logger = LOGGER.get_or_init(|| {
        let value = std::env::var(ENV_VAR).ok();
        let (level, bad) = parse_level(value.as_deref());
        complaint = bad;
        SpillwayLogger::new(level)
    });
    if ::log::set_logger(logger).is_ok() {
        // Warnings must reach the logger to be counted, even when it does not print them.
        ::log::set_max_level(logger.level().max(LevelFilter::Warn));
    }
    // Only the call that created the logger holds a complaint: reported once.
    if let Some(message) = complaint {
        ::log::warn!(target: "spillway", "{message}");
    }
}

/// Logs `message` at `level` with the Spark component as the target.
pub fn log(level: Level, component: &str, message: &str) {
    ::log::log!(target: component, level, "{message}");
}

/// A warning (`logWarning`).
pub fn warn(component: &str, message: &str) {
    log(Level::Warn, component, message);
}

/// An info line (`logInfo`), printed only with `SPILLWAY_LOG=info` or more.
pub fn info(component: &str, message: &str) {
    log(Level::Info, component, message);
}

/// Warnings logged so far by this process (printed or not), if [`init`] installed spillway's
/// logger; 0 otherwise.
pub fn warnings_logged() -> u64 {
    LOGGER.get().map_or(0, SpillwayLogger::warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::log::Log;

    #[test]
    fn parses_every_level_in_any_case() {
        for (text, level) in [
            ("off", LevelFilter::Off),
            ("ERROR", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("Info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            (" trace ", LevelFilter::Trace),
        ] {
            assert_eq!(parse_level(Some(text)), (level, None), "{text:?}");
        }
        assert_eq!(parse_level(None), (LevelFilter::Warn, None));
        assert_eq!(parse_level(Some("")), (LevelFilter::Warn, None));
    }

    #[test]
    fn a_bad_value_is_named_and_the_default_used() {
        let (level, complaint) = parse_level(Some("verbose"));
        assert_eq!(level, LevelFilter::Warn);
        assert_eq!(
            complaint.as_deref(),
            Some(
                "SPILLWAY_LOG=\"verbose\" is not one of error, warn, info, debug, trace, off; \
                 using warn"
            )
        );
    }

    #[test]
    fn counts_warnings_it_does_not_print() {
        let logger = SpillwayLogger::new(LevelFilter::Off);
        let warn = Record::builder()
            .level(Level::Warn)
            .target("MemoryStore")
            .args(format_args!("x"))
            .build();
        assert!(!logger.enabled(warn.metadata()));
        logger.log(&warn);
        logger.log(&warn);
        let info = Record::builder()
            .level(Level::Info)
            .target("MemoryStore")
            .args(format_args!("y"))
            .build();
        logger.log(&info);
        assert_eq!(logger.warnings(), 2);
        let info_logger = SpillwayLogger::new(LevelFilter::Info);
        assert!(info_logger.enabled(info.metadata()));
        assert!(
            !info_logger.enabled(
                &Metadata::builder()
                    .level(Level::Debug)
                    .target("MemoryStore")
                    .build()
            )
        );
    }

    #[test]
    fn init_twice_is_harmless_and_warnings_are_counted() {
        init();
        init();
        let before = warnings_logged();
        warn("LogTest", "counted once");
        info("LogTest", "not a warning");
        assert!(::log::max_level() >= LevelFilter::Warn);
        // Other tests of this binary may warn concurrently: at least ours is counted.
        assert!(
            warnings_logged() > before,
            "{before} -> {}",
            warnings_logged()
        );
    }
}
