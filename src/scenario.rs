//! Scenario files (docs/report.md "Scenario file") and the built-in scenarios.
//!
//! A scenario is a Spark job in miniature: a `[conf]` table and a list of `[[stages]]`, each of
//! one kind with documented keys and defaults. Every key is checked: an unknown key or kind is
//! an error naming it and listing what is accepted.
//!
//! | kind | keys (default) |
//! |---|---|
//! | `cache` | `rdd` (1), `partitions` (8), `partition_bytes` ("16m"), `record_bytes` (100), `storage_level` ("MEMORY_ONLY"), `name` ("rdd_<id>") |
//! | `scan` | `rdd` (1): reads every partition of a cached RDD (memory, disk, or recompute) |
//! | `unpersist` | `rdd` (1): removes an RDD's blocks |
//! | `sort` | `tasks` (4), `records_per_task` (1000000), `record_bytes` (56) |
//! | `aggregate` | `tasks` (4), `records_per_task` (1000000), `record_bytes` (24), `distinct_keys` (100000) |
//! | `udf` | `tasks` (4), `bytes_per_task` ("64m"), `object_bytes` ("64k") |
//! | `python` | `tasks` (4), `bytes_per_task` ("64m": the UDF's working set in the worker), `records_per_task` (0: no aggregation), `distinct_keys` (100000), `worker` ("auto": python3 when present, else "spillway") |
//! | `broadcast` | `id` (0), `bytes` ("32m"), `record_bytes` (1024), `storage_level` ("MEMORY_AND_DISK") |
//!
//! Sizes accept integers (bytes) or Spark byte strings ("40m"). Top-level keys: `name`,
//! `description`, `seed` (42), `[conf]`, `[[stages]]`.

use std::path::{Path, PathBuf};

use crate::conf::{ByteUnit, byte_string_as};
use crate::storage::StorageLevel;

/// A bad scenario: a parse error, an unknown key or kind, or a bad value. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {origin} is not valid TOML: {message}")]
    Toml { origin: String, message: String },
    #[error("unknown scenario key '{key}' in {origin} (accepted: {accepted})")]
    UnknownTopKey {
        origin: String,
        key: String,
        accepted: &'static str,
    },
    #[error("unknown stage kind '{kind}' in stage {index} of {origin} (accepted: {accepted})")]
    UnknownKind {
        origin: String,
        index: usize,
        kind: String,
        accepted: &'static str,
    },
    #[error("unknown key '{key}' in {kind} stage {index} of {origin} (accepted: {accepted})")]
    UnknownKey {
        origin: String,
        index: usize,
        kind: &'static str,
        key: String,
        accepted: String,
    },
    #[error("invalid value for '{key}' in stage {index} of {origin}: {value}: {reason}")]
    BadValue {
        origin: String,
        index: usize,
        key: String,
        value: String,
        reason: String,
    },
    #[error("invalid scenario {origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("no built-in scenario named '{name}' and no such file (built-ins: {builtins})")]
    UnknownScenario { name: String, builtins: String },
}

/// One stage of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum StageSpec {
    Cache {
        rdd: u32,
        name: String,
        partitions: u32,
        partition_bytes: u64,
        record_bytes: u64,
        storage_level: StorageLevel,
    },
    Scan {
        rdd: u32,
    },
    Unpersist {
        rdd: u32,
    },
    Sort {
        tasks: u32,
        records_per_task: u64,
        record_bytes: u64,
    },
    Aggregate {
        tasks: u32,
        records_per_task: u64,
        record_bytes: u64,
        distinct_keys: u64,
    },
    Udf {
        tasks: u32,
        bytes_per_task: u64,
        object_bytes: u64,
    },
    Broadcast {
        id: u64,
        bytes: u64,
        record_bytes: u64,
        storage_level: StorageLevel,
    },
    /// Tasks run in PySpark-style worker processes (`crate::external`).
    Python {
        tasks: u32,
        bytes_per_task: u64,
        records_per_task: u64,
        distinct_keys: u64,
        worker: crate::external::WorkerChoice,
    },
}

impl StageSpec {
    /// The stage kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            StageSpec::Cache { .. } => "cache",
            StageSpec::Scan { .. } => "scan",
            StageSpec::Unpersist { .. } => "unpersist",
            StageSpec::Sort { .. } => "sort",
            StageSpec::Aggregate { .. } => "aggregate",
            StageSpec::Udf { .. } => "udf",
            StageSpec::Broadcast { .. } => "broadcast",
            StageSpec::Python { .. } => "python",
        }
    }
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// `[conf]` in file order.
    pub conf: Vec<(String, String)>,
    pub stages: Vec<StageSpec>,
    /// The file it came from (`None` for a built-in).
    pub path: Option<PathBuf>,
}

const KINDS: &str = "cache, scan, unpersist, sort, aggregate, udf, broadcast, python";
const TOP_KEYS: &str = "name, description, seed, conf, stages";

/// The built-in scenarios: name, TOML.
pub const BUILTINS: [(&str, &str); 5] = [
    ("default", include_str!("scenarios/default.toml")),
    ("sort-spill", include_str!("scenarios/sort-spill.toml")),
    (
        "aggregate-spill",
        include_str!("scenarios/aggregate-spill.toml"),
    ),
    (
        "cache-pressure",
        include_str!("scenarios/cache-pressure.toml"),
    ),
    (
        "cache-then-sort",
        include_str!("scenarios/cache-then-sort.toml"),
    ),
];

impl Scenario {
    /// A built-in by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some((_, text)) = BUILTINS.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(text, &format!("built-in '{name_or_path}'"), None);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            return Scenario::parse(&text, &path.display().to_string(), Some(path.to_path_buf()));
        }
        Err(ScenarioError::UnknownScenario {
            name: name_or_path.to_string(),
            builtins: BUILTINS.map(|(n, _)| n).join(", "),
        })
    }

    /// Parses scenario TOML; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        path: Option<PathBuf>,
    ) -> Result<Scenario, ScenarioError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ScenarioError::Toml {
                    origin: origin.to_string(),
                    message: e.message().to_string(),
                })?;
        for key in table.keys() {
            if !["name", "description", "seed", "conf", "stages"].contains(&key.as_str()) {
                return Err(ScenarioError::UnknownTopKey {
                    origin: origin.into(),
                    key: key.clone(),
                    accepted: TOP_KEYS,
                });
            }
        }
        let invalid = |reason: String| ScenarioError::Invalid {
            origin: origin.into(),
            reason,
        };
        let name = match table.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => return Err(invalid(format!("'name' must be a string, not {other}"))),
            None => path
                .as_ref()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into()),
        };
        let description = match table.get("description") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(invalid(format!(
                    "'description' must be a string, not {other}"
                )));
            }
            None => String::new(),
        };
        let seed = match table.get("seed") {
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(other) => {
                return Err(invalid(format!(
                    "'seed' must be a non-negative integer, not {other}"
                )));
            }
            None => 42,
        };
        let mut conf = Vec::new();
        match table.get("conf") {
            Some(toml::Value::Table(t)) => {
                for (k, v) in t {
                    let value = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        other => {
                            return Err(invalid(format!(
                                "[conf] value of {k} must be a string, number or boolean, not {other}"
                            )));
                        }
                    };
                    conf.push((k.clone(), value));
                }
            }
            Some(other) => return Err(invalid(format!("[conf] must be a table, not {other}"))),
            None => {}
        }
        let mut stages = Vec::new();
        match table.get("stages") {
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let toml::Value::Table(t) = item else {
                        return Err(invalid(format!("stage {i} must be a table")));
                    };
                    stages.push(parse_stage(t, i, origin)?);
                }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "'stages' must be an array of tables, not {other}"
                )));
            }
            None => {}
        }
        if stages.is_empty() {
            return Err(invalid(
                "a scenario needs at least one [[stages]] entry".into(),
            ));
        }
        // A scan needs a cache stage of its RDD before it.
        let mut cached = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            match s {
                StageSpec::Cache { rdd, .. } => cached.push(*rdd),
                StageSpec::Scan { rdd } | StageSpec::Unpersist { rdd } if !cached.contains(rdd) => {
                    return Err(ScenarioError::BadValue {
                        origin: origin.into(),
                        index: i,
                        key: "rdd".into(),
                        value: rdd.to_string(),
                        reason: "no earlier cache stage of this RDD".into(),
                    });
                }
                _ => {}
            }
        }
        Ok(Scenario {
            name,
            description,
            seed,
            conf,
            stages,
            path,
        })
    }
}

/// Reads one stage's keys, with defaults, refusing unknown ones.
struct StageReader<'a> {
    table: &'a toml::Table,
    index: usize,
    origin: &'a str,
    kind: &'static str,
    allowed: Vec<&'static str>,
}

impl StageReader<'_> {
    fn bad(&self, key: &str, value: &toml::Value, reason: &str) -> ScenarioError {
        ScenarioError::BadValue {
            origin: self.origin.into(),
            index: self.index,
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn int(&mut self, key: &'static str, default: u64, min: u64) -> Result<u64, ScenarioError> {
        self.allowed.push(key);
        match self.table.get(key) {
            None => Ok(default),
            Some(v @ toml::Value::Integer(i)) => {
                if *i < min as i64 {
                    Err(self.bad(key, v, &format!("must be at least {min}")))
                } else {
                    Ok(*i as u64)
                }
            }
            Some(v) => Err(self.bad(key, v, "must be an integer")),
        }
    }

    fn size(&mut self, key: &'static str, default: &str, min: u64) -> Result<u64, ScenarioError> {
        self.allowed.push(key);
        let value = self.table.get(key);
        let bytes = match value {
            None => byte_string_as(default, ByteUnit::Byte).expect("defaults parse") as u64,
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(v @ toml::Value::String(s)) => match byte_string_as(s, ByteUnit::Byte) {
                Ok(b) => b as u64,
                Err(e) => return Err(self.bad(key, v, &e.to_string())),
            },
            Some(v) => {
                return Err(self.bad(
                    key,
                    v,
                    "must be a size in bytes or a byte string like \"40m\"",
                ));
            }
        };
        if bytes < min {
            return Err(match value {
                Some(v) => self.bad(key, v, &format!("must be at least {min} bytes")),
                None => self.bad(key, &toml::Value::Integer(bytes as i64), "bad default"),
            });
        }
        Ok(bytes)
    }

    fn level(
        &mut self,
        key: &'static str,
        default: StorageLevel,
    ) -> Result<StorageLevel, ScenarioError> {
        self.allowed.push(key);
        match self.table.get(key) {
            None => Ok(default),
            Some(v @ toml::Value::String(s)) => {
                s.parse().map_err(|e: crate::storage::StorageLevelError| {
                    self.bad(
                        key,
                        v,
                        &format!(
                            "{e} (accepted: {})",
                            StorageLevel::NAMED.map(|(n, _)| n).join(", ")
                        ),
                    )
                })
            }
            Some(v) => Err(self.bad(key, v, "must be a StorageLevel name")),
        }
    }

    fn string(&mut self, key: &'static str, default: String) -> Result<String, ScenarioError> {
        self.allowed.push(key);
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.bad(key, v, "must be a string")),
        }
    }

    fn worker(
        &mut self,
        key: &'static str,
    ) -> Result<crate::external::WorkerChoice, ScenarioError> {
        use crate::external::{WorkerChoice, WorkerKind};
        self.allowed.push(key);
        match self.table.get(key) {
            None => Ok(WorkerChoice::Auto),
            Some(v @ toml::Value::String(s)) => match s.as_str() {
                "auto" => Ok(WorkerChoice::Auto),
                "python3" => Ok(WorkerChoice::Kind(WorkerKind::Python3)),
                "spillway" => Ok(WorkerChoice::Kind(WorkerKind::Spillway)),
                _ => Err(self.bad(key, v, "must be \"auto\", \"python3\" or \"spillway\"")),
            },
            Some(v) => Err(self.bad(key, v, "must be a string")),
        }
    }

    fn finish(self) -> Result<(), ScenarioError> {
        for key in self.table.keys() {
            if key != "kind" && !self.allowed.contains(&key.as_str()) {
                return Err(ScenarioError::UnknownKey {
                    origin: self.origin.into(),
                    index: self.index,
                    kind: self.kind,
                    key: key.clone(),
                    accepted: self.allowed.join(", "),
                });
            }
        }
        Ok(())
    }
}

fn parse_stage(t: &toml::Table, index: usize, origin: &str) -> Result<StageSpec, ScenarioError> {
    let kind = match t.get("kind") {
        Some(toml::Value::String(k)) => k.as_str(),
        Some(other) => {
            return Err(ScenarioError::UnknownKind {
                origin: origin.into(),
                index,
                kind: other.to_string(),
                accepted: KINDS,
            });
        }
        None => {
            return Err(ScenarioError::Invalid {
                origin: origin.into(),
                reason: format!("stage {index} has no 'kind' (accepted: {KINDS})"),
            });
        }
    };
    let kind: &'static str = match kind {
        "cache" => "cache",
        "scan" => "scan",
        "unpersist" => "unpersist",
        "sort" => "sort",
        "aggregate" => "aggregate",
        "udf" => "udf",
        "broadcast" => "broadcast",
        "python" => "python",
        other => {
            return Err(ScenarioError::UnknownKind {
                origin: origin.into(),
                index,
                kind: other.to_string(),
                accepted: KINDS,
            });
        }
    };
    let mut r = StageReader {
        table: t,
        index,
        origin,
        kind,
        allowed: Vec::new(),
    };
    let spec = match kind {
        "cache" => {
            let rdd = r.int("rdd", 1, 0)? as u32;
            StageSpec::Cache {
                rdd,
                name: r.string("name", format!("rdd_{rdd}"))?,
                partitions: r.int("partitions", 8, 1)? as u32,
                partition_bytes: r.size("partition_bytes", "16m", 1)?,
                record_bytes: r.size("record_bytes", "100", 8)?,
                storage_level: r.level("storage_level", StorageLevel::MEMORY_ONLY)?,
            }
        }
        "scan" => StageSpec::Scan {
            rdd: r.int("rdd", 1, 0)? as u32,
        },
        "unpersist" => StageSpec::Unpersist {
            rdd: r.int("rdd", 1, 0)? as u32,
        },
        "sort" => StageSpec::Sort {
            tasks: r.int("tasks", 4, 1)? as u32,
            records_per_task: r.int("records_per_task", 1_000_000, 0)?,
            record_bytes: r.size("record_bytes", "56", 8)?,
        },
        "aggregate" => StageSpec::Aggregate {
            tasks: r.int("tasks", 4, 1)? as u32,
            records_per_task: r.int("records_per_task", 1_000_000, 0)?,
            record_bytes: r.size("record_bytes", "24", 16)?,
            distinct_keys: r.int("distinct_keys", 100_000, 1)?,
        },
        "udf" => StageSpec::Udf {
            tasks: r.int("tasks", 4, 1)? as u32,
            bytes_per_task: r.size("bytes_per_task", "64m", 0)?,
            object_bytes: r.size("object_bytes", "64k", 1)?,
        },
        "broadcast" => StageSpec::Broadcast {
            id: r.int("id", 0, 0)?,
            bytes: r.size("bytes", "32m", 1)?,
            record_bytes: r.size("record_bytes", "1024", 8)?,
            storage_level: r.level("storage_level", StorageLevel::MEMORY_AND_DISK)?,
        },
        "python" => StageSpec::Python {
            tasks: r.int("tasks", 4, 1)? as u32,
            bytes_per_task: r.size("bytes_per_task", "64m", 0)?,
            records_per_task: r.int("records_per_task", 0, 0)?,
            distinct_keys: r.int("distinct_keys", 100_000, 1)?,
            worker: r.worker("worker")?,
        },
        _ => unreachable!("kinds are matched above"),
    };
    r.finish()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses() {
        for (name, _) in BUILTINS {
            let s = Scenario::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, name);
            assert!(!s.stages.is_empty());
        }
    }

    #[test]
    fn the_design_example_parses_with_defaults() {
        let text = r#"
name = "cache-then-sort"
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"

[[stages]]
kind = "cache"
rdd = 1
partitions = 12
partition_bytes = 41969980
storage_level = "MEMORY_ONLY"

[[stages]]
kind = "sort"
tasks = 8
records_per_task = 2500000
record_bytes = 56
"#;
        let s = Scenario::parse(text, "test", None).unwrap();
        assert_eq!(s.conf[0], ("spark.executor.cores".into(), "2".into()));
        assert_eq!(
            s.stages[0],
            StageSpec::Cache {
                rdd: 1,
                name: "rdd_1".into(),
                partitions: 12,
                partition_bytes: 41_969_980,
                record_bytes: 100,
                storage_level: StorageLevel::MEMORY_ONLY,
            }
        );
        assert_eq!(
            s.stages[1],
            StageSpec::Sort {
                tasks: 8,
                records_per_task: 2_500_000,
                record_bytes: 56
            }
        );
    }

    #[test]
    fn sizes_accept_byte_strings() {
        let s = Scenario::parse(
            "[[stages]]\nkind = \"cache\"\npartition_bytes = \"40m\"\n",
            "t",
            None,
        )
        .unwrap();
        assert!(
            matches!(s.stages[0], StageSpec::Cache { partition_bytes, .. } if partition_bytes == 40 << 20)
        );
    }

    #[test]
    fn unknown_keys_and_kinds_are_named() {
        let err = Scenario::parse("[[stages]]\nkind = \"sort\"\nrecords = 5\n", "t", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key 'records'") && err.contains("records_per_task"),
            "{err}"
        );
        let err = Scenario::parse("[[stages]]\nkind = \"shuffle\"\n", "t", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown stage kind 'shuffle'"), "{err}");
        let err = Scenario::parse("nmae = \"x\"\n[[stages]]\nkind = \"sort\"\n", "t", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scenario key 'nmae'"), "{err}");
        let err = Scenario::parse(
            "[[stages]]\nkind = \"cache\"\nstorage_level = \"MEMORY\"\n",
            "t",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Invalid StorageLevel: MEMORY"), "{err}");
        let err = Scenario::parse("[[stages]]\nkind = \"scan\"\nrdd = 3\n", "t", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no earlier cache stage"), "{err}");
        let err = Scenario::parse(
            "[[stages]]\nkind = \"sort\"\nrecord_bytes = \"4x\"\n",
            "t",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("record_bytes") && err.contains("Invalid suffix"),
            "{err}"
        );
        let err = Scenario::load("no-such-scenario").unwrap_err().to_string();
        assert!(err.contains("cache-then-sort"), "{err}");
    }
}
