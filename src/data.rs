//! Seeded, reproducible record data for tasks and cached partitions.
//!
//! Every record is a pure function of `(seed, stream, index)`, so a partition dropped from
//! memory can be recomputed exactly (Spark recomputes from lineage), and every record read
//! back — from memory, from disk or recomputed — can be checked against what was generated.
//! The first 8 bytes of a record are its key (little-endian `u64`); the rest is filler drawn
//! from the same generator.

/// `splitmix64`: a fast, well-mixed step used to seed and to fill records.
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one stream of records (an RDD partition, a task's input).
pub fn stream_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut s = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(32);
    splitmix64(&mut s)
}

/// What a cached RDD's records are in the JVM (docs/spark-model.md §21.7): it decides their
/// size in a deserialized block and their serialized form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RecordType {
    /// spillway's byte records: a record's size is its length at every storage level, never
    /// serialized or compressed (the model before object sizes; the PySpark replay sizes its
    /// batches to match it).
    #[default]
    Raw,
    /// `Array[Byte]` of the record's bytes.
    Bytes,
    /// `(Long, Long)`: `scala.Tuple2$mcJJ$sp` (two 8-byte longs; 16 bytes of record).
    LongPair,
    /// A Latin-1 `String` of printable ASCII characters, one per byte of the record.
    String,
}

impl RecordType {
    /// The names a scenario uses, in the order of the enum.
    pub const NAMES: &'static [&'static str] = &["raw", "bytes", "long_pair", "string"];

    /// The type named `name`, if any.
    pub fn parse(name: &str) -> Option<RecordType> {
        match name {
            "raw" => Some(RecordType::Raw),
            "bytes" => Some(RecordType::Bytes),
            "long_pair" => Some(RecordType::LongPair),
            "string" => Some(RecordType::String),
            _ => None,
        }
    }

    /// Its scenario name.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::Raw => "raw",
            RecordType::Bytes => "bytes",
            RecordType::LongPair => "long_pair",
            RecordType::String => "string",
        }
    }

    /// The record length the type requires, if it has one (a pair is two longs).
    pub fn fixed_record_bytes(self) -> Option<u64> {
        match self {
            RecordType::LongPair => Some(16),
            _ => None,
        }
    }
}

/// The records of one partition: fixed-size records of `record_bytes`, the last one shorter
/// so that the partition holds exactly `partition_bytes` bytes.
#[derive(Debug, Clone)]
pub struct PartitionData {
    seed: u64,
    record_bytes: u64,
    partition_bytes: u64,
    record_type: RecordType,
    /// The bytes after the key are words of [`WORDS`] (text-like, compressible) rather than
    /// random.
    text: bool,
}

/// The vocabulary of a text payload: records made of these compress as text does (a codec
/// finds the repeated words), unlike random bytes.
pub const WORDS: [&str; 64] = [
    "spark",
    "executor",
    "memory",
    "storage",
    "execution",
    "broadcast",
    "piece",
    "block",
    "shuffle",
    "partition",
    "task",
    "stage",
    "driver",
    "heap",
    "unroll",
    "evict",
    "disk",
    "spill",
    "page",
    "record",
    "value",
    "key",
    "join",
    "table",
    "lookup",
    "country",
    "city",
    "region",
    "product",
    "customer",
    "order",
    "price",
    "amount",
    "date",
    "status",
    "active",
    "pending",
    "closed",
    "north",
    "south",
    "east",
    "west",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "red",
    "green",
    "blue",
    "small",
    "medium",
    "large",
    "first",
    "second",
    "third",
    "last",
    "open",
    "shut",
    "yes",
    "no",
    "true",
    "false",
    "null",
    "none",
];

impl PartitionData {
    /// The data of one stream. `record_bytes` must be at least 8 (the key).
    pub fn new(seed: u64, partition_bytes: u64, record_bytes: u64) -> PartitionData {
        assert!(record_bytes >= 8, "records carry an 8-byte key");
        PartitionData {
            seed,
            record_bytes,
            partition_bytes,
            record_type: RecordType::Raw,
            text: false,
        }
    }

    /// The same keys and lengths, with the bytes after each key made of words of [`WORDS`]
    /// separated by spaces (a compressible, text-like payload: a broadcast lookup table's).
    pub fn with_text_payload(mut self) -> PartitionData {
        self.text = true;
        self
    }

    /// The same records as values of `record_type`: a `long_pair` partition holds whole pairs
    /// (its `partition_bytes` is rounded down to 16-byte records, at least one), a `string`
    /// partition's bytes are printable ASCII.
    pub fn with_record_type(mut self, record_type: RecordType) -> PartitionData {
        if let Some(fixed) = record_type.fixed_record_bytes() {
            self.record_bytes = fixed;
            self.partition_bytes = (self.partition_bytes / fixed).max(1) * fixed;
        }
        self.record_type = record_type;
        self
    }

    /// The records' type.
    pub fn record_type(&self) -> RecordType {
        self.record_type
    }

    /// Bytes in the partition.
    pub fn bytes(&self) -> u64 {
        self.partition_bytes
    }

    /// Bytes of a full record.
    pub fn record_bytes(&self) -> u64 {
        self.record_bytes
    }

    /// Records in the partition (the last may be shorter than `record_bytes`).
    pub fn records(&self) -> u64 {
        self.partition_bytes.div_ceil(self.record_bytes)
    }

    /// Bytes of record `index`.
    pub fn record_len(&self, index: u64) -> usize {
        let start = index * self.record_bytes;
        (self.partition_bytes - start).min(self.record_bytes) as usize
    }

    /// A generator over the records, in order.
    pub fn iter(&self) -> RecordIter {
        RecordIter {
            data: self.clone(),
            index: 0,
            buf: vec![0; self.record_bytes as usize],
        }
    }

    /// Writes record `index` into `out` (which must be `record_len(index)` long).
    pub fn write_record(&self, index: u64, out: &mut [u8]) {
        let mut state = self.seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93);
        let mut words = out.chunks_mut(8);
        for w in &mut words {
            let v = splitmix64(&mut state).to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
        if self.text {
            let mut i = out.len().min(8);
            while i < out.len() {
                let w = WORDS[(splitmix64(&mut state) % WORDS.len() as u64) as usize].as_bytes();
                let n = (out.len() - i).min(w.len());
                out[i..i + n].copy_from_slice(&w[..n]);
                i += n;
                if i < out.len() {
                    out[i] = b' ';
                    i += 1;
                }
            }
        }
        if self.record_type == RecordType::String {
            // Printable ASCII (0x20..=0x7e): a Latin-1 string of one byte per character.
            for b in out.iter_mut() {
                *b = b' ' + *b % 95;
            }
        }
    }
}

/// A stream of records, each borrowed until the next call (no allocation per record).
pub trait RecordSource {
    /// The next record, or `None` at the end.
    fn next_record(&mut self) -> Option<&[u8]>;

    /// Whether the last `None` was a failure (e.g. a damaged block file) rather than the end:
    /// what was read so far is then not the whole stream and must not be kept as if it were.
    fn failed(&self) -> bool {
        false
    }
}

/// Yields each record of a partition from one reused buffer.
pub struct RecordIter {
    data: PartitionData,
    index: u64,
    buf: Vec<u8>,
}

impl RecordSource for RecordIter {
    fn next_record(&mut self) -> Option<&[u8]> {
        if self.index >= self.data.records() {
            return None;
        }
        let len = self.data.record_len(self.index);
        self.data.write_record(self.index, &mut self.buf[..len]);
        self.index += 1;
        Some(&self.buf[..len])
    }
}

/// Spark's `HashPartitioner` for a `Long` key: `nonNegativeMod(java.lang.Long.hashCode(key),
/// partitions)`, where `Long.hashCode` is `(int) (key ^ (key >>> 32))`.
#[inline]
pub fn hash_partition(key: u64, partitions: u32) -> u32 {
    let hash = (key ^ (key >> 32)) as u32 as i32;
    i64::from(hash).rem_euclid(i64::from(partitions)) as u32
}

/// The key of a record: its first 8 bytes, little-endian.
#[inline]
pub fn record_key(record: &[u8]) -> u64 {
    u64::from_le_bytes(record[..8].try_into().expect("records carry an 8-byte key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_exact_and_reproducible() {
        let d = PartitionData::new(7, 1000, 56);
        assert_eq!(d.records(), 18);
        assert_eq!(d.record_len(17), 1000 - 17 * 56);
        let mut total = 0;
        let mut first = Vec::new();
        let mut it = d.iter();
        while let Some(r) = it.next_record() {
            total += r.len();
            first.push(r.to_vec());
        }
        assert_eq!(total, 1000);
        let mut again = Vec::new();
        let mut it = d.iter();
        while let Some(r) = it.next_record() {
            again.push(r.to_vec());
        }
        assert_eq!(first, again);
        let other = PartitionData::new(stream_seed(7, 1, 2), 1000, 56);
        assert_ne!(other.iter().next_record().unwrap(), &first[0][..]);
        assert_ne!(record_key(&first[0]), record_key(&first[1]));
    }

    #[test]
    fn record_types_shape_the_records() {
        let pairs = PartitionData::new(7, 1000, 100).with_record_type(RecordType::LongPair);
        assert_eq!(
            (pairs.record_bytes(), pairs.bytes(), pairs.records()),
            (16, 992, 62)
        );
        let s = PartitionData::new(7, 250, 100).with_record_type(RecordType::String);
        let mut it = s.iter();
        let mut lens = Vec::new();
        while let Some(r) = it.next_record() {
            assert!(r.iter().all(|b| (0x20..=0x7e).contains(b)), "{r:?}");
            lens.push(r.len());
        }
        assert_eq!(lens, [100, 100, 50]);
        for (i, name) in RecordType::NAMES.iter().enumerate() {
            let t = RecordType::parse(name).unwrap();
            assert_eq!((t.name(), t as usize), (*name, i));
        }
        assert_eq!(RecordType::parse("Long"), None);
    }
}
