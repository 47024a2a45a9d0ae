//! Spark's block storage: block ids (and, with the caching work, storage levels and stores).

mod block_id;

pub use block_id::BlockId;
