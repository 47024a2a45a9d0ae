//! Identifiers several layers share (a leaf: it imports nothing of spillway). Block ids are
//! named as Spark names them (`org.apache.spark.storage.BlockId`); the memory manager meets them
//! when it evicts, the storage layer when it stores.

use std::fmt;

/// A block the block manager can hold. `Display` gives Spark's name (`rdd_1_0`, `broadcast_3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockId {
    /// `RDDBlockId(rddId, splitIndex)`: one cached partition of an RDD.
    Rdd { rdd_id: u32, split_index: u32 },
    /// `BroadcastBlockId(broadcastId)`.
    Broadcast { broadcast_id: u64 },
    /// `BroadcastBlockId(broadcastId, "piece<i>")`: one serialized, compressed piece of a
    /// broadcast's value (`TorrentBroadcast`, docs/spark-model.md §22).
    BroadcastPiece { broadcast_id: u64, piece: u32 },
    /// `TestBlockId(name)`: used by tests and by custom workloads.
    Test(String),
}

impl BlockId {
    /// The RDD this block belongs to, if it is an RDD block (`BlockId.asRDDId`).
    pub fn rdd_id(&self) -> Option<u32> {
        match self {
            BlockId::Rdd { rdd_id, .. } => Some(*rdd_id),
            _ => None,
        }
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockId::Rdd {
                rdd_id,
                split_index,
            } => write!(f, "rdd_{rdd_id}_{split_index}"),
            BlockId::Broadcast { broadcast_id } => write!(f, "broadcast_{broadcast_id}"),
            BlockId::BroadcastPiece {
                broadcast_id,
                piece,
            } => write!(f, "broadcast_{broadcast_id}_piece{piece}"),
            BlockId::Test(name) => write!(f, "test_{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_spark() {
        let b = BlockId::Rdd {
            rdd_id: 1,
            split_index: 0,
        };
        assert_eq!(b.to_string(), "rdd_1_0");
        assert_eq!(b.rdd_id(), Some(1));
        let b = BlockId::Broadcast { broadcast_id: 3 };
        assert_eq!(b.to_string(), "broadcast_3");
        assert_eq!(b.rdd_id(), None);
        let p = BlockId::BroadcastPiece {
            broadcast_id: 3,
            piece: 12,
        };
        assert_eq!(p.to_string(), "broadcast_3_piece12");
        assert_eq!(p.rdd_id(), None);
    }
}
