//! The executor's memory layout: pure arithmetic over the configuration, no I/O.
//!
//! Mirrors `UnifiedMemoryManager.getMaxMemory` and the pool sizing of `UnifiedMemoryManager` /
//! `MemoryManager` (docs/spark-model.md §1), the default page size (§5.7) and the container request
//! of `ResourceProfile` (§11), with Spark's integer truncation (`(long) double`), so every number
//! equals what Spark 4.x computes for the same settings.

use serde::Serialize;

use crate::conf::keys::{self, java_double_string};
use crate::conf::{ByteUnit, ConfError, SparkConf, format_mib};

/// `UnifiedMemoryManager.RESERVED_SYSTEM_MEMORY_BYTES`: 300 MiB.
pub const RESERVED_SYSTEM_MEMORY_BYTES: i64 = 300 * 1024 * 1024;
const MIB: i64 = 1 << 20;
/// `Platform.LONG_ARRAY_OFFSET`: the `long[]` header a G1 heap page loses.
const LONG_ARRAY_OFFSET: i64 = 16;

/// Which collector the modelled executor JVM runs; it only changes the default page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gc {
    /// G1, the default collector of the JDK 17+ that Spark 4 requires.
    G1,
    /// Parallel (or Serial): no page header adjustment.
    Parallel,
}

/// Where the system memory `S` came from (docs/spark-model.md §1.2, §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemMemorySource {
    /// `spark.testing.memory`.
    TestingMemory,
    /// Given explicitly (`--system-memory`), standing in for `Runtime.maxMemory`.
    Explicit,
    /// The heap, `spark.executor.memory`, as a G1 JVM's `Runtime.maxMemory` nearly is.
    ExecutorMemory,
}

/// The typed inputs of the layout, read from a [`SparkConf`] with Spark's parsers.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConf {
    /// `spark.executor.memory` in MiB (the `-Xmx` the executor is launched with).
    pub executor_memory_mib: i64,
    /// `spark.executor.memory` re-read with `getSizeAsBytes` when it is set (docs/spark-model.md §1.5).
    pub executor_memory_check_bytes: Option<i64>,
    /// An explicit system memory (`Runtime.maxMemory`) in bytes.
    pub system_memory_override: Option<i64>,
    /// `spark.testing.memory`.
    pub testing_memory: Option<i64>,
    /// `spark.testing.reservedMemory`.
    pub testing_reserved_memory: Option<i64>,
    /// Whether the key `spark.testing` is present.
    pub is_testing: bool,
    pub memory_fraction: f64,
    pub storage_fraction: f64,
    pub off_heap_enabled: bool,
    /// `spark.memory.offHeap.size` in bytes, read even when off-heap is disabled (§1.8).
    pub off_heap_size: i64,
    pub memory_overhead_mib: Option<i64>,
    pub min_memory_overhead_mib: i64,
    pub memory_overhead_factor: f64,
    pub pyspark_memory_mib: Option<i64>,
    /// Whether pyspark memory counts in the container (`spark.yarn.isPython`; by default, when
    /// `spark.executor.pyspark.memory` is set).
    pub is_python_app: bool,
    pub cores: i32,
    /// `spark.task.cpus`: cores each task claims (1 ≤ task_cpus ≤ cores).
    pub task_cpus: i32,
    /// `spark.buffer.pageSize` in bytes.
    pub page_size: Option<i64>,
    pub gc: Gc,
}

impl MemoryConf {
    /// Reads and checks the configuration the way Spark does before it sizes anything:
    /// every value's type, then `SparkConf.validateSettings` (fractions in [0, 1], no `-Xmx` in
    /// the executor's Java options), then the overhead factor and the core count.
    pub fn from_conf(conf: &SparkConf, system_memory: Option<i64>) -> Result<Self, ConfError> {
        conf.validate_values()?;
        for key in [keys::MEMORY_FRACTION, keys::MEMORY_STORAGE_FRACTION] {
            let v = conf.get_double(key)?;
            // Spark's own comparison: NaN passes here (and then sizes a pool of 0).
            #[allow(clippy::manual_range_contains)]
            if v > 1.0 || v < 0.0 {
                return Err(ConfError::FractionOutOfRange {
                    key: key.to_string(),
                    value: java_double_string(v),
                });
            }
        }
        if let Some(opts) = conf.get(keys::EXECUTOR_JAVA_OPTIONS)
            && opts.contains("-Xmx")
        {
            return Err(ConfError::ExecutorMemoryOptions {
                key: keys::EXECUTOR_JAVA_OPTIONS.to_string(),
                value: opts.to_string(),
            });
        }
        let factor = conf.get_double(keys::EXECUTOR_MEMORY_OVERHEAD_FACTOR)?;
        // `checkValue(v => v > 0.0)`: NaN fails too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(factor > 0.0) {
            return Err(ConfError::CheckFailed {
                key: keys::EXECUTOR_MEMORY_OVERHEAD_FACTOR.to_string(),
                value: java_double_string(factor),
                message: "Ensure that memory overhead is a double greater than 0",
            });
        }
        // Positive (Spark's check) by the key table's limits.
        let cores = conf.get_int(keys::EXECUTOR_CORES)?;
        // At least 1 by the key table's limits; at most the executor's cores
        // (`ResourceProfile.validateTaskCpusLargeEnough`, which every master runs).
        let task_cpus = conf.get_int(keys::TASK_CPUS)?;
        if task_cpus > cores {
            return Err(ConfError::TaskCpusAboveCores { task_cpus, cores });
        }
        let executor_memory_check_bytes = if conf.contains(keys::EXECUTOR_MEMORY) {
            conf.size_as(keys::EXECUTOR_MEMORY, ByteUnit::Byte)?
        } else {
            None
        };
        // spark.testing.memory and spark.testing.reservedMemory are non-negative by the key
        // table's limits (checked by validate_values above).
        let gc = match conf.get_str(keys::JVM_GC).to_ascii_lowercase().as_str() {
            "g1" => Gc::G1,
            "parallel" | "serial" => Gc::Parallel,
            other => {
                return Err(ConfError::Unsupported {
                    key: keys::JVM_GC.to_string(),
                    value: other.to_string(),
                    reason: "expected g1 or parallel".into(),
                });
            }
        };
        let pyspark_memory_mib = conf.size(keys::PYSPARK_EXECUTOR_MEMORY)?;
        Ok(MemoryConf {
            executor_memory_mib: conf.get_size(keys::EXECUTOR_MEMORY)?,
            executor_memory_check_bytes,
            system_memory_override: system_memory,
            testing_memory: conf.long(keys::TEST_MEMORY)?,
            testing_reserved_memory: conf.long(keys::TEST_RESERVED_MEMORY)?,
            is_testing: conf.contains(keys::IS_TESTING),
            memory_fraction: conf.get_double(keys::MEMORY_FRACTION)?,
            storage_fraction: conf.get_double(keys::MEMORY_STORAGE_FRACTION)?,
            off_heap_enabled: conf.get_bool(keys::MEMORY_OFFHEAP_ENABLED)?,
            off_heap_size: conf.get_size(keys::MEMORY_OFFHEAP_SIZE)?,
            memory_overhead_mib: conf.size(keys::EXECUTOR_MEMORY_OVERHEAD)?,
            min_memory_overhead_mib: conf.get_size(keys::EXECUTOR_MIN_MEMORY_OVERHEAD)?,
            memory_overhead_factor: factor,
            is_python_app: conf
                .bool(keys::IS_PYTHON_APP)?
                .unwrap_or(pyspark_memory_mib.is_some()),
            pyspark_memory_mib,
            cores,
            task_cpus,
            page_size: conf.size(keys::BUFFER_PAGE_SIZE)?,
            gc,
        })
    }
}

/// What set the memory overhead (docs/spark-model.md §11.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum OverheadRule {
    /// `spark.executor.memoryOverhead` was set.
    Explicit,
    /// `trunc(factor × heap MiB)` was at least the minimum.
    Factor { factor: f64 },
    /// The minimum `spark.executor.minMemoryOverhead` was larger than the factor's share.
    Minimum { factor: f64, factor_mib: i64 },
}

/// Every quantity of an executor's memory, in bytes unless named otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The heap the executor JVM is launched with (`-Xmx`), `spark.executor.memory` MiB.
    pub heap_bytes: i64,
    /// `S`: `Runtime.maxMemory` or `spark.testing.memory`.
    pub system_memory: i64,
    pub system_memory_source: SystemMemorySource,
    /// `R`: reserved memory.
    pub reserved: i64,
    /// `ceil(R × 1.5)`: the smallest system memory Spark accepts.
    pub min_system_memory: i64,
    /// `U = S − R`.
    pub usable: i64,
    /// `U − M`: user memory, never accounted by Spark.
    pub user: i64,
    /// `M = trunc(U × spark.memory.fraction)`: the on-heap unified pool.
    pub unified: i64,
    /// `trunc(M × spark.memory.storageFraction)`: the initial storage pool.
    pub storage_region: i64,
    /// `M − storage_region`: the initial execution pool.
    pub execution_region: i64,
    pub off_heap_enabled: bool,
    /// `O = spark.memory.offHeap.size`, sized even when disabled.
    pub off_heap: i64,
    pub off_heap_storage_region: i64,
    pub off_heap_execution_region: i64,
    pub memory_fraction: f64,
    pub storage_fraction: f64,
    pub heap_mib: i64,
    pub overhead_mib: i64,
    pub overhead_rule: OverheadRule,
    pub off_heap_mib: i64,
    /// `spark.executor.pyspark.memory` as configured (0 when unset).
    pub pyspark_mib: i64,
    /// Whether `pyspark_mib` counts in the container.
    pub pyspark_in_container: bool,
    /// Heap + overhead + off-heap (if enabled) + pyspark (Python apps), in MiB.
    pub container_mib: i64,
    /// The Tungsten page size (`spark.buffer.pageSize` or the default of §5.7).
    pub page_size: i64,
    pub page_size_explicit: bool,
    pub cores: i32,
    /// `spark.task.cpus`.
    pub task_cpus: i32,
    pub gc: Gc,
}

impl Layout {
    /// Tasks that run at once: `spark.executor.cores / spark.task.cpus` (Spark's
    /// `ResourceProfile.maxTasksPerExecutor` when cores limit, as they do here).
    pub fn concurrent_tasks(&self) -> i32 {
        (self.cores / self.task_cpus.max(1)).max(1)
    }

    /// Reads, validates and computes in one step.
    pub fn from_conf(conf: &SparkConf, system_memory: Option<i64>) -> Result<Layout, ConfError> {
        Layout::new(&MemoryConf::from_conf(conf, system_memory)?)
    }

    /// Computes the layout, failing as Spark fails (docs/spark-model.md §12.1–§12.4).
    pub fn new(c: &MemoryConf) -> Result<Layout, ConfError> {
        let heap_bytes = c.executor_memory_mib.saturating_mul(MIB);
        let (system_memory, system_memory_source) =
            match (c.testing_memory, c.system_memory_override) {
                (Some(s), _) => (s, SystemMemorySource::TestingMemory),
                (None, Some(s)) => (s, SystemMemorySource::Explicit),
                (None, None) => (heap_bytes, SystemMemorySource::ExecutorMemory),
            };
        let reserved = c.testing_reserved_memory.unwrap_or(if c.is_testing {
            0
        } else {
            RESERVED_SYSTEM_MEMORY_BYTES
        });
        let min_system_memory = (reserved as f64 * 1.5).ceil() as i64;

        let system_check = || {
            if system_memory < min_system_memory {
                return Err(ConfError::InvalidDriverMemory {
                    system_memory,
                    min_system_memory,
                });
            }
            Ok(())
        };
        let executor_check = || {
            if let Some(executor_memory) = c.executor_memory_check_bytes
                && executor_memory < min_system_memory
            {
                return Err(ConfError::InvalidExecutorMemory {
                    executor_memory,
                    min_system_memory,
                });
            }
            Ok(())
        };
        // Spark checks system memory first, then executor memory. When S *is* the executor's
        // heap, the driver's executor-memory check is what a user meets first, so report that.
        if system_memory_source == SystemMemorySource::ExecutorMemory {
            executor_check()?;
            system_check()?;
        } else {
            system_check()?;
            executor_check()?;
        }

        let usable = system_memory - reserved;
        let unified = (usable as f64 * c.memory_fraction) as i64;
        if !(c.storage_fraction >= 0.0 && c.storage_fraction < 1.0) {
            return Err(ConfError::CheckFailed {
                key: keys::MEMORY_STORAGE_FRACTION.to_string(),
                value: java_double_string(c.storage_fraction),
                message: "Storage fraction must be in [0,1)",
            });
        }
        let storage_region = (unified as f64 * c.storage_fraction) as i64;
        let off_heap = c.off_heap_size;
        if off_heap < 0 {
            return Err(ConfError::CheckFailed {
                key: keys::MEMORY_OFFHEAP_SIZE.to_string(),
                value: off_heap.to_string(),
                message: "The off-heap memory size must not be negative",
            });
        }
        if c.off_heap_enabled && off_heap <= 0 {
            return Err(ConfError::Requirement(
                "spark.memory.offHeap.size must be > 0 when spark.memory.offHeap.enabled == true"
                    .into(),
            ));
        }
        let off_heap_storage_region = (off_heap as f64 * c.storage_fraction) as i64;
        let execution_region = unified - storage_region;
        // `MemoryManager`: require(onHeapExecutionMemory > 0), e.g. spark.memory.fraction=0.
        if execution_region <= 0 {
            return Err(ConfError::Requirement(
                "onHeapExecutionMemory must be > 0".into(),
            ));
        }
        let off_heap_execution_region = off_heap - off_heap_storage_region;

        let (page_size, page_size_explicit) = match c.page_size {
            Some(p) => (p, true),
            None => {
                let tungsten_pool = if c.off_heap_enabled {
                    off_heap_execution_region
                } else {
                    execution_region
                };
                let on_heap_g1 = c.gc == Gc::G1 && !c.off_heap_enabled;
                (default_page_size(tungsten_pool, c.cores, on_heap_g1), false)
            }
        };

        let heap_mib = c.executor_memory_mib;
        let (overhead_mib, overhead_rule) = match c.memory_overhead_mib {
            Some(m) => (m, OverheadRule::Explicit),
            None => {
                // `(overheadFactor * executorMemoryMiB).toInt`, then the 4.0+ minimum.
                let factor_mib = (c.memory_overhead_factor * heap_mib as f64) as i32 as i64;
                if factor_mib >= c.min_memory_overhead_mib {
                    (
                        factor_mib,
                        OverheadRule::Factor {
                            factor: c.memory_overhead_factor,
                        },
                    )
                } else {
                    (
                        c.min_memory_overhead_mib,
                        OverheadRule::Minimum {
                            factor: c.memory_overhead_factor,
                            factor_mib,
                        },
                    )
                }
            }
        };
        let off_heap_mib = if c.off_heap_enabled {
            off_heap / MIB
        } else {
            0
        };
        let pyspark_mib = c.pyspark_memory_mib.unwrap_or(0);
        let pyspark_counted = if c.is_python_app { pyspark_mib } else { 0 };
        // Spark adds these as JVM longs and would wrap; a size or a container request past
        // i64::MAX bytes cannot exist, so refuse it by name rather than overflow.
        let overhead_key = match overhead_rule {
            OverheadRule::Explicit => keys::EXECUTOR_MEMORY_OVERHEAD,
            _ => keys::EXECUTOR_MIN_MEMORY_OVERHEAD,
        };
        for (key, mib) in [
            (keys::EXECUTOR_MEMORY, heap_mib),
            (overhead_key, overhead_mib),
            (keys::PYSPARK_EXECUTOR_MEMORY, pyspark_mib),
        ] {
            if mib.checked_mul(MIB).is_none() {
                return Err(ConfError::Unsupported {
                    key: key.to_string(),
                    value: format!("{mib}m"),
                    reason: format!("more than {} bytes", i64::MAX),
                });
            }
        }
        let container_mib = [overhead_mib, off_heap_mib, pyspark_counted]
            .into_iter()
            .try_fold(heap_mib, i64::checked_add)
            .filter(|mib| mib.checked_mul(MIB).is_some())
            .ok_or_else(|| ConfError::Unsupported {
                key: keys::EXECUTOR_MEMORY.to_string(),
                value: format!("{heap_mib}m"),
                reason: format!(
                    "the container request (heap {heap_mib} MiB + overhead {overhead_mib} MiB + \
                     off-heap {off_heap_mib} MiB + pyspark {pyspark_counted} MiB) exceeds {} bytes",
                    i64::MAX
                ),
            })?;

        let layout = Layout {
            heap_bytes,
            system_memory,
            system_memory_source,
            reserved,
            min_system_memory,
            usable,
            user: usable - unified,
            unified,
            storage_region,
            execution_region,
            off_heap_enabled: c.off_heap_enabled,
            off_heap,
            off_heap_storage_region,
            off_heap_execution_region,
            memory_fraction: c.memory_fraction,
            storage_fraction: c.storage_fraction,
            heap_mib,
            overhead_mib,
            overhead_rule,
            off_heap_mib,
            pyspark_mib,
            pyspark_in_container: c.is_python_app,
            container_mib,
            page_size,
            page_size_explicit,
            cores: c.cores,
            task_cpus: c.task_cpus,
            gc: c.gc,
        };
        debug_assert_eq!(
            layout.reserved + layout.user + layout.storage_region + layout.execution_region,
            layout.system_memory,
            "regions must tile system memory: {layout:?}"
        );
        Ok(layout)
    }

    /// The container request in bytes (YARN / Kubernetes), computed in MiB as Spark does.
    pub fn container_bytes(&self) -> i64 {
        self.container_mib * MIB
    }

    /// The length of the heap mapping: the launched heap, or `S` if that is larger.
    /// Between `S` and the heap lies memory a real JVM keeps for itself (e.g. a survivor space).
    pub fn heap_mapping_bytes(&self) -> i64 {
        self.heap_bytes.max(self.system_memory)
    }

    /// Offsets of the regions inside the heap mapping: reserved, user, unified (storage, then
    /// execution), each `(offset, len)`.
    pub fn heap_ranges(&self) -> HeapRanges {
        let user_offset = self.reserved;
        let unified_offset = user_offset + self.user;
        HeapRanges {
            reserved: (0, self.reserved),
            user: (user_offset, self.user),
            unified: (unified_offset, self.unified),
            jvm_internal: (
                self.system_memory,
                self.heap_mapping_bytes() - self.system_memory,
            ),
        }
    }

    /// The `spillway layout --json` object: exactly the keys of docs/report.md "layout --json".
    pub fn to_json(&self) -> LayoutJson {
        LayoutJson {
            system_memory: self.system_memory,
            reserved: self.reserved,
            usable: self.usable,
            user: self.user,
            unified: self.unified,
            storage_region: self.storage_region,
            execution_region: self.execution_region,
            off_heap_enabled: self.off_heap_enabled,
            off_heap: self.off_heap,
            off_heap_storage_region: self.off_heap_storage_region,
            off_heap_execution_region: self.off_heap_execution_region,
            overhead: self.overhead_mib * MIB,
            pyspark: self.pyspark_mib * MIB,
            container: self.container_bytes(),
            page_size: self.page_size,
            cores: self.cores,
            min_system_memory: self.min_system_memory,
        }
    }

    /// A tree like Flink's start-up memory report: MiB, exact bytes, and the rule behind each.
    pub fn render_tree(&self) -> String {
        let mut rows: Vec<(String, i64, String)> = Vec::new();
        let mut row = |label: &str, bytes: i64, why: String| {
            rows.push((label.to_string(), bytes, why));
        };
        let pct = |f: f64| format!("{}", (f * 1000.0).round() / 10.0);
        let heap_why = match self.system_memory_source {
            SystemMemorySource::ExecutorMemory => "spark.executor.memory (-Xmx)".to_string(),
            SystemMemorySource::TestingMemory => format!(
                "spark.executor.memory (-Xmx); regions use spark.testing.memory = {}",
                self.system_memory
            ),
            SystemMemorySource::Explicit => format!(
                "spark.executor.memory (-Xmx); regions use system memory {} (Runtime.maxMemory)",
                self.system_memory
            ),
        };
        let overhead_why = match self.overhead_rule {
            OverheadRule::Explicit => "spark.executor.memoryOverhead".to_string(),
            OverheadRule::Factor { factor } => format!(
                "max({}% of heap = {} MiB, minimum {} MiB): the factor wins",
                pct(factor),
                self.overhead_mib,
                self.min_overhead_floor()
            ),
            OverheadRule::Minimum { factor, factor_mib } => format!(
                "max({}% of heap = {} MiB, minimum {} MiB): spark.executor.minMemoryOverhead wins",
                pct(factor),
                factor_mib,
                self.overhead_mib
            ),
        };
        let mut container_terms =
            format!("heap {} + overhead {}", self.heap_mib, self.overhead_mib);
        if self.off_heap_enabled {
            container_terms.push_str(&format!(" + off-heap {}", self.off_heap_mib));
        }
        if self.pyspark_in_container && self.pyspark_mib > 0 {
            container_terms.push_str(&format!(" + pyspark {}", self.pyspark_mib));
        }
        row(
            "Container request",
            self.container_bytes(),
            format!("{container_terms} MiB (YARN/Kubernetes)"),
        );
        row("├─ JVM heap", self.heap_bytes, heap_why);
        row(
            "│  ├─ Reserved",
            self.reserved,
            if self.reserved == RESERVED_SYSTEM_MEMORY_BYTES {
                "RESERVED_SYSTEM_MEMORY_BYTES (300 MiB)".to_string()
            } else {
                "spark.testing.reservedMemory, or 0 under spark.testing".to_string()
            },
        );
        row(
            "│  ├─ User memory",
            self.user,
            format!(
                "usable {} MiB - Spark memory (UDF objects; not managed)",
                format_mib(self.usable as u64)
            ),
        );
        let jvm_internal = self.heap_mapping_bytes() - self.system_memory;
        // The unified pool closes the heap branch unless JVM-internal memory follows it.
        let (spark_label, storage_label, execution_label) = if jvm_internal > 0 {
            (
                "│  ├─ Spark memory (unified)",
                "│  │  ├─ Storage region",
                "│  │  └─ Execution region",
            )
        } else {
            (
                "│  └─ Spark memory (unified)",
                "│     ├─ Storage region",
                "│     └─ Execution region",
            )
        };
        row(
            spark_label,
            self.unified,
            format!(
                "trunc(usable {} MiB x spark.memory.fraction {})",
                format_mib(self.usable as u64),
                java_double_string(self.memory_fraction)
            ),
        );
        row(
            storage_label,
            self.storage_region,
            format!(
                "trunc(unified x spark.memory.storageFraction {}); execution cannot evict below it",
                java_double_string(self.storage_fraction)
            ),
        );
        row(
            execution_label,
            self.execution_region,
            "unified - storage region (initial execution pool)".to_string(),
        );
        if jvm_internal > 0 {
            row(
                "│  └─ JVM-internal",
                jvm_internal,
                "heap beyond Runtime.maxMemory (e.g. a survivor space)".to_string(),
            );
        }
        row(
            "├─ Off-heap",
            self.off_heap,
            if self.off_heap_enabled {
                format!(
                    "spark.memory.offHeap.size; storage {} + execution {} bytes",
                    self.off_heap_storage_region, self.off_heap_execution_region
                )
            } else {
                "spark.memory.offHeap.enabled=false (pools still sized from the size)".to_string()
            },
        );
        row("├─ Memory overhead", self.overhead_mib * MIB, overhead_why);
        row(
            "└─ PySpark",
            self.pyspark_mib * MIB,
            match (self.pyspark_mib > 0, self.pyspark_in_container) {
                (false, _) => "spark.executor.pyspark.memory unset: no limit".to_string(),
                (true, true) => format!(
                    "spark.executor.pyspark.memory; RLIMIT_AS {} MiB per worker",
                    self.pyspark_mib / self.cores as i64
                ),
                (true, false) => "set, but not counted: spark.yarn.isPython=false".to_string(),
            },
        );

        let label_w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let mib_w = rows
            .iter()
            .map(|r| format_mib(r.1 as u64).len())
            .max()
            .unwrap_or(0);
        let bytes_w = rows
            .iter()
            .map(|r| r.1.to_string().len())
            .max()
            .unwrap_or(0);
        let mut out = String::from("Executor memory layout (Spark 4.x)\n");
        for (label, bytes, why) in &rows {
            let pad = label_w - label.chars().count();
            out.push_str(&format!(
                "{label}{:pad$}  {:>mib_w$} MiB  {:>bytes_w$} B  {why}\n",
                "",
                format_mib(*bytes as u64),
                bytes,
            ));
        }
        let page_why = if self.page_size_explicit {
            "spark.buffer.pageSize".to_string()
        } else {
            let g1 = if self.gc == Gc::G1 && !self.off_heap_enabled {
                ", minus 16 (G1 long[] header)"
            } else {
                ""
            };
            format!(
                "nextPowerOf2({} execution pool / {} cores / 16) clamped to [1 MiB, 64 MiB]{g1}",
                if self.off_heap_enabled {
                    "off-heap"
                } else {
                    "on-heap"
                },
                self.cores
            )
        };
        out.push_str(&format!(
            "Page size {} B ({page_why}); cores {}; fair share per task between 1/{} and 1/{} of \
             the execution pool; minimum system memory {} B\n",
            self.page_size,
            self.cores,
            2 * i64::from(self.cores),
            self.cores,
            self.min_system_memory
        ));
        out
    }

    fn min_overhead_floor(&self) -> i64 {
        match self.overhead_rule {
            OverheadRule::Minimum { .. } => self.overhead_mib,
            _ => 384,
        }
    }
}

/// `(offset, len)` of each heap region inside the heap mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapRanges {
    pub reserved: (i64, i64),
    pub user: (i64, i64),
    pub unified: (i64, i64),
    pub jvm_internal: (i64, i64),
}

/// The JSON contract of `spillway layout --json` and of `report.json`'s `layout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LayoutJson {
    pub system_memory: i64,
    pub reserved: i64,
    pub usable: i64,
    pub user: i64,
    pub unified: i64,
    pub storage_region: i64,
    pub execution_region: i64,
    pub off_heap_enabled: bool,
    pub off_heap: i64,
    pub off_heap_storage_region: i64,
    pub off_heap_execution_region: i64,
    pub overhead: i64,
    pub pyspark: i64,
    pub container: i64,
    pub page_size: i64,
    pub cores: i32,
    pub min_system_memory: i64,
}

/// `MemoryManager.defaultPageSizeBytes` (docs/spark-model.md §5.7).
pub fn default_page_size(tungsten_execution_pool: i64, cores: i32, on_heap_g1: bool) -> i64 {
    const MIN_PAGE: i64 = 1 << 20;
    const MAX_PAGE: i64 = 64 << 20;
    const SAFETY_FACTOR: i64 = 16;
    let cores = if cores > 0 {
        cores as i64
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
    };
    let size = next_power_of_2(tungsten_execution_pool / cores / SAFETY_FACTOR);
    let chosen = size.clamp(MIN_PAGE, MAX_PAGE);
    if on_heap_g1 {
        chosen - LONG_ARRAY_OFFSET
    } else {
        chosen
    }
}

/// `ByteArrayMethods.nextPowerOf2`: a power of two stays, else the next one up; 0 stays 0.
pub fn next_power_of_2(num: i64) -> i64 {
    if num <= 0 {
        return 0;
    }
    let high_bit = 1i64 << (63 - num.leading_zeros());
    if high_bit == num { num } else { high_bit << 1 }
}

#[cfg(test)]
mod tests;
