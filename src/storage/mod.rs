//! Spark's block storage: storage levels, the memory store, the disk store and the block
//! manager over both. Block ids live in the leaf `crate::ids` (the memory manager needs them
//! too) and are re-exported here.

pub mod block_manager;
pub mod disk;
mod level;
pub mod memory_store;
pub mod values;

pub use crate::ids::BlockId;
pub use level::{StorageLevel, StorageLevelError};
