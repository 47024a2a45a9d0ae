//! Scenario files (docs/report.md "Scenario file") and the built-in scenarios.
//!
//! A scenario is a Spark job in miniature: a `[conf]` table and a list of `[[stages]]`, each of
//! one kind. The kinds, their keys, defaults and limits are defined in [`crate::stage`] (one
//! file per kind); this module reads the top level, hands each stage table to its kind, and
//! checks what spans stages (a scan needs an earlier cache of its RDD). Every key is checked: an
//! unknown key or kind is an error naming it and listing what is accepted, and a value out of
//! its key's range is an error naming the key and the value.
//!
//! Top-level keys: `name`, `description`, `seed` (42), `[conf]`, `[[stages]]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::stage::{COMMON_KEYS, KeyError, KindDef, RddUse, ShuffleUse, Stage, Values};

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
        accepted: String,
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

/// What a stage's tasks are meant to do: succeed, or fail (a reproduced OOM is a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    #[default]
    Success,
    Failure,
}

/// One stage of a scenario: its kind, the keys as resolved (given or default), and the parsed
/// stage the run executes.
#[derive(Debug, Clone)]
pub struct ScenarioStage {
    pub kind: &'static KindDef,
    pub expect: Expect,
    /// Every key of the kind with the value it runs with, as the report shows it.
    pub params: serde_json::Map<String, serde_json::Value>,
    pub stage: Arc<dyn Stage>,
}

impl PartialEq for ScenarioStage {
    fn eq(&self, other: &Self) -> bool {
        self.kind.name == other.kind.name
            && self.expect == other.expect
            && self.params == other.params
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
    pub stages: Vec<ScenarioStage>,
    /// The file it came from (`None` for a built-in).
    pub path: Option<PathBuf>,
}

const TOP_KEYS: &str = "name, description, seed, conf, stages";

/// The built-in scenarios: name, TOML.
pub const BUILTINS: [(&str, &str); 7] = [
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
    ("cache-race", include_str!("scenarios/cache-race.toml")),
    (
        "cache-then-sort",
        include_str!("scenarios/cache-then-sort.toml"),
    ),
    (
        "shuffle-spill",
        include_str!("scenarios/shuffle-spill.toml"),
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
        // A scan or unpersist needs its RDD cached by an earlier stage and not unpersisted
        // since; an RDD still cached is not cached again (its blocks would not be the new
        // stage's).
        let mut cached = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let bad_rdd = |rdd: u32, reason: &str| ScenarioError::BadValue {
                origin: origin.into(),
                index: i,
                key: "rdd".into(),
                value: rdd.to_string(),
                reason: reason.into(),
            };
            match s.stage.rdd() {
                RddUse::Caches(rdd) if cached.contains(&rdd) => {
                    return Err(bad_rdd(
                        rdd,
                        "this RDD is still cached by an earlier stage (unpersist it first)",
                    ));
                }
                RddUse::Caches(rdd) => cached.push(rdd),
                RddUse::Reads(rdd) | RddUse::Removes(rdd) if !cached.contains(&rdd) => {
                    return Err(bad_rdd(
                        rdd,
                        "no earlier cache stage of this RDD (or it was unpersisted since)",
                    ));
                }
                RddUse::Removes(rdd) => cached.retain(|r| *r != rdd),
                _ => {}
            }
        }
        // A shuffle's reduce stage needs its map stage earlier; a shuffle is written once.
        let mut written = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let bad = |id: u32, reason: &str| ScenarioError::BadValue {
                origin: origin.into(),
                index: i,
                key: "shuffle".into(),
                value: id.to_string(),
                reason: reason.into(),
            };
            match s.stage.shuffle() {
                ShuffleUse::Writes(id) if written.contains(&id) => {
                    return Err(bad(id, "an earlier shuffle_map stage writes this shuffle"));
                }
                ShuffleUse::Writes(id) => written.push(id),
                ShuffleUse::Reads(id) if !written.contains(&id) => {
                    return Err(bad(id, "no earlier shuffle_map stage writes this shuffle"));
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

/// Hands one stage table to its kind, after checking that every key is one the kind (or every
/// kind) accepts.
fn parse_stage(
    t: &toml::Table,
    index: usize,
    origin: &str,
) -> Result<ScenarioStage, ScenarioError> {
    let kind = match t.get("kind") {
        Some(toml::Value::String(k)) => crate::stage::kind(k).ok_or_else(|| k.clone()),
        Some(other) => Err(other.to_string()),
        None => {
            return Err(ScenarioError::Invalid {
                origin: origin.into(),
                reason: format!(
                    "stage {index} has no 'kind' (accepted: {})",
                    crate::stage::kind_names()
                ),
            });
        }
    };
    let kind = kind.map_err(|kind| ScenarioError::UnknownKind {
        origin: origin.into(),
        index,
        kind,
        accepted: crate::stage::kind_names(),
    })?;
    for key in t.keys() {
        let known = kind.keys.iter().chain(COMMON_KEYS).any(|k| k.name == key);
        if !known {
            return Err(ScenarioError::UnknownKey {
                origin: origin.into(),
                index,
                kind: kind.name,
                key: key.clone(),
                accepted: kind
                    .keys
                    .iter()
                    .chain(&COMMON_KEYS[1..])
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let bad = |e: KeyError| ScenarioError::BadValue {
        origin: origin.into(),
        index,
        key: e.key,
        value: e.value,
        reason: e.reason,
    };
    let mut values = Values::new(kind, t);
    let expect = match values.choice("expect").map_err(bad)? {
        "failure" => Expect::Failure,
        _ => Expect::Success,
    };
    let stage = (kind.parse)(&mut values).map_err(bad)?;
    let mut params = values.into_resolved();
    // The report shows `expect` beside the kind's own keys.
    params.remove("expect");
    Ok(ScenarioStage {
        kind,
        expect,
        params,
        stage: Arc::from(stage),
    })
}

impl crate::exit::Exit for ScenarioError {
    /// A scenario that cannot be read or parsed is bad input, as a missing properties file is.
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::BadInput
    }
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
            serde_json::Value::Object(s.stages[0].params.clone()),
            serde_json::json!({
                "rdd": 1,
                "name": "rdd_1",
                "partitions": 12,
                "partition_bytes": 41_969_980,
                "record_bytes": 100,
                "storage_level": "MEMORY_ONLY",
                "record_type": "raw",
            })
        );
        assert_eq!(s.stages[0].expect, Expect::Success);
        assert_eq!(
            serde_json::Value::Object(s.stages[1].params.clone()),
            serde_json::json!({
                "tasks": 8,
                "records_per_task": 2_500_000,
                "record_bytes": 56,
            })
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
        assert_eq!(s.stages[0].params["partition_bytes"], 40u64 << 20);
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
        let err = Scenario::parse(
            "[[stages]]\nkind = \"sort\"\ntasks = 4294967296\n",
            "t",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'tasks'") && err.contains("4294967296"),
            "{err}"
        );
        let err = Scenario::parse("[[stages]]\nkind = \"udf\"\nexpect = \"oom\"\n", "t", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'expect'") && err.contains("oom"), "{err}");
        let err = Scenario::parse(
            "[[stages]]\nkind = \"cache\"\n[[stages]]\nkind = \"unpersist\"\n[[stages]]\nkind = \"scan\"\n",
            "t",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stage 2") && err.contains("unpersisted"),
            "{err}"
        );
        let err = Scenario::parse(
            "[[stages]]\nkind = \"cache\"\n[[stages]]\nkind = \"cache\"\npartitions = 2\n",
            "t",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stage 1") && err.contains("still cached"),
            "{err}"
        );
        // Cached again after an unpersist: fine.
        Scenario::parse(
            "[[stages]]\nkind = \"cache\"\n[[stages]]\nkind = \"unpersist\"\n[[stages]]\nkind = \"cache\"\n",
            "t",
            None,
        )
        .unwrap();
        let err = Scenario::load("no-such-scenario").unwrap_err().to_string();
        assert!(err.contains("cache-then-sort"), "{err}");
    }
}
