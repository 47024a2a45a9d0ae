//! Storage levels (`org.apache.spark.storage.StorageLevel`, docs/spark-model.md §7).

use std::fmt;
use std::str::FromStr;

use crate::memory::MemoryMode;

/// How a block is stored: on disk, in memory, off the heap, deserialized, and how many copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StorageLevel {
    pub use_disk: bool,
    pub use_memory: bool,
    pub use_off_heap: bool,
    pub deserialized: bool,
    pub replication: u8,
}

/// A level Spark would refuse, or a name it does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageLevelError {
    /// `StorageLevel.fromString`: "Invalid StorageLevel: <name>".
    #[error("Invalid StorageLevel: {0}")]
    UnknownName(String),
    /// `require(replication < 40, ...)`.
    #[error(
        "requirement failed: Replication restricted to be less than 40 for calculating hash codes"
    )]
    ReplicationTooHigh,
    /// `require(!deserialized)` for off-heap levels.
    #[error("requirement failed: Off-heap storage level does not support deserialized storage")]
    OffHeapDeserialized,
}

macro_rules! level {
    ($disk:expr, $mem:expr, $off:expr, $deser:expr, $rep:expr) => {
        StorageLevel {
            use_disk: $disk,
            use_memory: $mem,
            use_off_heap: $off,
            deserialized: $deser,
            replication: $rep,
        }
    };
}

impl StorageLevel {
    pub const NONE: StorageLevel = level!(false, false, false, false, 1);
    pub const DISK_ONLY: StorageLevel = level!(true, false, false, false, 1);
    pub const DISK_ONLY_2: StorageLevel = level!(true, false, false, false, 2);
    pub const DISK_ONLY_3: StorageLevel = level!(true, false, false, false, 3);
    pub const MEMORY_ONLY: StorageLevel = level!(false, true, false, true, 1);
    pub const MEMORY_ONLY_2: StorageLevel = level!(false, true, false, true, 2);
    pub const MEMORY_ONLY_SER: StorageLevel = level!(false, true, false, false, 1);
    pub const MEMORY_ONLY_SER_2: StorageLevel = level!(false, true, false, false, 2);
    pub const MEMORY_AND_DISK: StorageLevel = level!(true, true, false, true, 1);
    pub const MEMORY_AND_DISK_2: StorageLevel = level!(true, true, false, true, 2);
    pub const MEMORY_AND_DISK_SER: StorageLevel = level!(true, true, false, false, 1);
    pub const MEMORY_AND_DISK_SER_2: StorageLevel = level!(true, true, false, false, 2);
    pub const OFF_HEAP: StorageLevel = level!(true, true, true, false, 1);

    /// Every named level with its name, in Spark's order.
    pub const NAMED: [(&'static str, StorageLevel); 13] = [
        ("NONE", Self::NONE),
        ("DISK_ONLY", Self::DISK_ONLY),
        ("DISK_ONLY_2", Self::DISK_ONLY_2),
        ("DISK_ONLY_3", Self::DISK_ONLY_3),
        ("MEMORY_ONLY", Self::MEMORY_ONLY),
        ("MEMORY_ONLY_2", Self::MEMORY_ONLY_2),
        ("MEMORY_ONLY_SER", Self::MEMORY_ONLY_SER),
        ("MEMORY_ONLY_SER_2", Self::MEMORY_ONLY_SER_2),
        ("MEMORY_AND_DISK", Self::MEMORY_AND_DISK),
        ("MEMORY_AND_DISK_2", Self::MEMORY_AND_DISK_2),
        ("MEMORY_AND_DISK_SER", Self::MEMORY_AND_DISK_SER),
        ("MEMORY_AND_DISK_SER_2", Self::MEMORY_AND_DISK_SER_2),
        ("OFF_HEAP", Self::OFF_HEAP),
    ];

    /// `StorageLevel.apply(...)` with its requirements checked.
    pub fn new(
        use_disk: bool,
        use_memory: bool,
        use_off_heap: bool,
        deserialized: bool,
        replication: u8,
    ) -> Result<StorageLevel, StorageLevelError> {
        if replication >= 40 {
            return Err(StorageLevelError::ReplicationTooHigh);
        }
        if use_off_heap && deserialized {
            return Err(StorageLevelError::OffHeapDeserialized);
        }
        Ok(level!(
            use_disk,
            use_memory,
            use_off_heap,
            deserialized,
            replication
        ))
    }

    /// `isValid`: stored somewhere, at least once.
    pub fn is_valid(&self) -> bool {
        (self.use_memory || self.use_disk) && self.replication > 0
    }

    /// `memoryMode`: OFF_HEAP iff the level uses off-heap memory.
    pub fn memory_mode(&self) -> MemoryMode {
        if self.use_off_heap {
            MemoryMode::OffHeap
        } else {
            MemoryMode::OnHeap
        }
    }

    /// `toInt`: disk 8, memory 4, off-heap 2, deserialized 1.
    pub fn to_int(&self) -> u8 {
        (self.use_disk as u8) << 3
            | (self.use_memory as u8) << 2
            | (self.use_off_heap as u8) << 1
            | self.deserialized as u8
    }

    /// Spark's name for a named level.
    pub fn name(&self) -> Option<&'static str> {
        Self::NAMED.iter().find(|(_, l)| l == self).map(|(n, _)| *n)
    }

    /// `description`, as the REST API's `storageLevel` shows it
    /// ("Memory Deserialized 1x Replicated").
    pub fn description(&self) -> String {
        let mut s = String::new();
        if self.use_disk {
            s.push_str("Disk ");
        }
        if self.use_memory {
            s.push_str(if self.use_off_heap {
                "Memory (off heap) "
            } else {
                "Memory "
            });
        }
        s.push_str(if self.deserialized {
            "Deserialized "
        } else {
            "Serialized "
        });
        s.push_str(&format!("{}x Replicated", self.replication));
        s
    }
}

impl FromStr for StorageLevel {
    type Err = StorageLevelError;

    /// `StorageLevel.fromString`: exact names, as Spark matches them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, l)| *l)
            .ok_or_else(|| StorageLevelError::UnknownName(s.to_string()))
    }
}

impl fmt::Display for StorageLevel {
    /// `toString`: `StorageLevel(disk, memory, offheap, deserialized, replication)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StorageLevel({}, {}, {}, {}, {})",
            self.use_disk, self.use_memory, self.use_off_heap, self.deserialized, self.replication
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_level_parses_with_spark_flags() {
        // (name, disk, memory, offheap, deserialized, replication, toInt)
        let expected = [
            ("NONE", false, false, false, false, 1, 0),
            ("DISK_ONLY", true, false, false, false, 1, 8),
            ("DISK_ONLY_2", true, false, false, false, 2, 8),
            ("DISK_ONLY_3", true, false, false, false, 3, 8),
            ("MEMORY_ONLY", false, true, false, true, 1, 5),
            ("MEMORY_ONLY_2", false, true, false, true, 2, 5),
            ("MEMORY_ONLY_SER", false, true, false, false, 1, 4),
            ("MEMORY_ONLY_SER_2", false, true, false, false, 2, 4),
            ("MEMORY_AND_DISK", true, true, false, true, 1, 13),
            ("MEMORY_AND_DISK_2", true, true, false, true, 2, 13),
            ("MEMORY_AND_DISK_SER", true, true, false, false, 1, 12),
            ("MEMORY_AND_DISK_SER_2", true, true, false, false, 2, 12),
            ("OFF_HEAP", true, true, true, false, 1, 14),
        ];
        for (name, disk, mem, off, deser, rep, int) in expected {
            let l: StorageLevel = name.parse().unwrap();
            assert_eq!(
                (
                    l.use_disk,
                    l.use_memory,
                    l.use_off_heap,
                    l.deserialized,
                    l.replication
                ),
                (disk, mem, off, deser, rep),
                "{name}"
            );
            assert_eq!(l.to_int(), int, "{name}");
            assert_eq!(l.name(), Some(name));
            assert_eq!(l.is_valid(), name != "NONE", "{name}");
        }
    }

    #[test]
    fn modes_descriptions_and_rules() {
        assert_eq!(StorageLevel::OFF_HEAP.memory_mode(), MemoryMode::OffHeap);
        assert_eq!(
            StorageLevel::MEMORY_AND_DISK.memory_mode(),
            MemoryMode::OnHeap
        );
        assert_eq!(
            StorageLevel::MEMORY_ONLY.description(),
            "Memory Deserialized 1x Replicated"
        );
        assert_eq!(
            StorageLevel::OFF_HEAP.description(),
            "Disk Memory (off heap) Serialized 1x Replicated"
        );
        assert_eq!(
            StorageLevel::MEMORY_AND_DISK_SER_2.to_string(),
            "StorageLevel(true, true, false, false, 2)"
        );
        assert_eq!(
            "memory_only"
                .parse::<StorageLevel>()
                .unwrap_err()
                .to_string(),
            "Invalid StorageLevel: memory_only"
        );
        assert_eq!(
            StorageLevel::new(true, true, true, true, 1).unwrap_err(),
            StorageLevelError::OffHeapDeserialized
        );
        assert_eq!(
            StorageLevel::new(true, false, false, false, 40).unwrap_err(),
            StorageLevelError::ReplicationTooHigh
        );
        assert!(
            !StorageLevel::new(true, true, false, false, 0)
                .unwrap()
                .is_valid()
        );
    }
}
