//! The keys spillway reads, with Spark's types, defaults and units (docs/spark-model.md §10), and
//! the value parsers Spark uses for each type (`ConfigHelpers`, `JavaUtils`, PySpark's
//! `_parse_memory`).

use super::bytes::{ByteStringError, ByteUnit, byte_string_as};

/// How Spark reads a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bytesConf(unit)`: a byte string, bare numbers in `unit`; the value is in `unit`.
    Bytes(ByteUnit),
    /// `longConf`: `java.lang.Long.parseLong` of the trimmed text.
    Long,
    /// `intConf`.
    Int,
    /// `doubleConf`: `java.lang.Double.parseDouble`.
    Double,
    /// `booleanConf`: "true"/"false", any case.
    Bool,
    /// `stringConf`.
    Str,
    /// `timeConf(MILLISECONDS)`: a time string, bare numbers in ms.
    TimeMs,
    /// `spark.python.worker.memory`: parsed by PySpark, a number with a k/m/g/t suffix, MiB.
    PythonMemory,
}

/// One known key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    pub key: &'static str,
    pub kind: Kind,
    /// Spark's default as Spark writes it; `None` when the key is unset by default.
    pub default: Option<&'static str>,
    /// The values spillway accepts for a number-valued key, in the key's own unit.
    pub limits: Limits,
    pub doc: &'static str,
}

/// Inclusive bounds of a number-valued key (an `Int`, `Long` or `Bytes` key, in its own unit),
/// checked wherever the key is read: a value outside them is a `ConfError::OutOfRange` naming
/// the key and the value (exit 2). `message` is Spark's `checkValue` text where Spark checks
/// the key, else why spillway cannot honour the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min: i64,
    pub max: i64,
    pub message: &'static str,
}

/// A positive size that fits a Java `int` (a buffer).
pub const POSITIVE_INT_BYTES: Limits = Limits {
    min: 1,
    max: i32::MAX as i64,
    message: "The size must be positive and fit in an int.",
};

/// No bounds beyond the type's own.
pub const ANY: Limits = Limits {
    min: i64::MIN,
    max: i64::MAX,
    message: "",
};

impl Limits {
    pub fn contains(&self, v: i64) -> bool {
        (self.min..=self.max).contains(&v)
    }
}

pub const EXECUTOR_MEMORY: &str = "spark.executor.memory";
pub const EXECUTOR_MEMORY_OVERHEAD: &str = "spark.executor.memoryOverhead";
pub const EXECUTOR_MIN_MEMORY_OVERHEAD: &str = "spark.executor.minMemoryOverhead";
pub const EXECUTOR_MEMORY_OVERHEAD_FACTOR: &str = "spark.executor.memoryOverheadFactor";
pub const PYSPARK_EXECUTOR_MEMORY: &str = "spark.executor.pyspark.memory";
pub const PYTHON_WORKER_MEMORY: &str = "spark.python.worker.memory";
pub const EXECUTOR_CORES: &str = "spark.executor.cores";
/// `spark.task.cpus`: cores each task claims. Range-checked; spillway's scheduler runs one
/// task per executor core, so another value is a warning.
pub const TASK_CPUS: &str = "spark.task.cpus";
pub const EXECUTOR_JAVA_OPTIONS: &str = "spark.executor.extraJavaOptions";
pub const MEMORY_FRACTION: &str = "spark.memory.fraction";
pub const MEMORY_STORAGE_FRACTION: &str = "spark.memory.storageFraction";
pub const MEMORY_OFFHEAP_ENABLED: &str = "spark.memory.offHeap.enabled";
pub const MEMORY_OFFHEAP_SIZE: &str = "spark.memory.offHeap.size";
pub const UNMANAGED_POLLING_INTERVAL: &str = "spark.memory.unmanagedMemoryPollingInterval";
pub const UNROLL_MEMORY_THRESHOLD: &str = "spark.storage.unrollMemoryThreshold";
pub const UNROLL_MEMORY_CHECK_PERIOD: &str = "spark.storage.unrollMemoryCheckPeriod";
pub const UNROLL_MEMORY_GROWTH_FACTOR: &str = "spark.storage.unrollMemoryGrowthFactor";
pub const SPILL_INITIAL_MEMORY_THRESHOLD: &str = "spark.shuffle.spill.initialMemoryThreshold";
pub const SPILL_FORCE_SPILL_THRESHOLD: &str = "spark.shuffle.spill.numElementsForceSpillThreshold";
pub const SPILL_BATCH_SIZE: &str = "spark.shuffle.spill.batchSize";
pub const SPILL_COMPRESS: &str = "spark.shuffle.spill.compress";
pub const RDD_COMPRESS: &str = "spark.rdd.compress";
pub const BROADCAST_BLOCK_SIZE: &str = "spark.broadcast.blockSize";
pub const BROADCAST_COMPRESS: &str = "spark.broadcast.compress";
pub const SHUFFLE_FILE_BUFFER: &str = "spark.shuffle.file.buffer";
pub const SHUFFLE_COMPRESS: &str = "spark.shuffle.compress";
pub const IO_COMPRESSION_CODEC: &str = "spark.io.compression.codec";
pub const IO_COMPRESSION_LZ4_BLOCK_SIZE: &str = "spark.io.compression.lz4.blockSize";
pub const IO_COMPRESSION_SNAPPY_BLOCK_SIZE: &str = "spark.io.compression.snappy.blockSize";
pub const IO_COMPRESSION_ZSTD_LEVEL: &str = "spark.io.compression.zstd.level";
pub const IO_COMPRESSION_ZSTD_BUFFER_SIZE: &str = "spark.io.compression.zstd.bufferSize";
pub const SERIALIZER: &str = "spark.serializer";
pub const SHUFFLE_BYPASS_MERGE_THRESHOLD: &str = "spark.shuffle.sort.bypassMergeThreshold";
pub const SHUFFLE_SORT_INITIAL_BUFFER_SIZE: &str = "spark.shuffle.sort.initialBufferSize";
pub const SHUFFLE_SPILL_DISK_WRITE_BUFFER_SIZE: &str = "spark.shuffle.spill.diskWriteBufferSize";
pub const SHUFFLE_FILE_MERGE_BUFFER: &str = "spark.shuffle.file.merge.buffer";
pub const SHUFFLE_LOCAL_DISK_OUTPUT_BUFFER: &str = "spark.shuffle.localDisk.file.output.buffer";
pub const SHUFFLE_UNSAFE_FILE_OUTPUT_BUFFER: &str = "spark.shuffle.unsafe.file.output.buffer";
pub const SHUFFLE_CHECKSUM_ENABLED: &str = "spark.shuffle.checksum.enabled";
pub const SHUFFLE_CHECKSUM_ALGORITHM: &str = "spark.shuffle.checksum.algorithm";
pub const REDUCER_MAX_SIZE_IN_FLIGHT: &str = "spark.reducer.maxSizeInFlight";
pub const REDUCER_MAX_REQS_IN_FLIGHT: &str = "spark.reducer.maxReqsInFlight";
pub const REDUCER_MAX_BLOCKS_IN_FLIGHT_PER_ADDRESS: &str =
    "spark.reducer.maxBlocksInFlightPerAddress";
pub const MAX_REMOTE_BLOCK_SIZE_FETCH_TO_MEM: &str = "spark.network.maxRemoteBlockSizeFetchToMem";
pub const BUFFER_PAGE_SIZE: &str = "spark.buffer.pageSize";
pub const LOCAL_DIR: &str = "spark.local.dir";
pub const EXCEPTION_ON_MEMORY_LEAK: &str = "spark.unsafe.exceptionOnMemoryLeak";
pub const IS_PYTHON_APP: &str = "spark.yarn.isPython";
pub const TEST_MEMORY: &str = "spark.testing.memory";
pub const TEST_RESERVED_MEMORY: &str = "spark.testing.reservedMemory";
pub const IS_TESTING: &str = "spark.testing";
/// spillway's own: which collector the modelled JVM runs (G1 shrinks on-heap pages by 16 bytes).
pub const JVM_GC: &str = "spillway.jvm.gc";
/// spillway's own: bytes of freed pages each allocator keeps for syscall-free reuse.
pub const PAGE_POOL_BYTES: &str = "spillway.memory.pagePoolBytes";
/// spillway's own: the timeline's sampling interval in milliseconds (10..=1000).
pub const TIMELINE_INTERVAL_MS: &str = "spillway.timeline.intervalMs";
/// spillway's own: keep freed heap pages resident, as a JVM keeps its heap.
pub const RETAIN_FREED_MEMORY: &str = "spillway.memory.retainFreed";
/// spillway's own: write a file that failed in its local directory into the next one.
pub const LOCAL_DIR_FAILOVER: &str = "spillway.localDir.failover";
/// spillway's own: how a stage's tasks interleave at the memory manager, `free | deterministic`.
pub const SCHEDULE: &str = "spillway.schedule";
/// spillway's own: the seed of a deterministic schedule.
pub const SCHEDULE_SEED: &str = "spillway.schedule.seed";
/// `spark.pyspark.python`: the Python executable of the workers.
pub const PYSPARK_PYTHON: &str = "spark.pyspark.python";
/// spillway's own: the container monitor's policy, `off | warn | kill` (`external`).
pub const CONTAINER_MONITOR: &str = "spillway.container.monitor";

/// Every key spillway knows. Unknown `spark.*` keys are accepted with a warning, as Spark
/// ignores keys it does not read.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        key: EXECUTOR_MEMORY,
        kind: Kind::Bytes(ByteUnit::MiB),
        default: Some("1g"),
        limits: ANY,
        doc: "executor JVM heap (-Xmx); MiB when unit-less",
    },
    KeyDef {
        key: EXECUTOR_MEMORY_OVERHEAD,
        kind: Kind::Bytes(ByteUnit::MiB),
        default: None,
        limits: ANY,
        doc: "non-heap memory per executor; overrides the factor and minimum",
    },
    KeyDef {
        key: EXECUTOR_MIN_MEMORY_OVERHEAD,
        kind: Kind::Bytes(ByteUnit::MiB),
        default: Some("384m"),
        limits: ANY,
        doc: "floor of the factor-based overhead",
    },
    KeyDef {
        key: EXECUTOR_MEMORY_OVERHEAD_FACTOR,
        kind: Kind::Double,
        default: Some("0.1"),
        limits: ANY,
        doc: "overhead as a fraction of the heap",
    },
    KeyDef {
        key: PYSPARK_EXECUTOR_MEMORY,
        kind: Kind::Bytes(ByteUnit::MiB),
        default: None,
        limits: ANY,
        doc: "memory for Python workers (RLIMIT_AS per worker = this / cores)",
    },
    KeyDef {
        key: PYTHON_WORKER_MEMORY,
        kind: Kind::PythonMemory,
        default: Some("512m"),
        limits: ANY,
        doc: "Python worker aggregation spill threshold",
    },
    KeyDef {
        key: EXECUTOR_CORES,
        kind: Kind::Int,
        default: Some("1"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64,
            message: "Executor cores must be a positive number",
        },
        doc: "task threads per executor",
    },
    KeyDef {
        key: TASK_CPUS,
        kind: Kind::Int,
        default: Some("1"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64,
            message: "A task needs at least one core",
        },
        doc: "cores each task claims: cores / task.cpus tasks run at once",
    },
    KeyDef {
        key: EXECUTOR_JAVA_OPTIONS,
        kind: Kind::Str,
        default: None,
        limits: ANY,
        doc: "JVM options; may not set -Xmx",
    },
    KeyDef {
        key: MEMORY_FRACTION,
        kind: Kind::Double,
        default: Some("0.6"),
        limits: ANY,
        doc: "fraction of (heap - 300 MiB) for the unified pool",
    },
    KeyDef {
        key: MEMORY_STORAGE_FRACTION,
        kind: Kind::Double,
        default: Some("0.5"),
        limits: ANY,
        doc: "part of the unified pool execution cannot evict below",
    },
    KeyDef {
        key: MEMORY_OFFHEAP_ENABLED,
        kind: Kind::Bool,
        default: Some("false"),
        limits: ANY,
        doc: "Tungsten pages off the heap",
    },
    KeyDef {
        key: MEMORY_OFFHEAP_SIZE,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("0"),
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "The off-heap memory size must not be negative",
        },
        doc: "off-heap arena; bytes when unit-less",
    },
    KeyDef {
        key: UNMANAGED_POLLING_INTERVAL,
        kind: Kind::TimeMs,
        default: Some("0s"),
        limits: ANY,
        doc: "polling of unmanaged consumers (spillway has none)",
    },
    KeyDef {
        key: UNROLL_MEMORY_THRESHOLD,
        kind: Kind::Long,
        default: Some("1048576"),
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "The initial unroll memory must not be negative",
        },
        doc: "initial unroll memory per block",
    },
    KeyDef {
        key: UNROLL_MEMORY_CHECK_PERIOD,
        kind: Kind::Long,
        default: Some("16"),
        limits: Limits {
            min: 1,
            max: i64::MAX,
            message: "The unroll check period must be at least one element",
        },
        doc: "elements between unroll size checks",
    },
    KeyDef {
        key: UNROLL_MEMORY_GROWTH_FACTOR,
        kind: Kind::Double,
        default: Some("1.5"),
        limits: ANY,
        doc: "unroll memory growth factor",
    },
    KeyDef {
        key: SPILL_INITIAL_MEMORY_THRESHOLD,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("5m"),
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "spillway's spillable collections take their first threshold's bytes from the heap, so it cannot be negative.",
        },
        doc: "a spillable collection's first threshold",
    },
    KeyDef {
        key: SPILL_FORCE_SPILL_THRESHOLD,
        kind: Kind::Int,
        default: Some("2147483647"),
        limits: ANY,
        doc: "records before a forced spill",
    },
    KeyDef {
        key: SPILL_BATCH_SIZE,
        kind: Kind::Long,
        default: Some("10000"),
        limits: ANY,
        doc: "objects per spill batch",
    },
    KeyDef {
        key: RDD_COMPRESS,
        kind: Kind::Bool,
        default: Some("true"),
        limits: ANY,
        doc: "compress serialized RDD blocks (true in Spark 4.3.0)",
    },
    KeyDef {
        key: BROADCAST_BLOCK_SIZE,
        kind: Kind::Bytes(ByteUnit::KiB),
        default: Some("4m"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64 / 1024,
            message: "TorrentBroadcast takes the block size in bytes as an int (`toInt * 1024`): it must be positive and at most 2097151 KiB.",
        },
        doc: "the size of a broadcast's pieces; KiB when unit-less",
    },
    KeyDef {
        key: BROADCAST_COMPRESS,
        kind: Kind::Bool,
        default: Some("true"),
        limits: ANY,
        doc: "compress a broadcast's pieces with spark.io.compression.codec",
    },
    KeyDef {
        key: SPILL_COMPRESS,
        kind: Kind::Bool,
        default: Some("true"),
        limits: ANY,
        doc: "compress spills",
    },
    KeyDef {
        key: SHUFFLE_FILE_BUFFER,
        kind: Kind::Bytes(ByteUnit::KiB),
        default: Some("32k"),
        limits: Limits {
            min: 1,
            max: (i32::MAX as i64 - 15) / 1024,
            message: "The file buffer size must be positive and less than or equal to 2097151.",
        },
        doc: "spill writer buffer; KiB when unit-less",
    },
    KeyDef {
        key: SHUFFLE_COMPRESS,
        kind: Kind::Bool,
        default: Some("true"),
        limits: ANY,
        doc: "compress map outputs and the spills of shuffle writers",
    },
    KeyDef {
        key: IO_COMPRESSION_CODEC,
        kind: Kind::Str,
        default: Some("lz4"),
        limits: ANY,
        doc: "codec of shuffle files and spills: lz4, snappy or zstd (or their class names)",
    },
    KeyDef {
        key: IO_COMPRESSION_LZ4_BLOCK_SIZE,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("32k"),
        limits: POSITIVE_INT_BYTES,
        doc: "lz4 block size (bytes of input compressed at a time)",
    },
    KeyDef {
        key: IO_COMPRESSION_SNAPPY_BLOCK_SIZE,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("32k"),
        limits: POSITIVE_INT_BYTES,
        doc: "snappy block size",
    },
    KeyDef {
        key: IO_COMPRESSION_ZSTD_LEVEL,
        kind: Kind::Int,
        default: Some("1"),
        limits: Limits {
            min: -131_072,
            max: 22,
            message: "zstd accepts levels up to 22",
        },
        doc: "zstd compression level",
    },
    KeyDef {
        key: IO_COMPRESSION_ZSTD_BUFFER_SIZE,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("32k"),
        limits: POSITIVE_INT_BYTES,
        doc: "zstd buffer size (bytes of input compressed at a time)",
    },
    KeyDef {
        key: SERIALIZER,
        kind: Kind::Str,
        default: Some("org.apache.spark.serializer.JavaSerializer"),
        limits: ANY,
        doc: "the serializer class; shuffles of primitive, string and array keys and values use Kryo whatever it says",
    },
    KeyDef {
        key: SHUFFLE_BYPASS_MERGE_THRESHOLD,
        kind: Kind::Int,
        default: Some("200"),
        limits: ANY,
        doc: "at most this many reduce partitions and no map-side combine: the bypass-merge writer",
    },
    KeyDef {
        key: SHUFFLE_SORT_INITIAL_BUFFER_SIZE,
        kind: Kind::Int,
        default: Some("4096"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64,
            message: "The initial buffer size must be positive.",
        },
        doc: "records the serialized-sort writer's first pointer array holds",
    },
    KeyDef {
        key: SHUFFLE_SPILL_DISK_WRITE_BUFFER_SIZE,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("1m"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64 - 15,
            message: "The buffer size must be positive and less than or equal to 2147483632.",
        },
        doc: "the serialized-sort writer's spill buffer",
    },
    KeyDef {
        key: SHUFFLE_FILE_MERGE_BUFFER,
        kind: Kind::Bytes(ByteUnit::KiB),
        default: None,
        limits: Limits {
            min: 1,
            max: (i32::MAX as i64 - 15) / 1024,
            message: "The file buffer size must be positive and less than or equal to 2097151.",
        },
        doc: "input buffer per spill when spills are merged; KiB when unit-less (default: spark.shuffle.file.buffer)",
    },
    KeyDef {
        key: SHUFFLE_LOCAL_DISK_OUTPUT_BUFFER,
        kind: Kind::Bytes(ByteUnit::KiB),
        default: None,
        limits: Limits {
            min: 1,
            max: (i32::MAX as i64 - 15) / 1024,
            message: "The buffer size must be positive and less than or equal to 2097151.",
        },
        doc: "the data file's output buffer; KiB when unit-less (default: spark.shuffle.unsafe.file.output.buffer)",
    },
    KeyDef {
        key: SHUFFLE_UNSAFE_FILE_OUTPUT_BUFFER,
        kind: Kind::Bytes(ByteUnit::KiB),
        default: Some("32k"),
        limits: Limits {
            min: 1,
            max: (i32::MAX as i64 - 15) / 1024,
            message: "The buffer size must be positive and less than or equal to 2097151.",
        },
        doc: "deprecated name of spark.shuffle.localDisk.file.output.buffer",
    },
    KeyDef {
        key: SHUFFLE_CHECKSUM_ENABLED,
        kind: Kind::Bool,
        default: Some("true"),
        limits: ANY,
        doc: "write a checksum of each map output partition (used to diagnose corruption)",
    },
    KeyDef {
        key: SHUFFLE_CHECKSUM_ALGORITHM,
        kind: Kind::Str,
        default: Some("ADLER32"),
        limits: ANY,
        doc: "ADLER32, CRC32 or CRC32C",
    },
    KeyDef {
        key: REDUCER_MAX_SIZE_IN_FLIGHT,
        kind: Kind::Bytes(ByteUnit::MiB),
        default: Some("48m"),
        limits: Limits {
            min: 1,
            max: i64::MAX / (1 << 20),
            message: "maxSizeInFlight must be positive",
        },
        doc: "bytes of remote blocks a reduce task fetches at once; MiB when unit-less",
    },
    KeyDef {
        key: REDUCER_MAX_REQS_IN_FLIGHT,
        kind: Kind::Int,
        default: Some("2147483647"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64,
            message: "must be positive",
        },
        doc: "fetch requests a reduce task has outstanding at once",
    },
    KeyDef {
        key: REDUCER_MAX_BLOCKS_IN_FLIGHT_PER_ADDRESS,
        kind: Kind::Int,
        default: Some("2147483647"),
        limits: Limits {
            min: 1,
            max: i32::MAX as i64,
            message: "must be positive",
        },
        doc: "blocks fetched from one executor at once",
    },
    KeyDef {
        key: MAX_REMOTE_BLOCK_SIZE_FETCH_TO_MEM,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("200m"),
        limits: Limits {
            min: 0,
            max: i32::MAX as i64 - 512,
            message: "maxRemoteBlockSizeFetchToMem cannot be larger than (Int.MaxValue - 512) bytes.",
        },
        doc: "a fetch request larger than this is streamed to a file instead of memory",
    },
    KeyDef {
        key: BUFFER_PAGE_SIZE,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: None,
        limits: ANY,
        doc: "Tungsten page size; default derived from the execution pool and cores",
    },
    KeyDef {
        key: PYSPARK_PYTHON,
        kind: Kind::Str,
        default: None,
        limits: ANY,
        doc: "Python executable of the workers (default: PYSPARK_PYTHON, else python3)",
    },
    KeyDef {
        key: CONTAINER_MONITOR,
        kind: Kind::Str,
        default: Some("warn"),
        limits: ANY,
        doc: "when executor + worker RSS passes the container: off, warn (YARN's log line) or kill (exit -104)",
    },
    KeyDef {
        key: LOCAL_DIR,
        kind: Kind::Str,
        default: None,
        limits: ANY,
        doc: "comma-separated spill and block directories (default: the temp dir)",
    },
    KeyDef {
        key: EXCEPTION_ON_MEMORY_LEAK,
        kind: Kind::Bool,
        default: Some("false"),
        limits: ANY,
        doc: "fail a task that leaks execution memory",
    },
    KeyDef {
        key: IS_PYTHON_APP,
        kind: Kind::Bool,
        default: None,
        limits: ANY,
        doc: "count pyspark memory in the container (default: when it is set)",
    },
    KeyDef {
        key: TEST_MEMORY,
        kind: Kind::Long,
        default: None,
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "a negative memory size cannot be mapped",
        },
        doc: "system memory in bytes (instead of the JVM's max heap)",
    },
    KeyDef {
        key: TEST_RESERVED_MEMORY,
        kind: Kind::Long,
        default: None,
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "a negative memory size cannot be mapped",
        },
        doc: "reserved memory in bytes (default 300 MiB, 0 under spark.testing)",
    },
    KeyDef {
        key: IS_TESTING,
        kind: Kind::Str,
        default: None,
        limits: ANY,
        doc: "when present, reserved memory defaults to 0",
    },
    KeyDef {
        key: JVM_GC,
        kind: Kind::Str,
        default: Some("g1"),
        limits: ANY,
        doc: "g1 (JDK 17+ default) or parallel; G1 pages lose a 16-byte array header",
    },
    KeyDef {
        key: PAGE_POOL_BYTES,
        kind: Kind::Bytes(ByteUnit::Byte),
        default: Some("16m"),
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "The pool of freed pages must not be negative",
        },
        doc: "freed pages each allocator keeps for reuse without a syscall",
    },
    KeyDef {
        key: TIMELINE_INTERVAL_MS,
        kind: Kind::Long,
        default: Some("20"),
        limits: Limits {
            min: 10,
            max: 1000,
            message: "The timeline samples every 10 to 1000 ms",
        },
        doc: "timeline sampling interval, 10..1000 ms",
    },
    KeyDef {
        key: RETAIN_FREED_MEMORY,
        kind: Kind::Bool,
        default: Some("false"),
        limits: ANY,
        doc: "keep freed pages resident as a JVM keeps its heap (default: give them back)",
    },
    KeyDef {
        key: LOCAL_DIR_FAILOVER,
        kind: Kind::Bool,
        default: Some("false"),
        limits: ANY,
        doc: "write a spill or block that failed for its local directory (full, read-only, gone) again in the next one; Spark fails the task",
    },
    KeyDef {
        key: SCHEDULE,
        kind: Kind::Str,
        default: Some("free"),
        limits: ANY,
        doc: "free (tasks meet the memory manager as timing has it) or deterministic (a seeded order)",
    },
    KeyDef {
        key: SCHEDULE_SEED,
        kind: Kind::Long,
        default: Some("0"),
        limits: Limits {
            min: 0,
            max: i64::MAX,
            message: "A schedule seed is a non-negative number.",
        },
        doc: "the seed of the deterministic schedule (spillway run --schedule-seed)",
    },
];

/// The definition of `key`, if spillway reads it.
/// Keys spillway accepts and checks but that change nothing it models, each with the reason;
/// setting one logs a warning (`SparkConf::warnings`). Every other key of [`KEYS`] is read
/// where it has its effect (`tests/conf_keys_read.rs` checks both).
pub const NOT_MODELLED: &[(&str, &str)] = &[
    (
        UNMANAGED_POLLING_INTERVAL,
        "spillway has no unmanaged memory consumers (RocksDB state stores) to poll",
    ),
    (
        SHUFFLE_FILE_MERGE_BUFFER,
        "spillway's spill and shuffle merges read each file through its spill reader's own \
         frame buffer",
    ),
];

pub fn lookup(key: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|d| d.key == key)
}

/// `java.lang.Long.parseLong(s.trim)`.
pub fn parse_java_long(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// `java.lang.Integer.parseInt(s.trim)`.
pub fn parse_java_int(s: &str) -> Option<i32> {
    parse_java_long(s).and_then(|v| i32::try_from(v).ok())
}

/// `java.lang.Double.parseDouble(s.trim)` for decimal input: an optional sign, digits with an
/// optional point and exponent, an optional `d`/`f` suffix, or `NaN` / `Infinity`.
pub fn parse_java_double(s: &str) -> Option<f64> {
    let t = s.trim();
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let negative = t.starts_with('-');
    match unsigned {
        "NaN" => return Some(f64::NAN),
        "Infinity" if negative => return Some(f64::NEG_INFINITY),
        "Infinity" => return Some(f64::INFINITY),
        _ => {}
    }
    let body = t.strip_suffix(['d', 'D', 'f', 'F']).unwrap_or(t);
    let ok_chars = body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    let has_digit = body.bytes().any(|b| b.is_ascii_digit());
    if !ok_chars || !has_digit {
        return None;
    }
    body.parse().ok()
}

/// Scala's `String.toBoolean`: "true" or "false", any case.
pub fn parse_java_bool(s: &str) -> Option<bool> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `JavaUtils.timeStringAs(s, MILLISECONDS)`: digits and an optional suffix
/// (us, ms, s, m/min, h, d); bare numbers are milliseconds; the result truncates to ms.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(end);
    let n: i64 = digits.parse().ok()?;
    let micros_per: i64 = match suffix {
        "" | "ms" => 1_000,
        "us" => 1,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    n.checked_mul(micros_per).map(|us| us / 1_000)
}

/// PySpark's `_parse_memory`: a number (fractions allowed) followed by one of k/m/g/t, any
/// case, in MiB, truncated ("512m" → 512, "1.5g" → 1536, "100k" → 0).
pub fn parse_python_memory_mib(s: &str) -> Option<i64> {
    let last = s.chars().last()?;
    let factor = match last.to_ascii_lowercase() {
        'k' => 1.0 / 1024.0,
        'm' => 1.0,
        'g' => 1024.0,
        't' => (1u64 << 20) as f64,
        _ => return None,
    };
    // Python's float() accepts surrounding spaces, a sign, and "1e3"-style exponents.
    let number = s[..s.len() - last.len_utf8()].trim();
    let ok = !number.is_empty()
        && number
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    let v: f64 = if ok { number.parse().ok()? } else { None? };
    let mib = (v * factor).trunc();
    mib.is_finite().then_some(mib as i64)
}

/// A byte-string value of a `Kind::Bytes` key, in the key's unit.
pub fn parse_size(value: &str, unit: ByteUnit) -> Result<i64, ByteStringError> {
    byte_string_as(value, unit)
}

/// Java's `Double.toString`, as Spark prints doubles in its messages ("1.5", "2.0", "1.0E10").
pub fn java_double_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let a = v.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{v}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_parsable_default() {
        for def in KEYS {
            let Some(d) = def.default else { continue };
            let ok = match def.kind {
                Kind::Bytes(u) => parse_size(d, u).is_ok(),
                Kind::Long => parse_java_long(d).is_some(),
                Kind::Int => parse_java_int(d).is_some(),
                Kind::Double => parse_java_double(d).is_some(),
                Kind::Bool => parse_java_bool(d).is_some(),
                Kind::TimeMs => parse_time_ms(d).is_some(),
                Kind::PythonMemory => parse_python_memory_mib(d).is_some(),
                Kind::Str => true,
            };
            assert!(ok, "{} default {d}", def.key);
        }
    }

    #[test]
    fn java_numbers() {
        assert_eq!(parse_java_long(" 42 "), Some(42));
        assert_eq!(parse_java_long("-7"), Some(-7));
        assert_eq!(parse_java_long("1g"), None);
        assert_eq!(parse_java_long("9223372036854775808"), None);
        assert_eq!(parse_java_int("2147483648"), None);
        assert_eq!(parse_java_double("0.6"), Some(0.6));
        assert_eq!(parse_java_double("6e-1"), Some(0.6));
        assert_eq!(parse_java_double("0.75d"), Some(0.75));
        assert_eq!(parse_java_double(".5"), Some(0.5));
        assert!(parse_java_double("NaN").unwrap().is_nan());
        assert_eq!(parse_java_double("inf"), None);
        assert_eq!(parse_java_double("nan"), None);
        assert_eq!(parse_java_double("half"), None);
        assert_eq!(parse_java_double(""), None);
        assert_eq!(parse_java_bool("TRUE"), Some(true));
        assert_eq!(parse_java_bool("yes"), None);
        assert_eq!(parse_time_ms("0s"), Some(0));
        assert_eq!(parse_time_ms("250"), Some(250));
        assert_eq!(parse_time_ms("2min"), Some(120_000));
        assert_eq!(parse_time_ms("5x"), None);
    }

    #[test]
    fn python_worker_memory_follows_pyspark() {
        assert_eq!(parse_python_memory_mib("512m"), Some(512));
        assert_eq!(parse_python_memory_mib("1.5g"), Some(1536));
        assert_eq!(parse_python_memory_mib("2G"), Some(2048));
        assert_eq!(parse_python_memory_mib("100k"), Some(0));
        assert_eq!(parse_python_memory_mib("1t"), Some(1 << 20));
        assert_eq!(parse_python_memory_mib("512"), None);
        assert_eq!(parse_python_memory_mib("512mb"), None);
        assert_eq!(parse_python_memory_mib("m"), None);
    }

    #[test]
    fn doubles_print_as_java_does() {
        assert_eq!(java_double_string(1.5), "1.5");
        assert_eq!(java_double_string(2.0), "2.0");
        assert_eq!(java_double_string(-0.1), "-0.1");
        assert_eq!(java_double_string(0.0), "0.0");
        assert_eq!(java_double_string(1e10), "1.0E10");
        assert_eq!(java_double_string(1.5e-4), "1.5E-4");
        assert_eq!(java_double_string(f64::INFINITY), "Infinity");
    }
}
