//! Spark's block storage: block ids (and, with the caching work, storage levels and stores).

mod block_id;
pub mod block_manager;
pub mod disk;
mod level;
pub mod memory_store;

pub use block_id::BlockId;
pub use level::{StorageLevel, StorageLevelError};
