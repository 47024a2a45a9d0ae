//! Stage kinds: each kind is one unit — its keys with defaults and limits, how it parses, what
//! its tasks do and how they verify, its progress label — and [`KINDS`] registers them. The
//! scenario parser, the run loop, the docs table (`docs/report.md`) and the report are driven
//! from these definitions; adding a kind is one new file here plus one line in [`KINDS`].
//!
//! A kind is a [`KindDef`]: a name, a one-line summary, a table of [`Key`]s and a `parse`
//! function that reads them through [`Values`] (which applies the defaults and limits of the
//! table, so no default or limit is written twice) and returns a [`Stage`]. A [`Stage`] sets up
//! its tasks against the run so far ([`RunContext`]) and records what later stages need when its
//! tasks are done.

mod aggregate;
mod broadcast;
mod cache;
mod python;
mod scan;
mod shuffle_map;
mod shuffle_reduce;

mod sort;
mod udf;
mod unpersist;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::conf::{ByteUnit, SparkConf, byte_string_as};
use crate::data::{PartitionData, stream_seed};
use crate::executor::Executor;
use crate::external::WorkerPool;
use crate::ids::BlockId;
use crate::memory::TaskMemoryError;
use crate::region::UserMemoryError;
use crate::scheduler::{TaskContext, TaskRun};
use crate::shuffle::MapOutputs;
use crate::spill::RecordDigest;
use crate::storage::StorageLevel;
use crate::storage::block_manager::{ReadFrom, StorageError};

pub use broadcast::{BroadcastConf, broadcast_data, broadcast_task, piece_block};
pub use cache::cache_task;
pub use scan::scan_task;
pub use udf::udf_task;

/// Every stage kind a scenario may use, in the order the docs list them.
pub static KINDS: &[&KindDef] = &[
    &cache::KIND,
    &scan::KIND,
    &unpersist::KIND,
    &sort::KIND,
    &aggregate::KIND,
    &shuffle_map::KIND,
    &shuffle_reduce::KIND,
    &udf::KIND,
    &broadcast::KIND,
    &python::KIND,
];

/// The kind of this name.
pub fn kind(name: &str) -> Option<&'static KindDef> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// The kinds' names, comma-separated (for error messages).
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Keys every stage accepts besides its kind's own.
pub const COMMON_KEYS: &[Key] = &[
    Key {
        name: "kind",
        ty: KeyType::Choice(&[]),
        default: None,
        doc: "the stage kind (required)",
    },
    Key {
        name: "expect",
        ty: KeyType::Choice(&["success", "failure"]),
        default: Some("success"),
        doc: "`failure` declares that tasks of this stage are meant to fail (a reproduced OOM); the run then exits 0 when they do",
    },
];

/// `tasks`, for the kinds whose task count is a key.
pub const TASKS_KEY: Key = Key {
    name: "tasks",
    ty: KeyType::Int {
        min: 1,
        max: MAX_TASKS,
    },
    default: Some("4"),
    doc: "tasks in the stage",
};

/// `rdd`, for the kinds that read an RDD an earlier `cache` stage cached.
pub const CACHED_RDD_KEY: Key = Key {
    name: "rdd",
    ty: KeyType::Int {
        min: 0,
        max: MAX_TASKS,
    },
    default: Some("1"),
    doc: "the RDD id of an earlier `cache` stage",
};

/// Bytes `tasks` tasks of `records` records of `record_bytes` each generate (saturating).
pub fn generated_bytes(tasks: u32, records: u64, record_bytes: u64) -> u64 {
    u64::from(tasks)
        .saturating_mul(records)
        .saturating_mul(record_bytes)
}

/// One stage kind.
pub struct KindDef {
    pub name: &'static str,
    /// What the stage does, in Spark's terms.
    pub summary: &'static str,
    pub keys: &'static [Key],
    pub parse: fn(&mut Values) -> Result<Box<dyn Stage>, KeyError>,
}

impl fmt::Debug for KindDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// One key of a stage kind.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub ty: KeyType,
    /// The default as a scenario would write it; `None`: required, or derived (see `doc`).
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl Key {
    /// The default as TOML text: integers bare, strings quoted.
    pub fn default_toml(&self) -> Option<String> {
        let d = self.default?;
        let bare = matches!(self.ty, KeyType::Int { .. })
            || (matches!(self.ty, KeyType::Size { .. }) && d.bytes().all(|b| b.is_ascii_digit()));
        Some(if bare {
            d.to_string()
        } else {
            format!("\"{d}\"")
        })
    }
}

/// What a key's value may be.
#[derive(Debug, Clone, Copy)]
pub enum KeyType {
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// Bytes: an integer or a Spark byte string ("40m"), in `min..=max`.
    Size { min: u64, max: u64 },
    /// A `StorageLevel` name.
    Level,
    /// Any string.
    Text,
    /// One of these strings.
    Choice(&'static [&'static str]),
}

impl KeyType {
    fn describe(&self) -> String {
        match *self {
            KeyType::Int { min, max } => format!("integer {min}..={}", bound(max as u64)),
            KeyType::Size { min, max } => format!("size {min}..={}", bound(max)),
            KeyType::Level => "StorageLevel".into(),
            KeyType::Text => "string".into(),
            KeyType::Choice([]) => "string".into(),
            KeyType::Choice(c) => c
                .iter()
                .map(|o| format!("`\"{o}\"`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A limit as the docs print it: the named maxima by name.
fn bound(max: u64) -> String {
    match max {
        m if m == MAX_TASKS as u64 => "2^31−1".into(),
        m if m == MAX_COUNT as u64 => "2^63−1".into(),
        m => m.to_string(),
    }
}

/// The largest count of tasks or partitions a stage may have (Spark's partition index is an
/// `Int`).
pub const MAX_TASKS: i64 = i32::MAX as i64;

/// A TOML integer that fits any count of records or bytes.
pub const MAX_COUNT: i64 = i64::MAX;

/// A bad value of one key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct KeyError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// Reads one stage's keys against its kind's table: defaults and limits come from the table.
pub struct Values<'a> {
    kind: &'static KindDef,
    table: &'a toml::Table,
    resolved: serde_json::Map<String, serde_json::Value>,
}

impl<'a> Values<'a> {
    pub fn new(kind: &'static KindDef, table: &'a toml::Table) -> Self {
        Values {
            kind,
            table,
            resolved: serde_json::Map::new(),
        }
    }

    /// The keys as resolved (given or default), for the report.
    pub fn into_resolved(self) -> serde_json::Map<String, serde_json::Value> {
        self.resolved
    }

    fn key(&self, name: &str) -> &'static Key {
        self.kind
            .keys
            .iter()
            .chain(COMMON_KEYS)
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("kind {} reads an undeclared key {name}", self.kind.name))
    }

    fn bad(key: &Key, value: &toml::Value, reason: impl Into<String>) -> KeyError {
        KeyError {
            key: key.name.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The given value, else the table's default parsed as TOML text of the key's type.
    fn value(&self, key: &'static Key) -> Option<toml::Value> {
        match self.table.get(key.name) {
            Some(v) => Some(v.clone()),
            None => key.default.map(|d| match key.ty {
                KeyType::Int { .. } => {
                    toml::Value::Integer(d.parse().expect("integer defaults parse"))
                }
                _ => toml::Value::String(d.into()),
            }),
        }
    }

    /// An integer key.
    pub fn int(&mut self, name: &str) -> Result<u64, KeyError> {
        let key = self.key(name);
        let KeyType::Int { min, max } = key.ty else {
            panic!("{name} is not an integer key");
        };
        debug_assert!(min >= 0, "integer keys are counts");
        let v = self.value(key).expect("integer keys have defaults");
        let toml::Value::Integer(i) = v else {
            return Err(Self::bad(key, &v, "must be an integer"));
        };
        if i < min || i > max {
            return Err(Self::bad(key, &v, format!("must be in {min}..={max}")));
        }
        self.resolved.insert(name.into(), i.into());
        Ok(i as u64)
    }

    /// An integer key whose limit fits a `u32` (task and partition counts, RDD ids).
    pub fn u32(&mut self, name: &str) -> Result<u32, KeyError> {
        let v = self.int(name)?;
        Ok(u32::try_from(v).expect("the key's limit fits u32"))
    }

    /// A size key: bytes, or a Spark byte string.
    pub fn size(&mut self, name: &str) -> Result<u64, KeyError> {
        let key = self.key(name);
        let KeyType::Size { min, max } = key.ty else {
            panic!("{name} is not a size key");
        };
        let v = self.value(key).expect("size keys have defaults");
        let bytes = match &v {
            toml::Value::Integer(i) if *i >= 0 => *i as u64,
            toml::Value::String(s) => match byte_string_as(s, ByteUnit::Byte) {
                Ok(b) if b >= 0 => b as u64,
                Ok(_) => return Err(Self::bad(key, &v, "must not be negative")),
                Err(e) => return Err(Self::bad(key, &v, e.to_string())),
            },
            _ => {
                return Err(Self::bad(
                    key,
                    &v,
                    "must be a size in bytes or a byte string like \"40m\"",
                ));
            }
        };
        if bytes < min || bytes > max {
            return Err(Self::bad(
                key,
                &v,
                format!("must be {min}..={max} bytes, not {bytes}"),
            ));
        }
        self.resolved.insert(name.into(), bytes.into());
        Ok(bytes)
    }

    /// A storage level key.
    pub fn level(&mut self, name: &str) -> Result<StorageLevel, KeyError> {
        let key = self.key(name);
        let v = self.value(key).expect("level keys have defaults");
        let toml::Value::String(s) = &v else {
            return Err(Self::bad(key, &v, "must be a StorageLevel name"));
        };
        let level: StorageLevel = s.parse().map_err(|e: crate::storage::StorageLevelError| {
            Self::bad(
                key,
                &v,
                format!(
                    "{e} (accepted: {})",
                    StorageLevel::NAMED.map(|(n, _)| n).join(", ")
                ),
            )
        })?;
        self.resolved.insert(name.into(), s.clone().into());
        Ok(level)
    }

    /// A text key; `None` when absent and without a default.
    pub fn text(&mut self, name: &str) -> Result<Option<String>, KeyError> {
        let key = self.key(name);
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => {
                self.resolved.insert(name.into(), s.clone().into());
                Ok(Some(s))
            }
            Some(v) => Err(Self::bad(key, &v, "must be a string")),
        }
    }

    /// Whether the scenario gave the key (rather than its default applying).
    pub fn is_given(&self, name: &str) -> bool {
        self.key(name);
        self.table.contains_key(name)
    }

    /// Records a value the kind derived from others, replacing what was resolved.
    pub fn derived_value(&mut self, name: &str, value: serde_json::Value) {
        self.key(name);
        self.resolved.insert(name.into(), value);
    }

    /// Records a value the kind derived (a text key's computed default).
    pub fn derived(&mut self, name: &str, value: &str) {
        self.key(name);
        self.resolved.insert(name.into(), value.into());
    }

    /// A choice key: one of the listed strings.
    pub fn choice(&mut self, name: &str) -> Result<&'static str, KeyError> {
        let key = self.key(name);
        let KeyType::Choice(options) = key.ty else {
            panic!("{name} is not a choice key");
        };
        let v = self.value(key).expect("choice keys have defaults");
        let found = match &v {
            toml::Value::String(s) => options.iter().find(|o| **o == s.as_str()),
            _ => None,
        };
        let Some(o) = found else {
            return Err(Self::bad(
                key,
                &v,
                format!(
                    "must be {}",
                    options
                        .iter()
                        .map(|o| format!("\"{o}\""))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        };
        self.resolved.insert(name.into(), (*o).into());
        Ok(o)
    }
}

/// Which RDD a stage caches or reads (the scenario checks that a read follows a cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RddUse {
    None,
    Caches(u32),
    Reads(u32),
    /// Reads it one last time: it is no longer cached after the stage (`unpersist`).
    Removes(u32),
}

/// Which shuffle a stage writes or reads (a read needs an earlier write of its shuffle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShuffleUse {
    None,
    Writes(u32),
    Reads(u32),
}

/// A parsed stage of one kind.
pub trait Stage: fmt::Debug + Send + Sync {
    /// The largest record the stage generates, checked against the layout before anything runs.
    fn record_bytes(&self) -> Option<u64> {
        None
    }

    /// The RDD it caches or reads.
    fn rdd(&self) -> RddUse {
        RddUse::None
    }

    /// The shuffle it writes or reads.
    fn shuffle(&self) -> ShuffleUse {
        ShuffleUse::None
    }

    /// Bytes the stage's tasks generate in all (for progress and the long-run notice).
    fn input_bytes(&self, run: &RunContext) -> u64;

    /// A short label for progress lines, e.g. `cache rdd 1 (MEMORY_ONLY)`.
    fn label(&self) -> String;

    /// Sets the stage up against the run so far and returns its tasks.
    fn start<'s>(&'s self, run: &mut RunContext, stage_id: u32) -> Tasks<'s>;

    /// After the tasks: record what later stages need.
    fn finish(&self, run: &mut RunContext, runs: &[StageTaskRun]) {
        let _ = (run, runs);
    }

    /// The numbers only this kind reports, beside every stage's (camelCase keys, flattened into
    /// the stage's report object; documented with the stage report in `docs/report.md`).
    fn report_fields(&self, runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        let _ = runs;
        serde_json::Map::new()
    }
}

/// The body of a stage's tasks.
pub type TaskBody<'s> =
    Box<dyn Fn(&RunContext, &TaskContext) -> Result<TaskOutput, ClassifiedError> + Sync + 's>;

/// A stage's tasks: how many, and what each does.
pub struct Tasks<'s> {
    pub count: u32,
    pub body: TaskBody<'s>,
}

/// One task's end as a stage sees it.
pub type StageTaskRun = TaskRun<TaskOutput, ClassifiedError>;

/// What the stages of a run share: the executor, the workers, the configuration, the seed,
/// the cached RDDs and the map outputs of the shuffles written so far.
pub struct RunContext<'a> {
    pub executor: &'a Executor,
    pub workers: &'a WorkerPool,
    pub conf: &'a SparkConf,
    pub seed: u64,
    pub rdds: BTreeMap<u32, CachedRdd>,
    pub shuffles: BTreeMap<u32, MapOutputs>,
}

/// A task's failure as the report names it: a Spark error class and a message with the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedError {
    pub class: String,
    pub message: String,
}

impl fmt::Display for ClassifiedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl ClassifiedError {
    pub fn new(class: &str, message: impl fmt::Display) -> Self {
        ClassifiedError {
            class: class.into(),
            message: message.to_string(),
        }
    }
}

/// Spark's error class of a task memory failure.
fn memory_error_class(e: &TaskMemoryError) -> &'static str {
    match e {
        TaskMemoryError::UnableToAcquire { .. } => "UNABLE_TO_ACQUIRE_MEMORY",
        TaskMemoryError::SpillFailed { .. } => "SPILL_OUT_OF_MEMORY",
        TaskMemoryError::TooLargePage(_) => "TooLargePageException",
        TaskMemoryError::PageTableFull => "IllegalStateException",
        TaskMemoryError::Leak { .. } => "MEMORY_LEAK",
    }
}

impl From<TaskMemoryError> for ClassifiedError {
    fn from(e: TaskMemoryError) -> Self {
        ClassifiedError::new(memory_error_class(&e), &e)
    }
}

impl From<StorageError> for ClassifiedError {
    fn from(e: StorageError) -> Self {
        let class = match &e {
            StorageError::Spill(_) => "IOException",
            StorageError::Mismatch { .. } => "VERIFICATION_FAILED",
            StorageError::Interrupted(_) => "TaskKilled",
        };
        ClassifiedError::new(class, &e)
    }
}

impl From<crate::interrupt::Interrupted> for ClassifiedError {
    fn from(e: crate::interrupt::Interrupted) -> Self {
        ClassifiedError::new("TaskKilled", e)
    }
}

impl From<UserMemoryError> for ClassifiedError {
    fn from(e: UserMemoryError) -> Self {
        ClassifiedError::new("java.lang.OutOfMemoryError", &e)
    }
}

impl From<crate::tasks::TaskError> for ClassifiedError {
    fn from(e: crate::tasks::TaskError) -> Self {
        use crate::tasks::TaskError as E;
        let class = match &e {
            E::Memory(m) => memory_error_class(m),
            E::Spill(_) | E::TempFile(_) | E::Shuffle(_) => "IOException",
            E::FetchFailed { .. } => "FetchFailedException",
            E::Verification(_) => "VERIFICATION_FAILED",
            E::OutOfHeap(_) => "java.lang.OutOfMemoryError",
            E::InvalidSpec(_) => "INVALID_SPEC",
            E::Interrupted(_) => "TaskKilled",
        };
        ClassifiedError::new(class, &e)
    }
}

impl From<crate::external::ExternalError> for ClassifiedError {
    fn from(e: crate::external::ExternalError) -> Self {
        ClassifiedError::new(e.error_class(), &e)
    }
}

/// What one task did, in the units the report uses.
#[derive(Debug, Clone, Default)]
pub struct TaskOutput {
    pub memory_bytes_spilled: u64,
    pub disk_bytes_spilled: u64,
    pub spill_count: u64,
    pub spill_write_ns: u64,
    pub spill_read_ns: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub digest_in: RecordDigest,
    pub digest_out: RecordDigest,
    pub verified: bool,
    /// Where a scan found its partition.
    pub read_from: Option<ReadFrom>,
    /// User-memory bytes a UDF task held.
    pub user_bytes: u64,
    /// The numbers only this kind reports per task (camelCase keys, flattened into the task's
    /// report object, e.g. a shuffle task's `shuffleWriteBytes`).
    pub kind_fields: serde_json::Map<String, serde_json::Value>,
}

impl From<crate::tasks::TaskMetrics> for TaskOutput {
    fn from(m: crate::tasks::TaskMetrics) -> Self {
        let v = &m.verification;
        TaskOutput {
            memory_bytes_spilled: m.memory_bytes_spilled,
            disk_bytes_spilled: m.disk_bytes_spilled,
            spill_count: m.spill_count,
            spill_write_ns: m.spill_write_ns,
            spill_read_ns: m.spill_read_ns,
            records_in: m.records_in,
            records_out: m.records_out,
            digest_in: RecordDigest {
                records: v.input_records,
                hash_sum: v.input_digest,
            },
            digest_out: RecordDigest {
                records: v.output_records,
                hash_sum: v.output_digest,
            },
            verified: v.ok,
            ..TaskOutput::default()
        }
    }
}

/// An RDD cached by a scenario, kept so that a scan can recompute and verify it.
#[derive(Debug, Clone)]
pub struct CachedRdd {
    pub id: u32,
    pub name: String,
    pub level: StorageLevel,
    pub partitions: u32,
    pub partition_bytes: u64,
    pub record_bytes: u64,
    /// What the records are in the JVM (docs/spark-model.md §21.7).
    pub record_type: crate::data::RecordType,
    pub seed: u64,
    /// The digest of each partition's generated records.
    pub expected: HashMap<u32, RecordDigest>,
}

impl CachedRdd {
    /// The generator of a partition.
    pub fn data(&self, partition: u32) -> PartitionData {
        PartitionData::new(
            stream_seed(self.seed, self.id as u64, partition as u64),
            self.partition_bytes,
            self.record_bytes,
        )
        .with_record_type(self.record_type)
    }

    /// The block of a partition.
    pub fn block(&self, partition: u32) -> BlockId {
        BlockId::Rdd {
            rdd_id: self.id,
            split_index: partition,
        }
    }
}

/// Puts generated data as a block; verified when every generated record went into the put.
fn put_block(
    ctx: &TaskContext,
    block: &BlockId,
    level: StorageLevel,
    data: &PartitionData,
) -> Result<TaskOutput, ClassifiedError> {
    let bm = ctx.executor.block_manager();
    let report = bm.put_partition(block, level, ctx.task_attempt_id, data)?;
    let mut kind_fields = serde_json::Map::new();
    kind_fields.insert("recachedFromDisk".into(), report.recached_from_disk.into());
    kind_fields.insert(
        "valueFormat".into(),
        bm.format_for(data, level).describe().into(),
    );
    Ok(TaskOutput {
        records_in: report.digest.records,
        records_out: report.digest.records,
        digest_in: report.digest,
        digest_out: report.digest,
        verified: report.digest.records == data.records(),
        kind_fields,
        ..TaskOutput::default()
    })
}

/// A stage's count of blocks cached in memory again from disk (docs/spark-model.md §6.6) and
/// how its blocks are held in memory, from its tasks' fields.
fn recache_fields(runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let ok = || runs.iter().filter_map(|r| r.result.as_ref().ok());
    let recached = ok()
        .filter(|o| o.kind_fields.get("recachedFromDisk") == Some(&true.into()))
        .count();
    m.insert("recachedFromDisk".into(), (recached as u64).into());
    if let Some(f) = ok().find_map(|o| o.kind_fields.get("valueFormat")) {
        m.insert("valueFormat".into(), f.clone());
    }
    m
}

/// The markdown table of every kind and its keys (`docs/report.md` holds it between the
/// `stage-kinds` markers; `tests/docs_tables.rs` keeps it current).
pub fn docs_table() -> String {
    let mut out = String::from(
        "| kind | what it does | key | type | default | meaning |\n|---|---|---|---|---|---|\n",
    );
    let row = |out: &mut String, kind: &str, summary: &str, key: &Key| {
        out.push_str(&format!(
            "| {kind} | {summary} | `{}` | {} | {} | {} |\n",
            key.name,
            key.ty.describe(),
            key.default_toml().map_or("—".into(), |d| format!("`{d}`")),
            key.doc
        ));
    };
    for k in KINDS {
        for (i, key) in k.keys.iter().enumerate() {
            if i == 0 {
                row(&mut out, &format!("`{}`", k.name), k.summary, key);
            } else {
                row(&mut out, "", "", key);
            }
        }
    }
    for key in &COMMON_KEYS[1..] {
        row(&mut out, "every kind", "", key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind parses with only its defaults (all but keys that have none), and reads every
    /// key it declares: no key is documented but ignored.
    #[test]
    fn every_kind_reads_every_declared_key() {
        for k in KINDS {
            let table = toml::Table::new();
            let mut v = Values::new(k, &table);
            (k.parse)(&mut v).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            let resolved = v.into_resolved();
            for key in k.keys {
                assert!(
                    resolved.contains_key(key.name),
                    "kind {} declares {} but does not read it",
                    k.name,
                    key.name
                );
            }
        }
    }

    #[test]
    fn kind_names_are_unique_and_keys_do_not_shadow_common_ones() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
            for key in a.keys {
                assert!(
                    COMMON_KEYS.iter().all(|c| c.name != key.name),
                    "{}",
                    key.name
                );
            }
        }
    }

    #[test]
    fn limits_come_from_the_table() {
        let table: toml::Table = "tasks = 4294967296".parse().unwrap();
        let mut v = Values::new(kind("sort").unwrap(), &table);
        let e = (kind("sort").unwrap().parse)(&mut v).unwrap_err();
        assert_eq!(e.key, "tasks");
        assert_eq!(e.value, "4294967296");
    }
}
