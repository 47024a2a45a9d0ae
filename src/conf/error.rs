//! Configuration errors, with Spark's error classes and texts where Spark has them.

use std::path::PathBuf;

use super::bytes::ByteStringError;

/// Everything that can be wrong with a configuration. Each is bad input: the binary exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// A size key whose value is not a byte string (docs/spark-model.md §12.9).
    #[error("invalid value for {key}: '{value}': {source}")]
    ByteString {
        key: String,
        value: String,
        #[source]
        source: ByteStringError,
    },
    /// `ConfigHelpers.toNumber`/`toBoolean`: "<key> should be <kind>, but was <value>".
    #[error("{key} should be {kind}, but was {value}")]
    NotA {
        key: String,
        value: String,
        kind: &'static str,
    },
    /// `TypedConfigBuilder.checkValue`: "'<v>' in <key> is invalid. <message>".
    #[error("'{value}' in {key} is invalid. {message}")]
    CheckFailed {
        key: String,
        value: String,
        message: &'static str,
    },
    /// A number outside the limits of the key table (`keys::Limits`), in the key's own unit.
    #[error("'{value}' in {key} is invalid. {message} (accepted: {min} to {max})")]
    OutOfRange {
        key: String,
        value: String,
        min: i64,
        max: i64,
        message: &'static str,
    },
    /// `SparkConf.validateSettings` (docs/spark-model.md §12.3).
    #[error("{key} should be between 0 and 1 (was '{value}').")]
    FractionOutOfRange { key: String, value: String },
    /// A Scala `require` that failed (docs/spark-model.md §12.4).
    #[error("requirement failed: {0}")]
    Requirement(String),
    /// INVALID_DRIVER_MEMORY (docs/spark-model.md §12.1).
    #[error(
        "[INVALID_DRIVER_MEMORY] System memory {system_memory} must be at least \
         {min_system_memory}. Please increase heap size using the --driver-memory option or \
         \"spark.driver.memory\" in Spark configuration. SQLSTATE: F0000"
    )]
    InvalidDriverMemory {
        system_memory: i64,
        min_system_memory: i64,
    },
    /// INVALID_EXECUTOR_MEMORY (docs/spark-model.md §12.2). `executor_memory` is `spark.executor.memory` read
    /// with `getSizeAsBytes`, so a bare "4096" is 4096 bytes here.
    #[error(
        "[INVALID_EXECUTOR_MEMORY] Executor memory {executor_memory} must be at least \
         {min_system_memory}. Please increase executor memory using the --executor-memory \
         option or \"spark.executor.memory\" in Spark configuration. SQLSTATE: F0000"
    )]
    InvalidExecutorMemory {
        executor_memory: i64,
        min_system_memory: i64,
    },
    /// INVALID_SPARK_CONFIG.INVALID_EXECUTOR_MEMORY_OPTIONS (docs/spark-model.md §12.5).
    #[error(
        "[INVALID_SPARK_CONFIG.INVALID_EXECUTOR_MEMORY_OPTIONS] {key} is not allowed to specify \
         max heap memory settings (was '{value}'). Use spark.executor.memory instead. \
         SQLSTATE: 42616"
    )]
    ExecutorMemoryOptions { key: String, value: String },
    /// A `--conf` argument without '=' (spark-submit's "Spark config without '='").
    #[error("Spark config without '=': {0}")]
    MissingEquals(String),
    /// A properties file that could not be read.
    #[error("cannot read properties file {path}: {source}")]
    PropertiesFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A properties file that Java's `Properties.load` would refuse (or that holds a string
    /// spillway cannot represent), naming the file and the line.
    #[error("properties file {path}: {error}")]
    PropertiesSyntax {
        path: PathBuf,
        error: super::properties::PropertiesError,
    },
    /// `ResourceProfile.validateTaskCpusLargeEnough`, with the keys named.
    #[error(
        "The number of cores per executor (={cores}) has to be >= the number of cpus per task = \
         {task_cpus}. (spark.executor.cores={cores}, spark.task.cpus={task_cpus})"
    )]
    TaskCpusAboveCores { task_cpus: i32, cores: i32 },
    /// A value spillway cannot honour although Spark would parse it (named with the reason).
    #[error("unsupported value for {key}: '{value}': {reason}")]
    Unsupported {
        key: String,
        value: String,
        reason: String,
    },
}

impl crate::exit::Exit for ConfError {
    /// Every configuration error is bad input (see `ConfError`).
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::BadInput
    }
}
