//! spillway: Apache Spark's executor memory model, reproduced with real memory.
//!
//! | Spark concept | module | type |
//! |---|---|---|
//! | `SparkConf`, `JavaUtils.byteStringAs` | [`conf`] | [`conf::SparkConf`], [`conf::ByteUnit`] |
//! | `UnifiedMemoryManager.getMaxMemory`, `ResourceProfile` | [`layout`] | [`layout::Layout`] |
//! | JVM heap, `HeapMemoryAllocator`, `UnsafeMemoryAllocator` | [`region`] | mappings, ranges, page allocators |
//! | `MemoryPool`, `UnifiedMemoryManager`, `TaskMemoryManager` | [`memory`] | pools and task memory |

pub mod bench;
pub mod conf;
pub mod data;
pub mod executor;
pub mod layout;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod pressure;
pub mod region;
pub mod run;
pub mod scenario;
pub mod scheduler;
pub mod spill;
pub mod storage;
pub mod timeline;
