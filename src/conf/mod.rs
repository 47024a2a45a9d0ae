//! Configuration as Spark reads it: `SparkConf`, its sources, byte strings and typed getters.
//!
//! Sources, lowest precedence first, as with spark-submit and an application's own `SparkConf`:
//! a `--properties-file` (spark-defaults.conf syntax), a scenario file's `[conf]` table, then
//! `--conf KEY=VALUE` flags (so a flag can always override a scenario). Keys that spillway does
//! not read are kept and reported as warnings; keys outside `spark.*` and `spillway.*` are
//! ignored with a warning, as spark-submit ignores non-Spark properties.

pub mod bytes;
mod error;
pub mod keys;
pub mod properties;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use bytes::{ByteStringError, ByteUnit, byte_string_as, format_mib};
pub use error::ConfError;
use keys::Kind;

/// Where a value came from, for messages and the layout's explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfSource {
    /// Set through the library API.
    Api,
    /// A `--properties-file`.
    PropertiesFile(PathBuf),
    /// A scenario file's `[conf]` table.
    Scenario(PathBuf),
    /// A `--conf` flag.
    CommandLine,
}

impl fmt::Display for ConfSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfSource::Api => f.write_str("api"),
            ConfSource::PropertiesFile(p) => write!(f, "properties file {}", p.display()),
            ConfSource::Scenario(p) => write!(f, "scenario {}", p.display()),
            ConfSource::CommandLine => f.write_str("--conf"),
        }
    }
}

/// A Spark configuration: string keys and values, read through Spark's typed parsers.
#[derive(Debug, Clone, Default)]
pub struct SparkConf {
    entries: BTreeMap<String, (String, ConfSource)>,
    ignored: Vec<String>,
}

impl SparkConf {
    /// An empty configuration: every key at Spark's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder form of [`SparkConf::set`].
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.set(key, value);
        self
    }

    /// Sets `key` to `value` (through the API).
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.set_from(key, value, ConfSource::Api)
    }

    /// Sets `key` to `value`, remembering its source. Later calls override earlier ones.
    /// Keys outside `spark.*`/`spillway.*` are ignored with a warning, as spark-submit does.
    /// The value is trimmed as Java's `String.trim` does (every character up to U+0020, not
    /// Unicode spaces such as U+00A0), which every typed reader of Spark applies anyway.
    pub fn set_from(&mut self, key: &str, value: &str, source: ConfSource) -> &mut Self {
        let key = key.trim();
        if key.starts_with("spark.") || key.starts_with("spillway.") {
            let value = value.trim_matches(|c: char| c <= ' ');
            self.entries
                .insert(key.to_string(), (value.to_string(), source));
        } else {
            self.ignored.push(key.to_string());
        }
        self
    }

    /// Applies one `--conf KEY=VALUE` argument.
    pub fn apply_conf_arg(&mut self, arg: &str) -> Result<(), ConfError> {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| ConfError::MissingEquals(arg.to_string()))?;
        self.set_from(key, value, ConfSource::CommandLine);
        Ok(())
    }

    /// Loads a spark-defaults.conf style file as Spark's `Utils.getPropertiesFromFile` does:
    /// Java properties syntax (see [`properties`]) over the file decoded as UTF-8 (a malformed
    /// byte sequence becomes U+FFFD, as Java's `InputStreamReader` makes it), each value
    /// trimmed with [`properties::spark_trim`].
    pub fn load_properties_file(&mut self, path: &Path) -> Result<(), ConfError> {
        let bytes = std::fs::read(path).map_err(|source| ConfError::PropertiesFile {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let pairs = properties::parse(&text).map_err(|error| ConfError::PropertiesSyntax {
            path: path.to_path_buf(),
            error,
        })?;
        for (key, value) in pairs {
            let value = properties::spark_trim(&value);
            self.set_from(&key, value, ConfSource::PropertiesFile(path.to_path_buf()));
        }
        Ok(())
    }

    /// The raw value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(v, _)| v.as_str())
    }

    /// Whether `key` is set (Spark's `conf.contains`).
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Option<&ConfSource> {
        self.entries.get(key).map(|(_, s)| s)
    }

    /// Every set key and value, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// Warnings for keys spillway does not read (Spark ignores them too).
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ignored
            .iter()
            .map(|k| format!("ignoring non-Spark config property: {k}"))
            .collect();
        for key in self.entries.keys() {
            if keys::lookup(key).is_none() {
                let what = if key.starts_with("spillway.") {
                    "unknown spillway key"
                } else {
                    "spillway does not model Spark key"
                };
                out.push(format!("{what} {key}: ignored"));
            }
        }
        for (key, why) in keys::NOT_MODELLED {
            if self.entries.contains_key(*key) {
                out.push(format!(
                    "{key} is accepted but not modelled by spillway: {why}"
                ));
            }
        }
        out
    }

    /// Parses every set key that spillway knows with its Spark type, so that a malformed value
    /// fails before anything runs. Errors name the key and the value.
    pub fn validate_values(&self) -> Result<(), ConfError> {
        for (key, (value, _)) in &self.entries {
            let Some(def) = keys::lookup(key) else {
                continue;
            };
            match def.kind {
                Kind::Bytes(_) => {
                    self.size(key)?;
                }
                Kind::Long => {
                    self.long(key)?;
                }
                Kind::Int => {
                    self.int(key)?;
                }
                Kind::Double => {
                    self.double(key)?;
                }
                Kind::Bool => {
                    self.bool(key)?;
                }
                Kind::TimeMs => {
                    keys::parse_time_ms(value).ok_or_else(|| not_a(key, value, "time"))?;
                }
                Kind::PythonMemory => {
                    self.python_memory_mib(key)?;
                }
                Kind::Str => {}
            }
        }
        Ok(())
    }

    fn raw_or_default(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(str::to_string)
            .or_else(|| keys::lookup(key).and_then(|d| d.default.map(str::to_string)))
    }

    /// The key table's entry for `key`, which must have a default: the typed `get_*` getters
    /// serve keys that always have a value. A key without one is a bug in the caller (the
    /// table test checks every default), not bad input.
    fn table_default(key: &str) -> &'static str {
        keys::lookup(key)
            .and_then(|d| d.default)
            .unwrap_or_else(|| panic!("{key} has no default in the key table"))
    }

    /// A string key's value, else its default from the key table.
    pub fn get_str(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| Self::table_default(key))
    }

    /// A `bytesConf` key with a default, in its own unit, range-checked.
    pub fn get_size(&self, key: &str) -> Result<i64, ConfError> {
        Self::table_default(key);
        Ok(self.size(key)?.expect("a key with a default has a value"))
    }

    /// A `longConf` key with a default, range-checked.
    pub fn get_long(&self, key: &str) -> Result<i64, ConfError> {
        Self::table_default(key);
        Ok(self.long(key)?.expect("a key with a default has a value"))
    }

    /// An `intConf` key with a default, range-checked.
    pub fn get_int(&self, key: &str) -> Result<i32, ConfError> {
        Self::table_default(key);
        Ok(self.int(key)?.expect("a key with a default has a value"))
    }

    /// A `doubleConf` key with a default.
    pub fn get_double(&self, key: &str) -> Result<f64, ConfError> {
        Self::table_default(key);
        Ok(self.double(key)?.expect("a key with a default has a value"))
    }

    /// A `booleanConf` key with a default.
    pub fn get_bool(&self, key: &str) -> Result<bool, ConfError> {
        Self::table_default(key);
        Ok(self.bool(key)?.expect("a key with a default has a value"))
    }

    /// `spark.python.worker.memory`-style key with a default, in MiB.
    pub fn get_python_memory_mib(&self, key: &str) -> Result<i64, ConfError> {
        Self::table_default(key);
        Ok(self
            .python_memory_mib(key)?
            .expect("a key with a default has a value"))
    }

    /// Checks a number read for `key` against the key table's limits.
    fn in_limits(key: &str, value: &str, v: i64) -> Result<(), ConfError> {
        let limits = keys::lookup(key).map_or(keys::ANY, |d| d.limits);
        if limits.contains(v) {
            return Ok(());
        }
        Err(ConfError::OutOfRange {
            key: key.to_string(),
            value: value.to_string(),
            min: limits.min,
            max: limits.max,
            message: limits.message,
        })
    }

    /// A `bytesConf` key in its own unit (MiB for `spark.executor.memory`, bytes for
    /// `spark.memory.offHeap.size`, KiB for `spark.shuffle.file.buffer`), or its default.
    pub fn size(&self, key: &str) -> Result<Option<i64>, ConfError> {
        let unit = match keys::lookup(key).map(|d| d.kind) {
            Some(Kind::Bytes(unit)) => unit,
            _ => ByteUnit::Byte,
        };
        let v = self.size_as(key, unit)?;
        if let (Some(v), Some(raw)) = (v, self.raw_or_default(key)) {
            Self::in_limits(key, &raw, v)?;
        }
        Ok(v)
    }

    /// A byte-string key read in `unit` (Spark's `getSizeAsBytes` is `unit = Byte`).
    pub fn size_as(&self, key: &str, unit: ByteUnit) -> Result<Option<i64>, ConfError> {
        let Some(value) = self.raw_or_default(key) else {
            return Ok(None);
        };
        byte_string_as(&value, unit)
            .map(Some)
            .map_err(|source| ConfError::ByteString {
                key: key.to_string(),
                value,
                source,
            })
    }

    /// A `longConf` key, or its default, range-checked.
    pub fn long(&self, key: &str) -> Result<Option<i64>, ConfError> {
        let v = self.typed(key, "long", keys::parse_java_long)?;
        if let (Some(v), Some(raw)) = (v, self.raw_or_default(key)) {
            Self::in_limits(key, &raw, v)?;
        }
        Ok(v)
    }

    /// An `intConf` key, or its default, range-checked.
    pub fn int(&self, key: &str) -> Result<Option<i32>, ConfError> {
        let v = self.typed(key, "int", keys::parse_java_int)?;
        if let (Some(v), Some(raw)) = (v, self.raw_or_default(key)) {
            Self::in_limits(key, &raw, i64::from(v))?;
        }
        Ok(v)
    }

    /// A `doubleConf` key, or its default.
    pub fn double(&self, key: &str) -> Result<Option<f64>, ConfError> {
        self.typed(key, "double", keys::parse_java_double)
    }

    /// A `booleanConf` key, or its default.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfError> {
        self.typed(key, "boolean", keys::parse_java_bool)
    }

    /// `spark.python.worker.memory` in MiB, as PySpark parses it.
    pub fn python_memory_mib(&self, key: &str) -> Result<Option<i64>, ConfError> {
        self.typed(
            key,
            "a size with a k/m/g/t suffix",
            keys::parse_python_memory_mib,
        )
    }

    fn typed<T>(
        &self,
        key: &str,
        kind: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfError> {
        let Some(value) = self.raw_or_default(key) else {
            return Ok(None);
        };
        parse(&value)
            .map(Some)
            .ok_or_else(|| not_a(key, &value, kind))
    }
}

fn not_a(key: &str, value: &str, kind: &'static str) -> ConfError {
    ConfError::NotA {
        key: key.to_string(),
        value: value.to_string(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spark-defaults.conf");
        std::fs::write(
            &path,
            "# defaults\nspark.executor.memory   2g\nspark.memory.fraction=0.5\n",
        )
        .unwrap();
        let mut conf = SparkConf::new();
        conf.load_properties_file(&path).unwrap();
        assert_eq!(conf.get("spark.executor.memory"), Some("2g"));
        conf.apply_conf_arg("spark.executor.memory=4g").unwrap();
        assert_eq!(conf.get("spark.executor.memory"), Some("4g"));
        assert_eq!(
            conf.source("spark.executor.memory"),
            Some(&ConfSource::CommandLine)
        );
        assert_eq!(conf.double("spark.memory.fraction").unwrap(), Some(0.5));
    }

    #[test]
    fn defaults_come_from_the_key_table() {
        let conf = SparkConf::new();
        assert_eq!(conf.size("spark.executor.memory").unwrap(), Some(1024));
        assert_eq!(conf.size("spark.shuffle.file.buffer").unwrap(), Some(32));
        assert_eq!(
            conf.size("spark.shuffle.spill.initialMemoryThreshold")
                .unwrap(),
            Some(5 << 20)
        );
        assert_eq!(conf.size("spark.executor.memoryOverhead").unwrap(), None);
        assert_eq!(conf.double("spark.memory.fraction").unwrap(), Some(0.6));
        assert_eq!(conf.int("spark.executor.cores").unwrap(), Some(1));
    }

    #[test]
    fn each_size_key_reads_bare_numbers_in_its_own_unit() {
        let conf = SparkConf::new()
            .with("spark.executor.memory", "4096")
            .with("spark.executor.memoryOverhead", "500")
            .with("spark.executor.pyspark.memory", "256")
            .with("spark.memory.offHeap.size", "1048576")
            .with("spark.shuffle.file.buffer", "64");
        assert_eq!(conf.size("spark.executor.memory").unwrap(), Some(4096));
        assert_eq!(
            conf.size_as("spark.executor.memory", ByteUnit::Byte)
                .unwrap(),
            Some(4096)
        );
        assert_eq!(
            conf.size("spark.executor.memoryOverhead").unwrap(),
            Some(500)
        );
        assert_eq!(
            conf.size("spark.executor.pyspark.memory").unwrap(),
            Some(256)
        );
        assert_eq!(
            conf.size("spark.memory.offHeap.size").unwrap(),
            Some(1 << 20)
        );
        assert_eq!(conf.size("spark.shuffle.file.buffer").unwrap(), Some(64));
    }

    #[test]
    fn malformed_values_name_key_and_value() {
        let conf = SparkConf::new().with("spark.executor.memory", "4x");
        let err = conf.validate_values().unwrap_err().to_string();
        assert!(err.contains("spark.executor.memory"), "{err}");
        assert!(err.contains("'4x'"), "{err}");
        assert!(err.contains("Invalid suffix"), "{err}");

        let conf = SparkConf::new().with("spark.memory.fraction", "most");
        let err = conf.validate_values().unwrap_err().to_string();
        assert_eq!(err, "spark.memory.fraction should be double, but was most");

        let conf = SparkConf::new().with("spark.executor.cores", "two");
        let err = conf.validate_values().unwrap_err().to_string();
        assert_eq!(err, "spark.executor.cores should be int, but was two");

        let conf = SparkConf::new().with("spark.memory.offHeap.enabled", "yes");
        let err = conf.validate_values().unwrap_err().to_string();
        assert_eq!(
            err,
            "spark.memory.offHeap.enabled should be boolean, but was yes"
        );

        let conf = SparkConf::new().with("spark.testing.memory", "1g");
        let err = conf.validate_values().unwrap_err().to_string();
        assert_eq!(err, "spark.testing.memory should be long, but was 1g");
    }

    #[test]
    fn every_table_default_parses_within_its_limits() {
        let conf = SparkConf::new();
        for def in keys::KEYS {
            let Some(default) = def.default else {
                continue;
            };
            let checked = match def.kind {
                Kind::Bytes(_) => conf.get_size(def.key).map(|_| ()),
                Kind::Long => conf.get_long(def.key).map(|_| ()),
                Kind::Int => conf.get_int(def.key).map(|_| ()),
                Kind::Double => conf.get_double(def.key).map(|_| ()),
                Kind::Bool => conf.get_bool(def.key).map(|_| ()),
                Kind::PythonMemory => conf.get_python_memory_mib(def.key).map(|_| ()),
                Kind::TimeMs | Kind::Str => Ok(()),
            };
            assert!(checked.is_ok(), "{} = {default}: {checked:?}", def.key);
            assert!(def.limits.min <= def.limits.max, "{}", def.key);
        }
        assert!(conf.validate_values().is_ok());
        assert!(conf.warnings().is_empty());
    }

    #[test]
    fn out_of_range_values_name_key_and_value() {
        // Past an int: Spark's own text (intConf).
        let conf = SparkConf::new().with("spark.executor.cores", "4294967296");
        let err = conf.validate_values().unwrap_err().to_string();
        assert_eq!(
            err,
            "spark.executor.cores should be int, but was 4294967296"
        );
        for (key, value) in [
            ("spark.task.cpus", "0"),
            ("spark.task.cpus", "-1"),
            ("spark.executor.cores", "0"),
            ("spark.shuffle.file.buffer", "0"),
            ("spark.shuffle.file.buffer", "2097152k"),
            ("spark.storage.unrollMemoryCheckPeriod", "0"),
            ("spark.storage.unrollMemoryThreshold", "-5"),
            ("spark.testing.memory", "-1"),
            ("spark.testing.reservedMemory", "-1"),
            ("spillway.timeline.intervalMs", "9"),
            ("spillway.timeline.intervalMs", "1001"),
        ] {
            let conf = SparkConf::new().with(key, value);
            let err = conf.validate_values().unwrap_err();
            assert!(
                matches!(&err, ConfError::OutOfRange { key: k, value: v, .. } if k == key && v == value),
                "{key}={value}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("'{value}' in {key} is invalid.")),
                "{text}"
            );
        }
        // The bounds themselves are accepted.
        for (key, value) in [
            ("spark.task.cpus", "1"),
            ("spark.executor.cores", "2147483647"),
            ("spark.shuffle.file.buffer", "2097151k"),
            ("spillway.timeline.intervalMs", "10"),
            ("spillway.timeline.intervalMs", "1000"),
        ] {
            let conf = SparkConf::new().with(key, value);
            assert!(conf.validate_values().is_ok(), "{key}={value}");
        }
        assert_eq!(
            SparkConf::new()
                .with("spark.executor.cores", "8")
                .get_int("spark.executor.cores")
                .unwrap(),
            8
        );
    }

    #[test]
    fn keys_without_an_effect_are_warnings() {
        let conf = SparkConf::new()
            .with("spark.task.cpus", "2")
            .with(keys::UNMANAGED_POLLING_INTERVAL, "1s")
            .with(keys::SHUFFLE_FILE_MERGE_BUFFER, "64k");
        assert!(conf.validate_values().is_ok());
        let w = conf.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        for key in [
            keys::UNMANAGED_POLLING_INTERVAL,
            keys::SHUFFLE_FILE_MERGE_BUFFER,
        ] {
            assert!(
                w.iter()
                    .any(|w| w.starts_with(key) && w.contains("not modelled")),
                "{key}: {w:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let mut conf = SparkConf::new();
        conf.apply_conf_arg("spark.sql.shuffle.partitions=8")
            .unwrap();
        conf.apply_conf_arg("fs.defaultFS=hdfs://x").unwrap();
        assert!(conf.validate_values().is_ok());
        let warnings = conf.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("spark.sql.shuffle.partitions"))
        );
        assert!(warnings.iter().any(|w| w.contains("fs.defaultFS")));
        assert!(conf.get("fs.defaultFS").is_none());
    }

    #[test]
    fn conf_arg_without_equals_is_refused() {
        let err = SparkConf::new()
            .apply_conf_arg("spark.executor.memory")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Spark config without '=': spark.executor.memory"
        );
        let mut conf = SparkConf::new();
        conf.apply_conf_arg("spark.executor.extraJavaOptions=-Da=b")
            .unwrap();
        assert_eq!(conf.get("spark.executor.extraJavaOptions"), Some("-Da=b"));
    }

    #[test]
    fn missing_properties_file_names_the_path() {
        let err = SparkConf::new()
            .load_properties_file(Path::new("/nonexistent/spark-defaults.conf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/spark-defaults.conf"), "{err}");
    }
}
