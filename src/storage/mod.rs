//! Spark's block storage: block ids (and, with the caching work, storage levels and stores).

mod block_id;
mod level;

pub use block_id::BlockId;
pub use level::{StorageLevel, StorageLevelError};
