//! spillway: Apache Spark's executor memory model, reproduced with real memory.
//!
//! | Spark concept | module | type |
//! |---|---|---|
//! | `SparkConf`, `JavaUtils.byteStringAs` | [`conf`] | [`conf::SparkConf`], [`conf::ByteUnit`] |
//! | `UnifiedMemoryManager.getMaxMemory`, `ResourceProfile` | [`layout`] | [`layout::Layout`] |
//! | JVM heap, `HeapMemoryAllocator`, `UnsafeMemoryAllocator` | [`region`] | mappings, ranges, page allocators |
//! | `MemoryPool`, `UnifiedMemoryManager`, `TaskMemoryManager` | [`memory`] | pools and task memory |
//! | the container (YARN NodeManager / kubelet memory limit, exit 137) | [`pressure`], [`cgroup_run`], [`proc_ctl`] | [`pressure::ChildCgroup`], [`cgroup_run::run`], [`cgroup_run::supervise`], [`proc_ctl::confine_child`] |
//! | `PythonWorkerFactory`, `worker.py`, `ExternalMerger`, YARN's pmem check | [`external`] | [`external::WorkerPool`] |
//! | `UnsafeExternalSorter`, `ExternalAppendOnlyMap`, `TaskMetrics` | [`tasks`] | [`tasks::sort::ExternalSorter`], [`tasks::aggregate::SpillableAggregator`], [`tasks::TaskMetrics`] |
//! | `SparkExitCode` (how the process ends; spillway's own numbers) | [`exit`] | [`exit::ExitStatus`], [`exit::Exit`] |

pub mod bench;
pub mod cgroup_run;
pub mod codec;
pub mod conf;
pub mod data;
pub mod executor;
pub mod exit;
pub mod external;
pub mod fsio;
pub mod ids;
pub mod interleave;
pub mod interrupt;
pub mod layout;
pub mod log;
pub mod machine;
pub mod memory;
pub mod metrics;
pub mod oom;
pub mod pressure;
pub mod proc_ctl;
pub mod region;
pub mod run;
pub mod scenario;
pub mod scheduler;
pub mod shuffle;
pub mod spill;
pub mod stage;
pub mod storage;
pub mod sweep;
pub mod tasks;
pub mod timeline;
