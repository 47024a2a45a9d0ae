//! How a cached block holds its values (docs/spark-model.md §21, §21.7–§21.9): as JVM objects
//! sized by Spark's `SizeEstimator` at deserialized levels, as the bytes of a real serializer
//! stream (Java or Kryo, compressed by `spark.rdd.compress`) at serialized ones.
//!
//! A [`ValueFormat`] says which; an [`Encoder`] turns records into the bytes the memory store
//! keeps and tracks the size Spark would account while unrolling; [`decode`] turns those bytes
//! back into the records. Nothing here is a guess at a size: the bytes are written, and their
//! count is the size — except at deserialized levels, whose accounted size is Spark's *estimate*
//! (sampled for arrays over 400 elements, §21.3), which the store pads up to when it exceeds the
//! objects' bytes.
//!
//! Numbers checked against Spark 4.3.0 (`scripts/spark/objsize_probe.py`,
//! `scripts/spark/objsize_vector_probe.py`, results in `scripts/spark/results/`).

use crate::codec::{Codec, CodecName, Compressor, Decompressor};
use crate::conf::{ConfError, SparkConf, keys};
use crate::data::RecordType;
use crate::storage::StorageLevel;

/// A JVM's object layout (§21.1): compressed oops below 32 GiB of heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JvmLayout {
    /// Object header bytes: 12 with compressed oops, 16 without.
    pub header: u64,
    /// Reference bytes: 4 with compressed oops, 8 without.
    pub pointer: u64,
}

impl JvmLayout {
    /// HotSpot's layout for a heap of `heap_bytes`: `UseCompressedOops` is on below 32 GiB
    /// (SizeEstimator's fallback guess is the same rule).
    pub fn for_heap(heap_bytes: u64) -> JvmLayout {
        if heap_bytes < 32 << 30 {
            JvmLayout {
                header: 12,
                pointer: 4,
            }
        } else {
            JvmLayout {
                header: 16,
                pointer: 8,
            }
        }
    }

    /// `alignSize(objectSize + INT_SIZE)`: an array's header with its length.
    pub fn array_header(&self) -> u64 {
        align8(self.header + 4)
    }

    /// `byte[n]`.
    pub fn byte_array(&self, n: u64) -> u64 {
        self.array_header() + align8(n)
    }

    /// An array of `n` references, without what they point to.
    pub fn ref_array(&self, n: u64) -> u64 {
        self.array_header() + align8(n * self.pointer)
    }

    /// A class's shell (§21.2): the parent's shell, then the class's fields packed by size
    /// (8, 4, 2, 1; references at pointer size).
    fn shell(&self, parent: u64, fields: &[(u64, u64)]) -> u64 {
        let mut shell = parent;
        let mut aligned = parent;
        for size in [8u64, 4, 2, 1] {
            let n: u64 = fields
                .iter()
                .filter(|(s, _)| *s == size)
                .map(|(_, n)| n)
                .sum();
            if n > 0 {
                aligned = aligned.max(align_up(shell, size) + size * n);
                shell += size * n;
            }
        }
        align_up(aligned.max(shell), self.pointer)
    }

    /// `scala.Tuple2$mcJJ$sp`: `Tuple2`'s two references, then two longs (40 with compressed
    /// oops).
    pub fn long_pair(&self) -> u64 {
        let tuple2 = self.shell(self.header, &[(self.pointer, 2)]);
        align8(self.shell(tuple2, &[(8, 2)]))
    }

    /// `java.lang.String` (JDK 17: `value` reference, `hash` int, `coder` byte, `hashIsZero`
    /// boolean), without its array (24 with compressed oops).
    pub fn string_shell(&self) -> u64 {
        align8(self.shell(self.header, &[(self.pointer, 1), (4, 1), (1, 2)]))
    }

    /// The bytes of one value of `record_type` holding a record of `len` bytes, everything it
    /// references included (a `String`'s `byte[]`).
    pub fn object_size(&self, record_type: RecordType, len: u64) -> u64 {
        match record_type {
            RecordType::Raw => len,
            RecordType::Bytes => self.byte_array(len),
            RecordType::LongPair => self.long_pair(),
            RecordType::String => self.string_shell() + self.byte_array(len),
        }
    }
}

/// Rounds up to a multiple of 8 (`SizeEstimator.alignSize`).
pub fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

fn align_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// `java.util.Random`, for SizeEstimator's sampling of large arrays (`new Random(42)`).
struct JavaRandom(u64);

impl JavaRandom {
    const MULT: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;

    fn new(seed: u64) -> JavaRandom {
        JavaRandom((seed ^ Self::MULT) & Self::MASK)
    }

    fn next(&mut self, bits: u32) -> i32 {
        self.0 = (self.0.wrapping_mul(Self::MULT).wrapping_add(0xB)) & Self::MASK;
        (self.0 >> (48 - bits)) as i64 as i32
    }

    fn next_int(&mut self, bound: i32) -> i32 {
        if bound & bound.wrapping_neg() == bound {
            return ((i64::from(bound) * i64::from(self.next(31))) >> 31) as i32;
        }
        loop {
            let bits = self.next(31);
            let val = bits % bound;
            if bits.wrapping_sub(val).wrapping_add(bound - 1) >= 0 {
                return val;
            }
        }
    }
}

/// `ARRAY_SIZE_FOR_SAMPLING`: reference arrays longer than this are sampled.
const ARRAY_SIZE_FOR_SAMPLING: u64 = 400;
/// `ARRAY_SAMPLE_SIZE`.
const ARRAY_SAMPLE_SIZE: u64 = 100;

/// The two samples of 100 distinct indices SizeEstimator draws for an array of `len`.
fn sample_indices(len: u64) -> Vec<u64> {
    let mut rand = JavaRandom::new(42);
    let mut drawn = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(2 * ARRAY_SAMPLE_SIZE as usize);
    for _ in 0..2 * ARRAY_SAMPLE_SIZE {
        let mut index;
        loop {
            index = rand.next_int(len as i32) as u64;
            if drawn.insert(index) {
                break;
            }
        }
        out.push(index);
    }
    out
}

/// The sizes of a block's values so far, as runs of equal sizes (a partition's records are
/// all one size but the last).
#[derive(Debug, Clone, Default)]
struct SizeRuns {
    /// (first index, size of every value from it to the next run).
    runs: Vec<(u64, u64)>,
    count: u64,
    total: u64,
}

impl SizeRuns {
    fn push(&mut self, size: u64) {
        if self.runs.last().is_none_or(|&(_, s)| s != size) {
            self.runs.push((self.count, size));
        }
        self.count += 1;
        self.total += size;
    }

    /// The size of value `index`, 0 past the end (a null slot).
    fn at(&self, index: u64) -> u64 {
        if index >= self.count {
            return 0;
        }
        let i = self.runs.partition_point(|&(start, _)| start <= index);
        self.runs[i - 1].1
    }
}

/// SizeEstimator's estimate of a reference array of `len` slots whose first values are
/// `values` (the rest null): its own bytes, then every value below 401 slots, else
/// `max(s1, s2) + min(s1, s2) × ((len − 100) / 100)` over two samples of 100 (§21.3).
fn ref_array_estimate(
    layout: &JvmLayout,
    len: u64,
    values: &SizeRuns,
    samples: &mut SampleCache,
) -> u64 {
    let own = layout.ref_array(len);
    if len <= ARRAY_SIZE_FOR_SAMPLING {
        return own + values.total;
    }
    let idx = samples.get(len);
    let (a, b) = idx.split_at(ARRAY_SAMPLE_SIZE as usize);
    let s1: u64 = a.iter().map(|&i| values.at(i)).sum();
    let s2: u64 = b.iter().map(|&i| values.at(i)).sum();
    own + s1.max(s2) + s1.min(s2) * ((len - ARRAY_SAMPLE_SIZE) / ARRAY_SAMPLE_SIZE)
}

/// Sample indices per array length (the vector's capacities and the final length).
#[derive(Default)]
struct SampleCache(Vec<(u64, Vec<u64>)>);

impl SampleCache {
    fn get(&mut self, len: u64) -> &[u64] {
        let pos = match self.0.iter().position(|(l, _)| *l == len) {
            Some(p) => p,
            None => {
                self.0.push((len, sample_indices(len)));
                self.0.len() - 1
            }
        };
        &self.0[pos].1
    }
}

/// SizeEstimator's estimate of the array `SizeTrackingVector.toArray` gives for these values:
/// the size a deserialized block is stored with (§21.6).
pub fn values_array_estimate(layout: &JvmLayout, sizes: &[u64]) -> u64 {
    let mut runs = SizeRuns::default();
    for &s in sizes {
        runs.push(s);
    }
    ref_array_estimate(layout, runs.count, &runs, &mut SampleCache::default())
}

/// The bytes of a `SizeTrackingVector` besides its array and values, with no sample queued:
/// the vector and `SizeTracker`'s fields, its sample queue and class tag (measured: an empty
/// vector estimates 504 = this + a 64-slot array of 272).
const VECTOR_SHELL: u64 = 232;
/// One queued `SizeTracker.Sample` (two longs).
const SAMPLE_BYTES: u64 = 32;
/// `SizeTracker.SAMPLE_GROWTH_RATE`.
const SAMPLE_GROWTH_RATE: f64 = 1.1;
/// `SizeTrackingVector`'s initial capacity.
const VECTOR_INITIAL_CAPACITY: u64 = 64;

/// `SizeTrackingVector` with its `SizeTracker` (§21.5): the estimate a deserialized unroll
/// checks against its threshold. Exact against Spark's series
/// (`tests/data/size_tracking_vector.json`).
struct VectorTracker {
    layout: JvmLayout,
    values: SizeRuns,
    capacity: u64,
    /// (size, numUpdates) of the last two samples, oldest first.
    samples: Vec<(u64, u64)>,
    bytes_per_update: f64,
    num_updates: u64,
    next_sample: u64,
    cache: SampleCache,
}

impl VectorTracker {
    fn new(layout: JvmLayout) -> VectorTracker {
        let mut t = VectorTracker {
            layout,
            values: SizeRuns::default(),
            capacity: VECTOR_INITIAL_CAPACITY,
            samples: Vec::new(),
            bytes_per_update: 0.0,
            num_updates: 0,
            next_sample: 0,
            cache: SampleCache::default(),
        };
        t.reset_samples();
        t
    }

    /// `SizeEstimator.estimate(this)`.
    fn estimate_now(&mut self) -> u64 {
        VECTOR_SHELL
            + SAMPLE_BYTES * self.samples.len() as u64
            + ref_array_estimate(&self.layout, self.capacity, &self.values, &mut self.cache)
    }

    fn reset_samples(&mut self) {
        self.num_updates = 1;
        self.samples.clear();
        self.take_sample();
    }

    fn take_sample(&mut self) {
        let size = self.estimate_now();
        self.samples.push((size, self.num_updates));
        if self.samples.len() > 2 {
            self.samples.remove(0);
        }
        let delta = match self.samples[..] {
            [(prev, pn), (last, ln)] => (last as f64 - prev as f64) / (ln - pn) as f64,
            _ => 0.0,
        };
        self.bytes_per_update = delta.max(0.0);
        self.next_sample = (self.num_updates as f64 * SAMPLE_GROWTH_RATE).ceil() as u64;
    }

    /// `+=`: grow (and re-sample) when full, store, `afterUpdate`.
    fn push(&mut self, size: u64) {
        if self.values.count == self.capacity {
            self.capacity *= 2;
            self.reset_samples();
        }
        self.values.push(size);
        self.num_updates += 1;
        if self.next_sample == self.num_updates {
            self.take_sample();
        }
    }

    /// `estimateSize()`.
    fn estimate(&self) -> u64 {
        let (size, at) = *self.samples.last().expect("a sample is taken at creation");
        (size as f64 + self.bytes_per_update * (self.num_updates - at) as f64) as u64
    }
}

/// The serializer of a serialized block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SerializerKind {
    #[serde(rename = "JavaSerializer")]
    Java,
    #[serde(rename = "KryoSerializer")]
    Kryo,
}

/// What decides a block's format besides its record type and level: `spark.serializer`,
/// `spark.rdd.compress` with `spark.io.compression.codec`, and the heap (compressed oops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValuesConf {
    /// `spark.serializer` is `KryoSerializer`.
    pub kryo: bool,
    /// The codec of serialized RDD blocks, `None` when `spark.rdd.compress=false`.
    pub rdd_codec: Option<Codec>,
    pub layout: JvmLayout,
}

impl ValuesConf {
    /// From the configuration, for a heap of `heap_bytes`. A bad codec is bad input.
    pub fn from_conf(conf: &SparkConf, heap_bytes: u64) -> Result<ValuesConf, ConfError> {
        let kryo = conf.get_str(keys::SERIALIZER) == "org.apache.spark.serializer.KryoSerializer";
        let rdd_codec = if conf.get_bool(keys::RDD_COMPRESS)? {
            Some(Codec::from_conf(conf)?)
        } else {
            None
        };
        Ok(ValuesConf {
            kryo,
            rdd_codec,
            layout: JvmLayout::for_heap(heap_bytes),
        })
    }
}

impl Default for ValuesConf {
    /// Spark 4.3.0's defaults under a heap below 32 GiB: Java serializer, lz4-compressed RDD
    /// blocks.
    fn default() -> Self {
        ValuesConf {
            kryo: false,
            rdd_codec: Some(Codec::with_defaults(CodecName::Lz4)),
            layout: JvmLayout::for_heap(1 << 30),
        }
    }
}

/// How a block holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// spillway's byte records, stored as they are at every level.
    Raw,
    /// JVM objects (deserialized levels): each value's image, then the array referencing them.
    Objects {
        record_type: RecordType,
        layout: JvmLayout,
    },
    /// One JVM object holding every record, as `putSingle` stores a broadcast's value
    /// (docs/spark-model.md §22.4): an `Array[Array[Byte]]` of the records, the one element of
    /// the unroll's vector. Its images are those of [`ValueFormat::Objects`] of `bytes`
    /// records, then the value's array, then the one-slot array `vector.toArray` gives.
    OneObject { layout: JvmLayout },
    /// A serializer stream, compressed when `codec` is set (serialized levels).
    Serialized {
        record_type: RecordType,
        serializer: SerializerKind,
        codec: Option<Codec>,
    },
}

impl ValueFormat {
    /// The format Spark gives records of `record_type` at `level` (§21.6): objects when
    /// deserialized; else Kryo for `byte[]` and `String` whatever `spark.serializer` says (the
    /// class tag picks it), `spark.serializer` for pairs; compressed by `spark.rdd.compress`.
    pub fn choose(record_type: RecordType, level: StorageLevel, conf: &ValuesConf) -> ValueFormat {
        if record_type == RecordType::Raw {
            return ValueFormat::Raw;
        }
        if level.deserialized {
            return ValueFormat::Objects {
                record_type,
                layout: conf.layout,
            };
        }
        let serializer = match record_type {
            RecordType::LongPair if !conf.kryo => SerializerKind::Java,
            _ => SerializerKind::Kryo,
        };
        ValueFormat::Serialized {
            record_type,
            serializer,
            codec: conf.rdd_codec,
        }
    }

    /// Whether the records form one element of the unroll (`putSingle`): its size check comes
    /// once, after the whole value (docs/spark-model.md §22.4).
    pub fn single_element(&self) -> bool {
        matches!(self, ValueFormat::OneObject { .. })
    }

    /// The serializer, for a serialized format.
    pub fn serializer(&self) -> Option<SerializerKind> {
        match self {
            ValueFormat::Serialized { serializer, .. } => Some(*serializer),
            _ => None,
        }
    }

    /// The size of the memory store's chunks for records of `record_bytes`: about 1 MiB, a
    /// whole number of values where each value has one size (raw records, objects), so that
    /// a value never spans two chunks.
    pub fn chunk_bytes(&self, record_bytes: u64) -> u64 {
        const TARGET: u64 = 1 << 20;
        let unit = match self {
            ValueFormat::Raw => record_bytes,
            ValueFormat::Objects {
                record_type,
                layout,
            } => layout.object_size(*record_type, record_bytes),
            ValueFormat::OneObject { layout } => {
                layout.object_size(RecordType::Bytes, record_bytes)
            }
            ValueFormat::Serialized { .. } => return TARGET,
        };
        unit * TARGET.div_ceil(unit).max(1)
    }

    /// A name for the report.
    pub fn describe(&self) -> String {
        match self {
            ValueFormat::Raw => "raw bytes".into(),
            ValueFormat::Objects { .. } => "JVM objects (SizeEstimator)".into(),
            ValueFormat::OneObject { .. } => "one JVM object (putSingle, SizeEstimator)".into(),
            ValueFormat::Serialized {
                serializer, codec, ..
            } => {
                let name = match serializer {
                    SerializerKind::Java => "JavaSerializer",
                    SerializerKind::Kryo => "KryoSerializer",
                };
                match codec {
                    Some(c) => format!("{name}, {} compressed", c.name),
                    None => format!("{name}, uncompressed"),
                }
            }
        }
    }
}

/// The class ids Spark 4.3.0's Kryo registers (`newKryo().getRegistration`), written as
/// `id + 2` in a varint.
const KRYO_ID_STRING: u32 = 1;
const KRYO_ID_BYTE_ARRAY: u32 = 19;
const KRYO_ID_TUPLE2_JJ: u32 = 94;
/// Kryo's `NOT_NULL` reference marker (reference tracking is on by default).
const KRYO_NOT_NULL: u8 = 1;

/// `serialVersionUID`s the Java stream carries (`ObjectStreamClass.lookup`, Scala 2.13).
const SUID_TUPLE2_JJ: i64 = -2_209_874_359_060_389_928;
const SUID_TUPLE2: i64 = 142_951_686_315_914_362;
/// `spark.serializer.objectStreamReset`: the Java stream resets every 100 objects.
const JAVA_RESET_EVERY: u64 = 100;

const TC_NULL: u8 = 0x70;
const TC_REFERENCE: u8 = 0x71;
const TC_CLASSDESC: u8 = 0x72;
const TC_OBJECT: u8 = 0x73;
const TC_STRING: u8 = 0x74;
const TC_ENDBLOCKDATA: u8 = 0x78;
const TC_RESET: u8 = 0x79;
const BASE_WIRE_HANDLE: u32 = 0x7e_0000;
const SC_SERIALIZABLE: u8 = 0x02;

fn java_utf(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `ObjectOutputStream.writeObject` of the first `Tuple2$mcJJ$sp` after a reset: its class
/// descriptor and `Tuple2`'s, as Java 17 writes them (142 bytes with the data).
fn java_pair_descriptors() -> Vec<u8> {
    let mut d = vec![TC_CLASSDESC];
    java_utf(&mut d, "scala.Tuple2$mcJJ$sp");
    d.extend_from_slice(&SUID_TUPLE2_JJ.to_be_bytes());
    d.push(SC_SERIALIZABLE);
    d.extend_from_slice(&2u16.to_be_bytes());
    for f in ["_1$mcJ$sp", "_2$mcJ$sp"] {
        d.push(b'J');
        java_utf(&mut d, f);
    }
    d.push(TC_ENDBLOCKDATA);
    d.push(TC_CLASSDESC);
    java_utf(&mut d, "scala.Tuple2");
    d.extend_from_slice(&SUID_TUPLE2.to_be_bytes());
    d.push(SC_SERIALIZABLE);
    d.extend_from_slice(&2u16.to_be_bytes());
    d.push(b'L');
    java_utf(&mut d, "_1");
    d.push(TC_STRING);
    java_utf(&mut d, "Ljava/lang/Object;");
    d.push(b'L');
    java_utf(&mut d, "_2");
    d.push(TC_REFERENCE);
    // Handles: the pair's descriptor 0, Tuple2's 1, the type string 2.
    d.extend_from_slice(&(BASE_WIRE_HANDLE + 2).to_be_bytes());
    d.push(TC_ENDBLOCKDATA);
    d.push(TC_NULL);
    d
}

fn kryo_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Kryo's `writeUtf8Length`.
fn kryo_utf8_length(out: &mut Vec<u8>, v: u32) {
    if v >> 6 == 0 {
        out.push(v as u8 | 0x80);
    } else if v >> 13 == 0 {
        out.extend_from_slice(&[v as u8 | 0xc0, (v >> 6) as u8]);
    } else if v >> 20 == 0 {
        out.extend_from_slice(&[v as u8 | 0xc0, (v >> 6) as u8 | 0x80, (v >> 13) as u8]);
    } else if v >> 27 == 0 {
        out.extend_from_slice(&[
            v as u8 | 0xc0,
            (v >> 6) as u8 | 0x80,
            (v >> 13) as u8 | 0x80,
            (v >> 20) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            v as u8 | 0xc0,
            (v >> 6) as u8 | 0x80,
            (v >> 13) as u8 | 0x80,
            (v >> 20) as u8 | 0x80,
            (v >> 27) as u8,
        ]);
    }
}

fn pair_longs(record: &[u8]) -> (u64, u64) {
    let a = u64::from_le_bytes(record[..8].try_into().expect("a pair is 16 bytes"));
    let b = u64::from_le_bytes(record[8..16].try_into().expect("a pair is 16 bytes"));
    (a, b)
}

/// xxHash32 (lz4-java's `StreamingXXHash32`, one block at a time).
pub fn xxh32(data: &[u8], seed: u32) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    let word = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let round = |v: u32, w: u32| {
        v.wrapping_add(w.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let mut rest = data;
    let mut h = if data.len() >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 16 {
            for (i, v) in v.iter_mut().enumerate() {
                *v = round(*v, word(&rest[4 * i..]));
            }
            rest = &rest[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u32);
    while rest.len() >= 4 {
        h = h
            .wrapping_add(word(rest).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
        rest = &rest[4..];
    }
    for &b in rest {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

/// lz4-java's `LZ4BlockOutputStream` framing: `LZ4Block`, token, lengths, checksum.
const LZ4_MAGIC: &[u8; 8] = b"LZ4Block";
const LZ4_HEADER: usize = 21;
const LZ4_RAW: u8 = 0x10;
const LZ4_COMPRESSED: u8 = 0x20;
const LZ4_SEED: u32 = 0x9747_b28c;
/// xerial `SnappyOutputStream`'s stream header: magic, version 1, compatible version 1.
const SNAPPY_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];

fn lz4_token(block_bytes: usize, method: u8) -> u8 {
    let level = (32 - (block_bytes as u32 - 1).leading_zeros()).saturating_sub(10) as u8;
    method | level
}

/// The codec's output stream over the serializer's bytes (`SerializerManager.wrapForCompression`).
struct BlockCompressor {
    codec: Codec,
    compressor: Compressor,
    raw: Vec<u8>,
    out: Vec<u8>,
    started: bool,
}

impl BlockCompressor {
    fn new(codec: Codec) -> BlockCompressor {
        BlockCompressor {
            codec,
            compressor: codec.compressor(),
            raw: Vec::with_capacity(codec.block_bytes),
            out: Vec::new(),
            started: false,
        }
    }

    /// Takes serialized bytes; appends to `stream` every block that fills.
    fn write(&mut self, mut bytes: &[u8], stream: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if self.codec.name == CodecName::Snappy {
                stream.extend_from_slice(&SNAPPY_HEADER);
            }
        }
        while !bytes.is_empty() {
            let take = (self.codec.block_bytes - self.raw.len()).min(bytes.len());
            self.raw.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.raw.len() == self.codec.block_bytes {
                self.flush_block(stream);
            }
        }
    }

    fn flush_block(&mut self, stream: &mut Vec<u8>) {
        if self.raw.is_empty() {
            return;
        }
        self.compressor
            .compress(&self.raw, &mut self.out)
            .expect("the output is sized to the codec's bound");
        match self.codec.name {
            CodecName::Lz4 => {
                let (method, body) = if self.out.len() >= self.raw.len() {
                    (LZ4_RAW, &self.raw[..])
                } else {
                    (LZ4_COMPRESSED, &self.out[..])
                };
                stream.extend_from_slice(LZ4_MAGIC);
                stream.push(lz4_token(self.codec.block_bytes, method));
                stream.extend_from_slice(&(body.len() as u32).to_le_bytes());
                stream.extend_from_slice(&(self.raw.len() as u32).to_le_bytes());
                let check = xxh32(&self.raw, LZ4_SEED) & 0x0fff_ffff;
                stream.extend_from_slice(&check.to_le_bytes());
                stream.extend_from_slice(body);
            }
            CodecName::Snappy => {
                stream.extend_from_slice(&(self.out.len() as u32).to_be_bytes());
                stream.extend_from_slice(&self.out);
            }
            CodecName::Zstd => stream.extend_from_slice(&self.out),
        }
        self.raw.clear();
    }

    /// `close()`: the last block, and lz4's end mark.
    fn finish(&mut self, stream: &mut Vec<u8>) {
        self.write(&[], stream);
        self.flush_block(stream);
        if self.codec.name == CodecName::Lz4 {
            stream.extend_from_slice(LZ4_MAGIC);
            stream.push(lz4_token(self.codec.block_bytes, LZ4_RAW));
            stream.extend_from_slice(&[0; 12]);
        }
    }
}

/// Turns records into a block's bytes and tracks the size Spark accounts for them.
pub struct Encoder {
    format: ValueFormat,
    records: u64,
    /// Bytes handed out so far (object images, or the stream).
    emitted: u64,
    tracker: Option<VectorTracker>,
    /// The sizes of a [`ValueFormat::OneObject`]'s records (its array's elements).
    single: SizeRuns,
    compressor: Option<BlockCompressor>,
    ser: Vec<u8>,
    descriptors: Vec<u8>,
    finished: bool,
}

impl Encoder {
    pub fn new(format: ValueFormat) -> Encoder {
        let (tracker, compressor, descriptors) = match format {
            ValueFormat::Raw | ValueFormat::OneObject { .. } => (None, None, Vec::new()),
            ValueFormat::Objects { layout, .. } => {
                (Some(VectorTracker::new(layout)), None, Vec::new())
            }
            ValueFormat::Serialized {
                codec, serializer, ..
            } => (
                None,
                codec.map(BlockCompressor::new),
                if serializer == SerializerKind::Java {
                    java_pair_descriptors()
                } else {
                    Vec::new()
                },
            ),
        };
        Encoder {
            format,
            records: 0,
            emitted: 0,
            tracker,
            single: SizeRuns::default(),
            compressor,
            ser: Vec::new(),
            descriptors,
            finished: false,
        }
    }

    pub fn format(&self) -> &ValueFormat {
        &self.format
    }

    /// Encodes one record, appending to `out` the bytes that are ready (a compressing stream
    /// holds them until its block fills).
    pub fn push(&mut self, record: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        match self.format {
            ValueFormat::Raw => out.extend_from_slice(record),
            ValueFormat::Objects {
                record_type,
                layout,
            } => {
                let size = layout.object_size(record_type, record.len() as u64);
                write_object(&layout, record_type, record, self.emitted, out);
                debug_assert_eq!((out.len() - start) as u64, size);
                self.tracker
                    .as_mut()
                    .expect("objects track their size")
                    .push(size);
            }
            ValueFormat::OneObject { layout } => {
                let size = layout.object_size(RecordType::Bytes, record.len() as u64);
                write_object(&layout, RecordType::Bytes, record, self.emitted, out);
                self.single.push(size);
            }
            ValueFormat::Serialized {
                record_type,
                serializer,
                ..
            } => {
                let mut ser = std::mem::take(&mut self.ser);
                ser.clear();
                if self.records == 0 && serializer == SerializerKind::Java {
                    // ObjectOutputStream's stream header.
                    ser.extend_from_slice(&[0xac, 0xed, 0x00, 0x05]);
                }
                self.serialize(record_type, serializer, record, &mut ser);
                match &mut self.compressor {
                    Some(c) => c.write(&ser, out),
                    None => out.extend_from_slice(&ser),
                }
                self.ser = ser;
            }
        }
        self.records += 1;
        self.emitted += (out.len() - start) as u64;
    }

    fn serialize(
        &mut self,
        record_type: RecordType,
        serializer: SerializerKind,
        record: &[u8],
        ser: &mut Vec<u8>,
    ) {
        match (serializer, record_type) {
            (SerializerKind::Java, _) => {
                let (a, b) = pair_longs(record);
                ser.push(TC_OBJECT);
                if self.records.is_multiple_of(JAVA_RESET_EVERY) {
                    ser.extend_from_slice(&self.descriptors);
                } else {
                    ser.push(TC_REFERENCE);
                    ser.extend_from_slice(&BASE_WIRE_HANDLE.to_be_bytes());
                }
                ser.extend_from_slice(&[TC_NULL, TC_NULL]);
                ser.extend_from_slice(&a.to_be_bytes());
                ser.extend_from_slice(&b.to_be_bytes());
                if (self.records + 1).is_multiple_of(JAVA_RESET_EVERY) {
                    ser.push(TC_RESET);
                }
            }
            (SerializerKind::Kryo, RecordType::LongPair) => {
                let (a, b) = pair_longs(record);
                kryo_varint(ser, KRYO_ID_TUPLE2_JJ + 2);
                ser.push(KRYO_NOT_NULL);
                ser.extend_from_slice(&a.to_be_bytes());
                ser.extend_from_slice(&b.to_be_bytes());
            }
            (SerializerKind::Kryo, RecordType::String) => {
                kryo_varint(ser, KRYO_ID_STRING + 2);
                ser.push(KRYO_NOT_NULL);
                let n = record.len();
                if n == 0 {
                    ser.push(0x81);
                } else if n > 1 && n < 64 {
                    ser.extend_from_slice(record);
                    *ser.last_mut().expect("n > 1") |= 0x80;
                } else {
                    kryo_utf8_length(ser, n as u32 + 1);
                    ser.extend_from_slice(record);
                }
            }
            (SerializerKind::Kryo, _) => {
                kryo_varint(ser, KRYO_ID_BYTE_ARRAY + 2);
                ser.push(KRYO_NOT_NULL);
                kryo_varint(ser, record.len() as u32 + 1);
                ser.extend_from_slice(record);
            }
        }
    }

    /// Records encoded.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The size Spark's unroll checks see: the vector's estimate for objects, the stream's
    /// bytes so far otherwise (§6.5b, §21.5–§21.6).
    pub fn unroll_estimate(&self) -> u64 {
        if let ValueFormat::OneObject { layout } = self.format {
            // The vector holds one element, the value: SizeTracker's estimate after it
            // (docs/spark-model.md §22.4).
            let value = ref_array_estimate(
                &layout,
                self.single.count,
                &self.single,
                &mut SampleCache::default(),
            );
            let mut vector = VectorTracker::new(layout);
            vector.push(value);
            return vector.estimate();
        }
        match &self.tracker {
            Some(t) => t.estimate(),
            None => self.emitted,
        }
    }

    /// Ends the block: appends what is left of the stream (the compressor's last block and end
    /// mark; for objects the array referencing them, then zeros up to Spark's estimate when the
    /// estimate exceeds the objects' bytes) and returns the size the block is stored with.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> u64 {
        assert!(!self.finished, "a block is finished once");
        self.finished = true;
        let start = out.len();
        let size = match self.format {
            ValueFormat::Raw => self.emitted,
            ValueFormat::Objects { layout, .. } => {
                let t = self.tracker.as_mut().expect("objects track their size");
                write_value_array(&layout, &t.values, &mut t.cache, self.emitted, out)
            }
            ValueFormat::OneObject { layout } => {
                let value = write_value_array(
                    &layout,
                    &self.single,
                    &mut SampleCache::default(),
                    self.emitted,
                    out,
                );
                // `vector.toArray`: a one-slot array referencing the value's array (which
                // starts where the records' images end).
                let outer = out.len();
                out.extend_from_slice(&1u64.to_le_bytes()[..8.min(layout.header as usize)]);
                out.resize(outer + layout.array_header() as usize - 4, 0);
                out.extend_from_slice(&1u32.to_le_bytes());
                let word = self.emitted / 8;
                if layout.pointer == 4 {
                    out.extend_from_slice(&(word as u32).to_le_bytes());
                } else {
                    out.extend_from_slice(&word.to_le_bytes());
                }
                out.resize(outer + layout.ref_array(1) as usize, 0);
                value + layout.ref_array(1)
            }
            ValueFormat::Serialized { .. } => {
                if let Some(c) = &mut self.compressor {
                    c.finish(out);
                }
                self.emitted + (out.len() - start) as u64
            }
        };
        self.emitted += (out.len() - start) as u64;
        size
    }

    /// Serialized bytes a compressing stream holds that are not in the block's bytes yet.
    pub fn pending(&self) -> &[u8] {
        self.compressor.as_ref().map_or(&[], |c| &c.raw[..])
    }
}

/// Writes the array referencing a block's values (header, length, then each value's offset
/// in the block in 8-byte words, a compressed oop relative to the block), padded with zeros
/// up to SizeEstimator's estimate of the array and its values when that exceeds the bytes
/// held (`emitted` bytes of value images came before it); returns that estimate (§21.3,
/// §21.6).
fn write_value_array(
    layout: &JvmLayout,
    values: &SizeRuns,
    cache: &mut SampleCache,
    emitted: u64,
    out: &mut Vec<u8>,
) -> u64 {
    let start = out.len();
    let n = values.count;
    let header = layout.array_header();
    out.extend_from_slice(&1u64.to_le_bytes()[..8.min(header as usize)]);
    out.resize(start + header as usize - 4, 0);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let mut offset = 0u64;
    for run_i in 0..values.runs.len() {
        let (first, size) = values.runs[run_i];
        let end = values.runs.get(run_i + 1).map_or(n, |r| r.0);
        for _ in first..end {
            let word = offset / 8;
            if layout.pointer == 4 {
                out.extend_from_slice(&(word as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&word.to_le_bytes());
            }
            offset += size;
        }
    }
    out.resize(start + layout.ref_array(n) as usize, 0);
    let estimate = ref_array_estimate(layout, n, values, cache);
    let held = emitted + (out.len() - start) as u64;
    if estimate > held {
        out.resize(out.len() + (estimate - held) as usize, 0);
    }
    estimate
}

/// Writes the image of one value: header (mark word 1, a class word), fields, padding.
fn write_object(
    layout: &JvmLayout,
    record_type: RecordType,
    record: &[u8],
    at: u64,
    out: &mut Vec<u8>,
) {
    let header = |out: &mut Vec<u8>, class: u32| {
        let start = out.len();
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&class.to_le_bytes());
        out.resize(start + layout.header as usize, 0);
    };
    let byte_array = |out: &mut Vec<u8>, bytes: &[u8]| {
        let start = out.len();
        header(out, CLASS_BYTE_ARRAY);
        out.resize(start + layout.array_header() as usize - 4, 0);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        out.resize(start + layout.byte_array(bytes.len() as u64) as usize, 0);
    };
    match record_type {
        RecordType::Raw => out.extend_from_slice(record),
        RecordType::Bytes => byte_array(out, record),
        RecordType::LongPair => {
            let start = out.len();
            header(out, CLASS_TUPLE2_JJ);
            // Tuple2's `_1`, `_2`: null in the specialized subclass.
            out.resize(start + (layout.header + 2 * layout.pointer) as usize, 0);
            let size = layout.long_pair() as usize;
            out.resize(start + size - 16, 0);
            out.extend_from_slice(&record[..16]);
        }
        RecordType::String => {
            let start = out.len();
            let shell = layout.string_shell();
            header(out, CLASS_STRING);
            let value = (at + shell) / 8;
            if layout.pointer == 4 {
                out.extend_from_slice(&(value as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&value.to_le_bytes());
            }
            // hash 0, coder LATIN1 0, hashIsZero false.
            out.resize(start + shell as usize, 0);
            byte_array(out, record);
        }
    }
}

/// Class words of the object images (what a compressed class pointer would hold).
const CLASS_BYTE_ARRAY: u32 = 0x0b;
const CLASS_TUPLE2_JJ: u32 = 0x5e;
const CLASS_STRING: u32 = 0x01;

/// A block's bytes that do not decode as what the encoder wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A decode that stopped: at bad bytes, or because the visitor failed.
#[derive(Debug)]
pub enum ReadError<E> {
    Decode(DecodeError),
    Visit(E),
}

fn bad<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

/// Bytes read across the pieces of a block: a slice when a read lies in one piece, else
/// copied into a window.
struct Pieces<'a> {
    pieces: &'a [&'a [u8]],
    piece: usize,
    pos: usize,
    window: Vec<u8>,
}

impl<'a> Pieces<'a> {
    fn new(pieces: &'a [&'a [u8]]) -> Self {
        Pieces {
            pieces,
            piece: 0,
            pos: 0,
            window: Vec::new(),
        }
    }

    fn skip_empty(&mut self) {
        while self.piece < self.pieces.len() && self.pos == self.pieces[self.piece].len() {
            self.piece += 1;
            self.pos = 0;
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_empty();
        self.piece == self.pieces.len()
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        self.skip_empty();
        if self.piece < self.pieces.len() && self.pieces[self.piece].len() - self.pos >= n {
            let s = &self.pieces[self.piece][self.pos..self.pos + n];
            self.pos += n;
            return Ok(s);
        }
        self.window.clear();
        while self.window.len() < n {
            self.skip_empty();
            let Some(p) = self.pieces.get(self.piece) else {
                return bad(format!(
                    "the block ends {} bytes short",
                    n - self.window.len()
                ));
            };
            let k = (p.len() - self.pos).min(n - self.window.len());
            self.window.extend_from_slice(&p[self.pos..self.pos + k]);
            self.pos += k;
        }
        Ok(&self.window)
    }
}

/// The serializer's bytes: the stream's pieces as they are, or decompressed block by block.
struct SerialBytes<'a> {
    src: Pieces<'a>,
    codec: Option<(Codec, Decompressor)>,
    pending: &'a [u8],
    pending_done: bool,
    buf: Vec<u8>,
    pos: usize,
    started: bool,
}

impl<'a> SerialBytes<'a> {
    /// Fills `buf` with the next decompressed block; false at the end.
    fn refill(&mut self) -> Result<bool, DecodeError> {
        let Some((codec, _)) = &self.codec else {
            return Ok(false);
        };
        let codec = *codec;
        if !self.started {
            self.started = true;
            if codec.name == CodecName::Snappy
                && !self.src.at_end()
                && self.src.take(16)? != SNAPPY_HEADER
            {
                return bad("no snappy stream header");
            }
        }
        self.buf.clear();
        self.pos = 0;
        if self.src.at_end() {
            if !self.pending_done {
                self.pending_done = true;
                self.buf.extend_from_slice(self.pending);
                return Ok(!self.buf.is_empty());
            }
            return Ok(false);
        }
        let name = codec.name;
        let to_decode = |e: crate::codec::CodecError| DecodeError(e.to_string());
        match name {
            CodecName::Lz4 => {
                let h = self.src.take(LZ4_HEADER)?;
                if &h[..8] != LZ4_MAGIC {
                    return bad("no LZ4Block magic");
                }
                let method = h[8] & 0xf0;
                let stored = u32::from_le_bytes(h[9..13].try_into().expect("4")) as usize;
                let raw = u32::from_le_bytes(h[13..17].try_into().expect("4")) as usize;
                let check = u32::from_le_bytes(h[17..21].try_into().expect("4"));
                if raw == 0 {
                    // The end mark.
                    return self.refill();
                }
                let body = self.src.take(stored)?.to_vec();
                if method == LZ4_RAW {
                    self.buf.extend_from_slice(&body);
                } else {
                    let (_, dec) = self.codec.as_mut().expect("checked above");
                    dec.decompress(&body, raw, &mut self.buf)
                        .map_err(to_decode)?;
                }
                if xxh32(&self.buf, LZ4_SEED) & 0x0fff_ffff != check {
                    return bad("an lz4 block's checksum does not match");
                }
            }
            CodecName::Snappy => {
                let len = u32::from_be_bytes(self.src.take(4)?.try_into().expect("4")) as usize;
                let body = self.src.take(len)?.to_vec();
                let raw =
                    snap::raw::decompress_len(&body).map_err(|e| DecodeError(e.to_string()))?;
                let (_, dec) = self.codec.as_mut().expect("checked above");
                dec.decompress(&body, raw, &mut self.buf)
                    .map_err(to_decode)?;
            }
            CodecName::Zstd => {
                // Each block is one frame, no longer than the codec's bound for a block.
                let bound = codec.max_compressed_len(codec.block_bytes) + 64;
                let peek = self.peek(bound)?;
                let frame = zstd::zstd_safe::find_frame_compressed_size(&peek)
                    .map_err(|_| DecodeError("a zstd frame runs past the block".into()))?;
                let body = self.src.take(frame)?.to_vec();
                let raw = zstd::zstd_safe::get_frame_content_size(&body)
                    .ok()
                    .flatten()
                    .ok_or_else(|| DecodeError("a zstd frame without its size".into()))?;
                let (_, dec) = self.codec.as_mut().expect("checked above");
                dec.decompress(&body, raw as usize, &mut self.buf)
                    .map_err(to_decode)?;
            }
        }
        Ok(true)
    }

    fn remaining_in_piece(&self) -> usize {
        self.src
            .pieces
            .get(self.src.piece)
            .map_or(0, |p| p.len() - self.src.pos)
    }

    /// Up to `n` bytes from the current place, without consuming them.
    fn peek(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        let (piece, pos) = (self.src.piece, self.src.pos);
        let mut out = Vec::with_capacity(n);
        while out.len() < n && !self.src.at_end() {
            let k = (self.remaining_in_piece()).min(n - out.len());
            out.extend_from_slice(self.src.take(k)?);
        }
        self.src.piece = piece;
        self.src.pos = pos;
        Ok(out)
    }

    /// `n` serializer bytes, owned (records are small; this path is the serialized read).
    fn take(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        out.clear();
        while out.len() < n {
            if self.codec.is_none() {
                if self.src.at_end() {
                    if !self.pending_done && !self.pending.is_empty() {
                        return bad("pending bytes without a codec");
                    }
                    return bad("the stream ends inside a record");
                }
                let k = (self.remaining_in_piece()).min(n - out.len());
                out.extend_from_slice(self.src.take(k)?);
                continue;
            }
            if self.pos == self.buf.len() && !self.refill()? {
                return bad("the stream ends inside a record");
            }
            let k = (self.buf.len() - self.pos).min(n - out.len());
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let mut b = Vec::with_capacity(1);
        self.take(1, &mut b)?;
        Ok(b[0])
    }
}

/// The records of a block of object images: each value's image in order (what follows them,
/// the arrays, is not read).
fn decode_objects<E>(
    layout: &JvmLayout,
    record_type: RecordType,
    records: u64,
    pieces: &[&[u8]],
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let mut src = Pieces::new(pieces);
    let mut rec = Vec::new();
    for _ in 0..records {
        read_object(layout, record_type, &mut src, &mut rec).map_err(ReadError::Decode)?;
        f(&rec).map_err(ReadError::Visit)?;
    }
    Ok(())
}

/// Calls `f` on each of the block's `records` records, decoded from its bytes: the stored
/// `pieces` (chunks, then any bytes kept aside), then `pending` serializer bytes a compressing
/// stream had not flushed (a partial unroll).
pub fn decode<E>(
    format: &ValueFormat,
    records: u64,
    record_bytes: u64,
    pieces: &[&[u8]],
    pending: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let dec = |e: DecodeError| ReadError::Decode(e);
    match *format {
        ValueFormat::Raw => {
            let mut src = Pieces::new(pieces);
            let mut left = pieces.iter().map(|p| p.len() as u64).sum::<u64>();
            while left > 0 {
                let n = left.min(record_bytes);
                f(src.take(n as usize).map_err(dec)?).map_err(ReadError::Visit)?;
                left -= n;
            }
            Ok(())
        }
        ValueFormat::Objects {
            record_type,
            layout,
        } => decode_objects(&layout, record_type, records, pieces, f),
        ValueFormat::OneObject { layout } => {
            decode_objects(&layout, RecordType::Bytes, records, pieces, f)
        }
        ValueFormat::Serialized {
            record_type,
            serializer,
            codec,
        } => {
            let mut s = SerialBytes {
                src: Pieces::new(pieces),
                codec: codec.map(|c| (c, c.decompressor())),
                pending,
                pending_done: false,
                buf: Vec::new(),
                pos: 0,
                started: false,
            };
            let descriptors = java_pair_descriptors();
            let mut tmp = Vec::new();
            let mut rec = Vec::new();
            for i in 0..records {
                read_serialized(
                    record_type,
                    serializer,
                    i,
                    &descriptors,
                    &mut s,
                    &mut tmp,
                    &mut rec,
                )
                .map_err(dec)?;
                f(&rec).map_err(ReadError::Visit)?;
            }
            Ok(())
        }
    }
}

fn read_object(
    layout: &JvmLayout,
    record_type: RecordType,
    src: &mut Pieces<'_>,
    rec: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let read_byte_array = |src: &mut Pieces<'_>, rec: &mut Vec<u8>| -> Result<(), DecodeError> {
        let h = src.take(layout.array_header() as usize)?;
        let len = u32::from_le_bytes(h[h.len() - 4..].try_into().expect("4")) as u64;
        let body = src.take(align8(len) as usize)?;
        rec.clear();
        rec.extend_from_slice(&body[..len as usize]);
        Ok(())
    };
    match record_type {
        RecordType::Raw => bad("raw records are not objects"),
        RecordType::Bytes => read_byte_array(src, rec),
        RecordType::LongPair => {
            let o = src.take(layout.long_pair() as usize)?;
            rec.clear();
            rec.extend_from_slice(&o[o.len() - 16..]);
            Ok(())
        }
        RecordType::String => {
            src.take(layout.string_shell() as usize)?;
            read_byte_array(src, rec)
        }
    }
}

fn read_kryo_varint(s: &mut SerialBytes<'_>) -> Result<u32, DecodeError> {
    let mut v = 0u32;
    for shift in (0..35).step_by(7) {
        let b = s.byte()?;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bad("a varint longer than 5 bytes")
}

fn read_serialized(
    record_type: RecordType,
    serializer: SerializerKind,
    index: u64,
    descriptors: &[u8],
    s: &mut SerialBytes<'_>,
    tmp: &mut Vec<u8>,
    rec: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let expect = |s: &mut SerialBytes<'_>, tmp: &mut Vec<u8>, want: &[u8], what: &str| {
        s.take(want.len(), tmp)?;
        if tmp[..] != *want {
            return bad(format!("record {index}: not the expected {what}"));
        }
        Ok(())
    };
    let longs = |s: &mut SerialBytes<'_>, tmp: &mut Vec<u8>, rec: &mut Vec<u8>| {
        s.take(16, tmp)?;
        rec.clear();
        let a = u64::from_be_bytes(tmp[..8].try_into().expect("8"));
        let b = u64::from_be_bytes(tmp[8..].try_into().expect("8"));
        rec.extend_from_slice(&a.to_le_bytes());
        rec.extend_from_slice(&b.to_le_bytes());
        Ok::<(), DecodeError>(())
    };
    match (serializer, record_type) {
        (SerializerKind::Java, _) => {
            if index == 0 {
                expect(s, tmp, &[0xac, 0xed, 0x00, 0x05], "stream header")?;
            }
            expect(s, tmp, &[TC_OBJECT], "TC_OBJECT")?;
            if index.is_multiple_of(JAVA_RESET_EVERY) {
                expect(s, tmp, descriptors, "class descriptor")?;
            } else {
                let mut r = vec![TC_REFERENCE];
                r.extend_from_slice(&BASE_WIRE_HANDLE.to_be_bytes());
                expect(s, tmp, &r, "class reference")?;
            }
            expect(s, tmp, &[TC_NULL, TC_NULL], "Tuple2's null fields")?;
            longs(s, tmp, rec)?;
            if (index + 1).is_multiple_of(JAVA_RESET_EVERY) {
                expect(s, tmp, &[TC_RESET], "TC_RESET")?;
            }
            Ok(())
        }
        (SerializerKind::Kryo, t) => {
            let class = read_kryo_varint(s)?;
            let want = match t {
                RecordType::LongPair => KRYO_ID_TUPLE2_JJ,
                RecordType::String => KRYO_ID_STRING,
                _ => KRYO_ID_BYTE_ARRAY,
            } + 2;
            if class != want {
                return bad(format!(
                    "record {index}: Kryo class {class}, expected {want}"
                ));
            }
            expect(s, tmp, &[KRYO_NOT_NULL], "Kryo NOT_NULL")?;
            match t {
                RecordType::LongPair => longs(s, tmp, rec),
                RecordType::String => {
                    let first = s.byte()?;
                    rec.clear();
                    if first & 0x80 == 0 {
                        // ASCII: the last character carries the high bit.
                        let mut b = first;
                        loop {
                            rec.push(b & 0x7f);
                            if b & 0x80 != 0 {
                                break;
                            }
                            b = s.byte()?;
                        }
                        return Ok(());
                    }
                    let mut len = u32::from(first & 0x3f);
                    if first & 0x40 != 0 {
                        let mut shift = 6;
                        loop {
                            let b = s.byte()?;
                            len |= u32::from(b & 0x7f) << shift;
                            if b & 0x80 == 0 {
                                break;
                            }
                            shift += 7;
                        }
                    }
                    let chars = len.saturating_sub(1) as usize;
                    s.take(chars, tmp)?;
                    rec.extend_from_slice(tmp);
                    Ok(())
                }
                _ => {
                    let len = read_kryo_varint(s)?.saturating_sub(1) as usize;
                    s.take(len, tmp)?;
                    rec.clear();
                    rec.extend_from_slice(tmp);
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
