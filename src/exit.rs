//! The exit statuses of the `spillway` binary, in one table, and [`Exit`]: the one way an error
//! of the library that can reach `main` says which of them it ends the process with.
//!
//! The table is the contract scripts rely on (`spillway run … || case $? in …`), so it lives
//! here once ([`TABLE`]): `main.rs` holds no exit number, and the tests below check that the
//! README's "Exit status" section and the `--help` text carry every row word for word.

use std::fmt;

/// How the process ends. Numbers follow the shell: 0 is success, 2 is a usage error (as clap
/// exits for a bad flag), and 128 + n means "ended by signal n".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// 0: the command did what it was asked. A reproduced OOM is a result, not a failure: `oom
    /// CASE` exits 0 when its failure happened as the case expects.
    Success,
    /// 1: the run or the machine failed — I/O, a mapping, the executor's start, a temporary
    /// directory, a child process that could not start or was killed for an unknown cause, a
    /// YARN-style container kill by the monitor, an `oom` case that did not reproduce.
    Failure,
    /// 2: bad input — configuration (`--conf`, properties file), scenario, command-line values.
    /// Nothing is written before input is validated.
    BadInput,
    /// 3: the executor's container was killed by the kernel's memory cgroup OOM killer
    /// (`run --cgroup`; the child itself exited 137). The report is written.
    ContainerOomKilled,
    /// 4: the run finished and wrote its report, but tasks failed that their stage did not
    /// declare as expected.
    UndeclaredTaskFailures,
    /// 128 + n: interrupted by signal n (SIGHUP 129, SIGINT 130, SIGTERM 143), after cleaning up.
    Signal(i32),
}

impl ExitStatus {
    /// Interrupted by SIGHUP (129).
    pub const HANGUP: ExitStatus = ExitStatus::Signal(libc::SIGHUP);
    /// Interrupted by SIGINT, Ctrl-C (130).
    pub const INTERRUPT: ExitStatus = ExitStatus::Signal(libc::SIGINT);
    /// Interrupted by SIGTERM (143).
    pub const TERMINATE: ExitStatus = ExitStatus::Signal(libc::SIGTERM);

    /// The process exit code. A signal number outside 1..=127 (none exists on Linux) is a
    /// failure (1) rather than a wrapped-around byte.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::BadInput => 2,
            ExitStatus::ContainerOomKilled => 3,
            ExitStatus::UndeclaredTaskFailures => 4,
            ExitStatus::Signal(n) if (1..=127).contains(&n) => 128 + n as u8,
            ExitStatus::Signal(_) => 1,
        }
    }

    /// The status a code of this table stands for; `None` for a code the table does not hold.
    /// The `--cgroup` supervisor and the `oom container --cgroup` case read a child spillway's
    /// exit code with it.
    pub fn from_code(code: i32) -> Option<ExitStatus> {
        match code {
            0 => Some(ExitStatus::Success),
            1 => Some(ExitStatus::Failure),
            2 => Some(ExitStatus::BadInput),
            3 => Some(ExitStatus::ContainerOomKilled),
            4 => Some(ExitStatus::UndeclaredTaskFailures),
            129..=255 => Some(ExitStatus::Signal(code - 128)),
            _ => None,
        }
    }

    /// Whether this is 0.
    pub fn is_success(self) -> bool {
        self == ExitStatus::Success
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// One row of the table: the code as printed (`128+n` for signals) and what it means.
pub struct Row {
    pub code: &'static str,
    pub meaning: &'static str,
}

/// The table, in order, as the README and `--help` print it.
pub const TABLE: &[Row] = &[
    Row {
        code: "0",
        meaning: "success; for `oom CASE`, the case reproduced its failure (a reproduced OOM is a result)",
    },
    Row {
        code: "1",
        meaning: "the run or the machine failed: I/O, mapping, executor start, temp dir, a child killed for an unknown cause, a container killed by the YARN-style monitor where no stage declared it, an `oom` case that did not reproduce",
    },
    Row {
        code: "2",
        meaning: "bad input: configuration (`--conf`, properties file), scenario, command-line values, an unknown `oom` case; nothing is written",
    },
    Row {
        code: "3",
        meaning: "the executor's container was killed by the kernel OOM killer (`run --cgroup`); the report is written",
    },
    Row {
        code: "4",
        meaning: "the run wrote its report, but a stage did not end as it declares (`expect`): tasks failed that it did not declare, a declared failure did not happen, or its output did not verify",
    },
    Row {
        code: "128+n",
        meaning: "interrupted by signal n (129 SIGHUP, 130 SIGINT, 143 SIGTERM), after cleaning up; the report says `complete: false`",
    },
];

/// The table as `--help` prints it after the options.
pub fn help_text() -> String {
    let mut s = String::from("Exit status:\n");
    for r in TABLE {
        s.push_str(&format!("  {:<6} {}\n", r.code, r.meaning));
    }
    s
}

/// An error that can end the process says which status it ends it with. Implemented beside
/// every error type of the library that reaches `main` (this module is a leaf every layer may
/// use), so the binary never picks a number itself.
pub trait Exit {
    fn exit_status(&self) -> ExitStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ExitStatus; 8] = [
        ExitStatus::Success,
        ExitStatus::Failure,
        ExitStatus::BadInput,
        ExitStatus::ContainerOomKilled,
        ExitStatus::UndeclaredTaskFailures,
        ExitStatus::HANGUP,
        ExitStatus::INTERRUPT,
        ExitStatus::TERMINATE,
    ];

    #[test]
    fn codes_are_the_documented_ones_and_read_back() {
        let codes: Vec<u8> = ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 129, 130, 143]);
        for s in ALL {
            assert_eq!(ExitStatus::from_code(i32::from(s.code())), Some(s), "{s:?}");
        }
        assert_eq!(ExitStatus::from_code(5), None);
        assert_eq!(ExitStatus::from_code(-1), None);
        assert_eq!(ExitStatus::Signal(0).code(), 1);
        assert_eq!(ExitStatus::Signal(200).code(), 1);
    }

    #[test]
    fn the_help_text_and_the_readme_carry_every_row() {
        let help = help_text();
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Exit status")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README.md has an \"Exit status\" section");
        for r in TABLE {
            assert!(help.contains(r.code) && help.contains(r.meaning), "{help}");
            let row = format!("| {} | {} |", r.code, r.meaning);
            assert!(
                section.contains(&row),
                "README's exit status table lacks the row {row}"
            );
        }
        for s in ["129", "130", "143"] {
            assert!(help.contains(s) && section.contains(s), "{s}");
        }
    }
}
