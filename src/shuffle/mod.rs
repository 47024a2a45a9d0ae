//! Shuffles: map tasks that write their records partitioned by key into one data file and one
//! index file each, and reduce tasks that fetch their partition from every map output
//! (docs/spark-model.md §18–§20).
//!
//! | Spark | here |
//! |---|---|
//! | `SortShuffleManager.registerShuffle` (writer choice) | [`choose_writer`] |
//! | `BypassMergeSortShuffleWriter` | [`writer`] (`WriterKind::BypassMergeSort`) |
//! | `UnsafeShuffleWriter`, `ShuffleExternalSorter` | [`writer`] (`WriterKind::UnsafeShuffle`) |
//! | `SortShuffleWriter` over `ExternalSorter` | [`writer`] (`WriterKind::SortShuffle`) |
//! | `IndexShuffleBlockResolver` (data + index files) | [`format`], [`MapStatus`] |
//! | `MapStatus` (sizes per reduce partition, location) | [`MapStatus`] |
//! | `HashPartitioner`, `RangePartitioner` | [`ShuffleSpec::partition`] |
//! | `ShuffleBlockFetcherIterator` (the reduce side's fetch) | [`fetch::read_partition`] |
//!
//! The records are seeded (`key ‖ value ‖ payload`), so every map output can be checked: each
//! map task takes the digest of the records it generated per reduce partition before they enter
//! the writer ([`MapStatus::expected`]); a reduce task checks what it read against the sum of
//! those digests, so a record lost, duplicated or damaged anywhere between generation and the
//! reduce side — writer, spill, compression, concatenation, fetch — is found.

pub mod fetch;
pub mod format;
pub mod reduce;
pub mod writer;

use std::fmt;
use std::path::PathBuf;

use crate::conf::{ConfError, SparkConf, keys};
use crate::data::{hash_partition, splitmix64, stream_seed};
use crate::spill::RecordDigest;

/// Values are drawn from `0..VALUE_RANGE`: sums of any shuffle fit a `u64`.
pub const VALUE_RANGE: u64 = 1000;
/// Bytes of a map-side-combined record: key, count, sum.
pub const COMBINED_RECORD_BYTES: usize = 24;
/// The smallest record: key and value.
pub const MIN_RECORD_BYTES: u64 = 16;
/// `PackedRecordPointer.MAXIMUM_PARTITION_ID + 1`: the serialized-sort writer's limit.
pub const MAX_SERIALIZED_PARTITIONS: u32 = 1 << 24;

/// What the reduce side does with its partition (and so whether the map side combines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Operation {
    /// `partitionBy(HashPartitioner)` then `count`: records stream through.
    #[serde(rename = "partitionBy")]
    PartitionBy,
    /// `reduceByKey`: map-side combine, then an `ExternalAppendOnlyMap` of combiners.
    #[serde(rename = "reduceByKey")]
    ReduceByKey,
    /// `sortByKey`: a `RangePartitioner`, then an `ExternalSorter` with a key ordering.
    #[serde(rename = "sortByKey")]
    SortByKey,
    /// `groupByKey`: no map-side combine; a key's values are held together.
    #[serde(rename = "groupByKey")]
    GroupByKey,
}

impl Operation {
    pub const NAMES: &'static [&'static str] =
        &["partitionBy", "reduceByKey", "sortByKey", "groupByKey"];

    pub fn parse(name: &str) -> Option<Operation> {
        match name {
            "partitionBy" => Some(Operation::PartitionBy),
            "reduceByKey" => Some(Operation::ReduceByKey),
            "sortByKey" => Some(Operation::SortByKey),
            "groupByKey" => Some(Operation::GroupByKey),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::PartitionBy => "partitionBy",
            Operation::ReduceByKey => "reduceByKey",
            Operation::SortByKey => "sortByKey",
            Operation::GroupByKey => "groupByKey",
        }
    }

    /// `ShuffleDependency.mapSideCombine`: only `reduceByKey` (groupByKey turns it off).
    pub fn map_side_combine(self) -> bool {
        self == Operation::ReduceByKey
    }
}

/// The class of the records' values, which decides the serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueClass {
    /// `Array[Byte]` (with a `Long` key): Spark picks Kryo for it whatever `spark.serializer`
    /// says (`SerializerManager.getSerializer` with class tags of primitives, arrays, strings).
    Bytes,
    /// A user class: the configured `spark.serializer`.
    Object,
}

impl ValueClass {
    pub const NAMES: &'static [&'static str] = &["bytes", "object"];

    pub fn parse(name: &str) -> Option<ValueClass> {
        match name {
            "bytes" => Some(ValueClass::Bytes),
            "object" => Some(ValueClass::Object),
            _ => None,
        }
    }
}

/// The serializer of a shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Serializer {
    #[serde(rename = "JavaSerializer")]
    Java,
    #[serde(rename = "KryoSerializer")]
    Kryo,
}

impl Serializer {
    /// `supportsRelocationOfSerializedObjects`.
    pub fn supports_relocation(self) -> bool {
        self == Serializer::Kryo
    }
}

/// Spark's three map-side writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum WriterKind {
    #[serde(rename = "BypassMergeSortShuffleWriter")]
    BypassMergeSort,
    #[serde(rename = "UnsafeShuffleWriter")]
    UnsafeShuffle,
    #[serde(rename = "SortShuffleWriter")]
    SortShuffle,
}

impl WriterKind {
    /// Spark's class name.
    pub fn spark_name(self) -> &'static str {
        match self {
            WriterKind::BypassMergeSort => "BypassMergeSortShuffleWriter",
            WriterKind::UnsafeShuffle => "UnsafeShuffleWriter",
            WriterKind::SortShuffle => "SortShuffleWriter",
        }
    }
}

impl fmt::Display for WriterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spark_name())
    }
}

/// The writer a shuffle gets, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterChoice {
    pub kind: WriterKind,
    pub serializer: Serializer,
    /// Spark's rule that chose it, with the numbers.
    pub reason: String,
}

/// The serializer Spark 4.3 uses for a shuffle of these values.
pub fn choose_serializer(values: ValueClass, conf: &SparkConf) -> Serializer {
    let configured = conf.get_str(keys::SERIALIZER);
    let kryo_configured = configured == "org.apache.spark.serializer.KryoSerializer";
    match values {
        ValueClass::Bytes => Serializer::Kryo,
        ValueClass::Object if kryo_configured => Serializer::Kryo,
        ValueClass::Object => Serializer::Java,
    }
}

/// `SortShuffleManager.registerShuffle` (docs/spark-model.md §18.1), first match wins.
pub fn choose_writer(
    operation: Operation,
    partitions: u32,
    values: ValueClass,
    conf: &SparkConf,
) -> Result<WriterChoice, ConfError> {
    let threshold = conf.get_int(keys::SHUFFLE_BYPASS_MERGE_THRESHOLD)?;
    let serializer = choose_serializer(values, conf);
    let combine = operation.map_side_combine();
    let (kind, reason) = if !combine && i64::from(partitions) <= i64::from(threshold) {
        (
            WriterKind::BypassMergeSort,
            format!(
                "no map-side combine and {partitions} reduce partitions <= \
                 spark.shuffle.sort.bypassMergeThreshold ({threshold})"
            ),
        )
    } else if !combine
        && serializer.supports_relocation()
        && partitions <= MAX_SERIALIZED_PARTITIONS
    {
        (
            WriterKind::UnsafeShuffle,
            format!(
                "no map-side combine, {partitions} reduce partitions > \
                 spark.shuffle.sort.bypassMergeThreshold ({threshold}) and <= 16777216, and \
                 {serializer:?} serializer supports relocation"
            ),
        )
    } else if combine {
        (
            WriterKind::SortShuffle,
            format!("{} combines on the map side", operation.name()),
        )
    } else if !serializer.supports_relocation() {
        (
            WriterKind::SortShuffle,
            format!(
                "{partitions} reduce partitions > spark.shuffle.sort.bypassMergeThreshold \
                 ({threshold}) and the Java serializer does not support relocation"
            ),
        )
    } else {
        (
            WriterKind::SortShuffle,
            format!("{partitions} reduce partitions > 16777216 (the serialized writer's limit)"),
        )
    };
    Ok(WriterChoice {
        kind,
        serializer,
        reason,
    })
}

/// The records of a shuffle's map side and how they are partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleSpec {
    pub shuffle_id: u32,
    pub map_tasks: u32,
    pub reduce_partitions: u32,
    pub records_per_task: u64,
    /// Bytes per record: 8-byte key, 8-byte value, payload.
    pub record_bytes: u64,
    pub distinct_keys: u64,
    /// Percent of records whose key is 0 (the hot key).
    pub hot_key_percent: u64,
    /// Percent of each payload that is text from a small vocabulary (compressible); the rest
    /// is random bytes.
    pub compressible_percent: u64,
    pub operation: Operation,
    pub values: ValueClass,
    pub seed: u64,
}

/// Words of the compressible part of a payload.
const VOCABULARY: [&[u8]; 16] = [
    b"spark ",
    b"executor ",
    b"memory ",
    b"shuffle ",
    b"spill ",
    b"storage ",
    b"the ",
    b"of ",
    b"block ",
    b"task ",
    b"partition ",
    b"record ",
    b"a ",
    b"key ",
    b"value ",
    b"and ",
];

impl ShuffleSpec {
    /// The seed of map task `map`'s records.
    pub fn map_seed(&self, map: u32) -> u64 {
        stream_seed(
            self.seed,
            0x5348_u64 << 32 | u64::from(self.shuffle_id),
            u64::from(map),
        )
    }

    /// Key and value of record `index` of a map task (cheap: no payload).
    #[inline]
    pub fn key_value(&self, map_seed: u64, index: u64) -> (u64, u64) {
        let mut state = map_seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93);
        let pick = splitmix64(&mut state);
        let key = if pick % 100 < self.hot_key_percent {
            0
        } else {
            splitmix64(&mut state) % self.distinct_keys
        };
        let value = (pick >> 32) % VALUE_RANGE;
        (key, value)
    }

    /// Writes record `index` of a map task into `out` (`record_bytes` long).
    #[inline]
    pub fn write_record(&self, map_seed: u64, index: u64, out: &mut [u8]) {
        let (key, value) = self.key_value(map_seed, index);
        out[0..8].copy_from_slice(&key.to_le_bytes());
        out[8..16].copy_from_slice(&value.to_le_bytes());
        let payload = &mut out[16..];
        let text = payload.len() * self.compressible_percent as usize / 100;
        let mut state = map_seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5;
        let (words, random) = payload.split_at_mut(text);
        let mut at = 0;
        let mut bits = 0u64;
        let mut left = 0;
        while at < words.len() {
            if left == 0 {
                bits = splitmix64(&mut state);
                left = 16;
            }
            let w = VOCABULARY[(bits & 15) as usize];
            bits >>= 4;
            left -= 1;
            let n = w.len().min(words.len() - at);
            words[at..at + n].copy_from_slice(&w[..n]);
            at += n;
        }
        for chunk in random.chunks_mut(8) {
            let v = splitmix64(&mut state).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// The reduce partition of a key: Spark's `HashPartitioner` over `java.lang.Long.hashCode`,
    /// or for `sortByKey` a range partitioner with equal key ranges (what Spark's
    /// `RangePartitioner` samples its bounds towards for uniform keys).
    #[inline]
    pub fn partition(&self, key: u64) -> u32 {
        match self.operation {
            Operation::SortByKey => {
                ((u128::from(key) * u128::from(self.reduce_partitions))
                    / u128::from(self.distinct_keys)) as u32
            }
            _ => hash_partition(key, self.reduce_partitions),
        }
    }

    /// Bytes of the records one map task generates.
    pub fn map_input_bytes(&self) -> u64 {
        self.records_per_task.saturating_mul(self.record_bytes)
    }

    /// Bytes of the records the map side writes per record (combined records are smaller).
    pub fn shuffled_record_bytes(&self) -> usize {
        if self.operation.map_side_combine() {
            COMBINED_RECORD_BYTES
        } else {
            self.record_bytes as usize
        }
    }
}

/// A key's two weights in the aggregate digest: odd, so invertible modulo 2^64.
#[inline]
fn aggregate_weights(key: u64) -> (u64, u64) {
    let mut a = key ^ 0x636f_756e_7473; // "counts"
    let mut b = key ^ 0x7375_6d73; // "sums"
    (splitmix64(&mut a) | 1, splitmix64(&mut b) | 1)
}

/// The aggregate digest of `count` records of `key` summing to `sum`: `records` counts the
/// records, `hash_sum` is `w1(key)·count + w2(key)·sum` (wrapping). It is linear, so the
/// digest of a partition's `(key, count, sum)` totals equals the sum over its records of each
/// one's digest (`count = 1`, `sum = value`) — which the map tasks take as they generate, with
/// no table. With odd weights, any single wrong count or sum changes it; errors that cancel need
/// a 2^-64 coincidence. Duplicate keys are caught apart (the output must be in strict key order).
#[inline]
pub fn aggregate_digest(key: u64, count: u64, sum: u64) -> RecordDigest {
    let (w1, w2) = aggregate_weights(key);
    RecordDigest {
        records: count,
        hash_sum: w1.wrapping_mul(count).wrapping_add(w2.wrapping_mul(sum)),
    }
}

/// A shuffle block: partition `reduce` of map output `map` (`ShuffleBlockId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShuffleBlockId {
    pub shuffle: u32,
    pub map: u32,
    pub reduce: u32,
}

impl fmt::Display for ShuffleBlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shuffle_{}_{}_{}", self.shuffle, self.map, self.reduce)
    }
}

/// What a map task leaves for the reduce side (`MapStatus` + its files).
#[derive(Debug)]
pub struct MapStatus {
    pub map_id: u32,
    /// The executor that ran it (0 is the one spillway runs; the others are remote).
    pub executor: u32,
    /// Bytes of each reduce partition in the data file.
    pub lengths: Vec<u64>,
    /// Digest of the records written for each reduce partition, as the writer saw them
    /// (combined records when the map side combines).
    pub written: Vec<RecordDigest>,
    /// Digest of the generated records per reduce partition, taken before the writer.
    pub expected: Vec<RecordDigest>,
    /// Per reduce partition: the sum of [`aggregate_digest`] over the generated records, what
    /// the partition's `(key, count, sum)` totals must come out as.
    pub expected_aggregate: Vec<RecordDigest>,
    pub files: MapOutputFiles,
}

impl MapStatus {
    pub fn block(&self, shuffle: u32, reduce: u32) -> ShuffleBlockId {
        ShuffleBlockId {
            shuffle,
            map: self.map_id,
            reduce,
        }
    }

    /// Offset of partition `reduce` in the data file.
    pub fn offset(&self, reduce: u32) -> u64 {
        self.lengths[..reduce as usize].iter().sum()
    }
}

/// A shuffle whose map stage has run (`MapOutputTracker`'s entry): what it wrote and where.
#[derive(Debug)]
pub struct MapOutputs {
    pub spec: ShuffleSpec,
    pub choice: WriterChoice,
    /// Executors the job has (map output `m` lives on executor `m mod executors`).
    pub executors: u32,
    /// The outputs of the map tasks that succeeded, by map id.
    pub statuses: Vec<MapStatus>,
    /// Map tasks that failed or never ran: their outputs are missing.
    pub missing: Vec<u32>,
}

/// The data and index files of a map output, deleted when dropped (Spark removes them with
/// the shuffle).
#[derive(Debug)]
pub struct MapOutputFiles {
    pub data: PathBuf,
    pub index: PathBuf,
}

impl Drop for MapOutputFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(operation: Operation) -> ShuffleSpec {
        ShuffleSpec {
            shuffle_id: 0,
            map_tasks: 4,
            reduce_partitions: 8,
            records_per_task: 1000,
            record_bytes: 40,
            distinct_keys: 1_000_000,
            hot_key_percent: 0,
            compressible_percent: 0,
            operation,
            values: ValueClass::Bytes,
            seed: 42,
        }
    }

    #[test]
    fn writer_choice_follows_spark() {
        let conf = SparkConf::new();
        let c = |op, p, v| choose_writer(op, p, v, &conf).unwrap().kind;
        use Operation::*;
        assert_eq!(
            c(PartitionBy, 8, ValueClass::Bytes),
            WriterKind::BypassMergeSort
        );
        assert_eq!(
            c(PartitionBy, 200, ValueClass::Bytes),
            WriterKind::BypassMergeSort
        );
        assert_eq!(
            c(PartitionBy, 201, ValueClass::Bytes),
            WriterKind::UnsafeShuffle
        );
        assert_eq!(
            c(PartitionBy, 400, ValueClass::Object),
            WriterKind::SortShuffle
        );
        assert_eq!(
            c(ReduceByKey, 8, ValueClass::Bytes),
            WriterKind::SortShuffle
        );
        assert_eq!(
            c(GroupByKey, 8, ValueClass::Bytes),
            WriterKind::BypassMergeSort
        );
        let kryo = SparkConf::new().with(
            keys::SERIALIZER,
            "org.apache.spark.serializer.KryoSerializer",
        );
        assert_eq!(
            choose_writer(PartitionBy, 400, ValueClass::Object, &kryo)
                .unwrap()
                .kind,
            WriterKind::UnsafeShuffle
        );
    }

    #[test]
    fn hash_partitioning_is_java_long_hash_code_mod() {
        let s = spec(Operation::PartitionBy);
        assert_eq!(s.partition(13), 5);
        // Long.hashCode(2^32 + 3) = 1 ^ 3 = 2.
        assert_eq!(s.partition((1 << 32) + 3), 2);
        // A negative hash code: Long.hashCode(0x8000_0000) = Integer.MIN_VALUE; mod 8 = 0.
        assert_eq!(s.partition(0x8000_0000), 0);
        let mut counts = [0u32; 8];
        let seed = s.map_seed(0);
        for i in 0..8000 {
            counts[s.partition(s.key_value(seed, i).0) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn range_partitioning_keeps_key_order() {
        let s = spec(Operation::SortByKey);
        assert_eq!(s.partition(0), 0);
        assert_eq!(s.partition(999_999), 7);
        assert!(s.partition(124_999) == 0 && s.partition(125_000) == 1);
    }

    #[test]
    fn records_are_reproducible_and_text_compresses() {
        let mut s = spec(Operation::PartitionBy);
        s.record_bytes = 4096;
        s.compressible_percent = 75;
        let seed = s.map_seed(1);
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        s.write_record(seed, 7, &mut a);
        s.write_record(seed, 7, &mut b);
        assert_eq!(a, b);
        assert_eq!(
            u64::from_le_bytes(a[0..8].try_into().unwrap()),
            s.key_value(seed, 7).0
        );
        let codec = crate::codec::Codec::with_defaults(crate::codec::CodecName::Lz4);
        let mut out = Vec::new();
        codec.compressor().compress(&a, &mut out).unwrap();
        assert!(out.len() < 4096 * 60 / 100, "{} of 4096", out.len());
    }

    #[test]
    fn the_aggregate_digest_adds_up_and_sees_any_single_error() {
        let recs = [(5u64, 7u64), (9, 1), (5, 3), (9, 9), (5, 0)];
        let mut by_record = RecordDigest::default();
        for (k, v) in recs {
            by_record = by_record.combine(aggregate_digest(k, 1, v));
        }
        let totals = aggregate_digest(5, 3, 10).combine(aggregate_digest(9, 2, 10));
        assert_eq!(by_record, totals);
        for wrong in [
            aggregate_digest(5, 3, 11).combine(aggregate_digest(9, 2, 10)),
            aggregate_digest(5, 4, 10).combine(aggregate_digest(9, 2, 10)),
            aggregate_digest(5, 3, 10).combine(aggregate_digest(9, 1, 10)),
            // A value moved to the wrong key.
            aggregate_digest(5, 3, 9).combine(aggregate_digest(9, 2, 11)),
        ] {
            assert_ne!(wrong, totals);
        }
    }

    #[test]
    fn hot_key_takes_its_share() {
        let mut s = spec(Operation::GroupByKey);
        s.hot_key_percent = 30;
        let seed = s.map_seed(0);
        let hot = (0..10_000).filter(|&i| s.key_value(seed, i).0 == 0).count();
        assert!((2700..3300).contains(&hot), "{hot}");
    }
}
