//! `broadcast`: an executor's first read of a broadcast variable, as Spark's
//! `TorrentBroadcast.readBroadcastBlock` does it (docs/spark-model.md §22.4).
//!
//! The value is an `Array[Array[Byte]]` of `bytes` bytes in records of `record_bytes`, each a
//! key and text-like words (a lookup table: it compresses as real data does). The driver's side
//! (`blockifyObject`) serializes it, compresses it with `spark.io.compression.codec` when
//! `spark.broadcast.compress`, and cuts the stream into pieces of `spark.broadcast.blockSize`.
//! The task then fetches the pieces in a seeded random order and stores each with `putBytes` at
//! MEMORY_AND_DISK_SER (exactly its size of storage memory, or a block file when memory
//! refuses), decodes the value from the stored pieces and checks it against the generated
//! records (`unBlockifyObject`), and stores the value with `putSingle` at MEMORY_AND_DISK: a
//! one-element unroll whose one size check asks for about 1.5 times the value. An executor
//! that already holds the value reads it and fetches nothing.

use super::{
    ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT, RunContext, Stage, StageTaskRun,
    TaskOutput, Tasks, Values, recache_fields,
};
use crate::codec::Codec;
use crate::conf::{ConfError, SparkConf, keys};
use crate::data::{PartitionData, RecordSource, RecordType, splitmix64, stream_seed};
use crate::ids::BlockId;
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;
use crate::storage::StorageLevel;
use crate::storage::block_manager::{BlockManager, StorageError};
use crate::storage::memory_store::ReadGuard;
use crate::storage::values::{Encoder, ReadError, SerializerKind, ValueFormat, decode};

pub static KIND: KindDef = KindDef {
    name: "broadcast",
    summary: "the first read of a broadcast variable: one task fetches its pieces, stores them (MEMORY_AND_DISK_SER) and its value (MEMORY_AND_DISK)",
    keys: &[
        Key {
            name: "id",
            ty: KeyType::Int {
                min: 0,
                max: MAX_COUNT,
            },
            default: Some("0"),
            doc: "the broadcast id",
        },
        Key {
            name: "bytes",
            ty: KeyType::Size {
                min: 1,
                max: MAX_COUNT as u64,
            },
            default: Some("32m"),
            doc: "the bytes of the value's elements (an `Array[Array[Byte]]`)",
        },
        Key {
            name: "record_bytes",
            ty: KeyType::Size {
                min: 8,
                max: MAX_COUNT as u64,
            },
            default: Some("1024"),
            doc: "bytes per element of the value (at most 64 MiB and the heap)",
        },
        Key {
            name: "storage_level",
            ty: KeyType::Level,
            default: Some("MEMORY_AND_DISK"),
            doc: "only `\"MEMORY_AND_DISK\"`: Spark stores a broadcast's value at it and its pieces at MEMORY_AND_DISK_SER, whatever the job asks",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    let given = v.text("storage_level")?.unwrap_or_default();
    let level = v.level("storage_level")?;
    if level != StorageLevel::MEMORY_AND_DISK {
        return Err(KeyError {
            key: "storage_level".into(),
            value: toml::Value::String(given).to_string(),
            reason: "a broadcast's value is always stored at MEMORY_AND_DISK and its pieces at \
                     MEMORY_AND_DISK_SER (Spark's TorrentBroadcast); leave the key out"
                .into(),
        });
    }
    Ok(Box::new(Broadcast {
        id: v.int("id")?,
        bytes: v.size("bytes")?,
        record_bytes: v.size("record_bytes")?,
    }))
}

#[derive(Debug)]
struct Broadcast {
    id: u64,
    bytes: u64,
    record_bytes: u64,
}

impl Stage for Broadcast {
    fn record_bytes(&self) -> Option<u64> {
        Some(self.record_bytes)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        self.bytes
    }

    fn label(&self) -> String {
        format!("broadcast {}", self.id)
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        let seed = run.seed;
        let conf = BroadcastConf::from_conf(run.conf).map_err(|e| e.to_string());
        Tasks {
            count: 1,
            body: Box::new(move |_, ctx| {
                let conf = conf
                    .as_ref()
                    .map_err(|e| ClassifiedError::new("IllegalArgumentException", e))?;
                broadcast_task(ctx, self.id, self.bytes, self.record_bytes, conf, seed)
            }),
        }
    }

    /// The task's pieces and value (one task), and whether the value was cached again from
    /// disk.
    fn report_fields(&self, runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        let mut m = recache_fields(runs);
        if let Some(o) = runs.iter().find_map(|r| r.result.as_ref().ok()) {
            for key in PIECE_AND_VALUE_FIELDS {
                if let Some(v) = o.kind_fields.get(*key) {
                    m.insert((*key).into(), v.clone());
                }
            }
        }
        m
    }
}

/// The task's fields the stage reports too.
const PIECE_AND_VALUE_FIELDS: &[&str] = &[
    "pieces",
    "pieceBytes",
    "piecesInMemory",
    "piecesOnDisk",
    "pieceCodec",
    "valueInMemory",
    "valueOnDisk",
    "valueMemoryBytes",
];

/// How a broadcast is cut and compressed: `spark.broadcast.blockSize` and
/// `spark.broadcast.compress` with `spark.io.compression.codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastConf {
    /// Bytes of a piece (the last may be shorter).
    pub block_bytes: u64,
    /// The codec of the pieces; `None` when `spark.broadcast.compress=false`.
    pub codec: Option<Codec>,
}

impl BroadcastConf {
    /// From the configuration (`TorrentBroadcast.setConf`).
    pub fn from_conf(conf: &SparkConf) -> Result<BroadcastConf, ConfError> {
        let block_kib = conf.get_size(keys::BROADCAST_BLOCK_SIZE)?;
        let codec = if conf.get_bool(keys::BROADCAST_COMPRESS)? {
            Some(Codec::from_conf(conf)?)
        } else {
            None
        };
        Ok(BroadcastConf {
            block_bytes: block_kib as u64 * 1024,
            codec,
        })
    }

    /// The stream the pieces are cut from: the value's elements as Kryo writes `byte[]`s,
    /// through the codec.
    fn stream_format(&self) -> ValueFormat {
        ValueFormat::Serialized {
            record_type: RecordType::Bytes,
            serializer: SerializerKind::Kryo,
            codec: self.codec,
        }
    }
}

/// The records of broadcast `id`'s value: text-like `byte[]` elements.
pub fn broadcast_data(seed: u64, id: u64, bytes: u64, record_bytes: u64) -> PartitionData {
    PartitionData::new(stream_seed(seed, u64::MAX - id, 0), bytes, record_bytes)
        .with_record_type(RecordType::Bytes)
        .with_text_payload()
}

/// The block of piece `i` of broadcast `id`.
pub fn piece_block(id: u64, piece: u32) -> BlockId {
    BlockId::BroadcastPiece {
        broadcast_id: id,
        piece,
    }
}

/// An executor's first read of broadcast `id` (`readBroadcastBlock`): fetch and store its
/// pieces, decode the value from them, store the value. Its report fields say how many pieces
/// there were, their bytes, and where pieces and value are at the task's end.
pub fn broadcast_task(
    ctx: &TaskContext,
    id: u64,
    bytes: u64,
    record_bytes: u64,
    conf: &BroadcastConf,
    seed: u64,
) -> Result<TaskOutput, ClassifiedError> {
    let bm = ctx.executor.block_manager();
    let value = BlockId::Broadcast { broadcast_id: id };
    let data = broadcast_data(seed, id, bytes, record_bytes);
    let held = bm.memory_store().contains(&value) || bm.disk_store().contains(&value);
    let mut fetched: Option<(Vec<u64>, RecordDigest)> = None;
    if !held {
        // The driver's side, `blockifyObject`: what the task fetches.
        let (mut remote, generated) = blockify(&data, conf)?;
        let sizes: Vec<u64> = remote.iter().map(|p| p.len() as u64).collect();
        // `readBlocks`: the pieces in a random order (seeded here), each stored as fetched.
        let order = fetch_order(remote.len(), stream_seed(seed, id, 1));
        for &pid in &order {
            let block = piece_block(id, pid as u32);
            let piece = std::mem::take(&mut remote[pid]);
            let put = bm.put_bytes(&block, StorageLevel::MEMORY_AND_DISK_SER, &piece)?;
            if !put.in_memory && !put.on_disk {
                return Err(ClassifiedError::new(
                    "SparkException",
                    format!("Failed to store {block} of {value} in local BlockManager"),
                ));
            }
        }
        drop(remote);
        // `unBlockifyObject`: the value decoded from the stored pieces.
        let decoded = unblockify(bm, id, &order, conf, &data)?;
        if decoded != generated {
            return Err(StorageError::Mismatch {
                block: value.clone(),
                from: "its pieces",
                detail: format!(
                    "{} records with hash sum {:#x} decoded, {} with {:#x} generated",
                    decoded.records, decoded.hash_sum, generated.records, generated.hash_sum
                ),
            }
            .into());
        }
        fetched = Some((sizes, decoded));
    }
    // `putSingle(broadcast_<id>, value, MEMORY_AND_DISK)`.
    let report = bm.put_single(&value, ctx.task_attempt_id, &data)?;
    let store = bm.memory_store();
    let disk = bm.disk_store();
    let mut f = serde_json::Map::new();
    let (sizes, decoded) = fetched.unwrap_or_default();
    let pieces = (0..sizes.len() as u32).map(|i| piece_block(id, i));
    f.insert("pieces".into(), sizes.len().into());
    f.insert("pieceBytes".into(), sizes.iter().sum::<u64>().into());
    f.insert(
        "piecesInMemory".into(),
        pieces.clone().filter(|b| store.contains(b)).count().into(),
    );
    f.insert(
        "piecesOnDisk".into(),
        pieces.filter(|b| disk.contains(b)).count().into(),
    );
    f.insert(
        "pieceCodec".into(),
        conf.codec.map_or("none", |c| c.name.short_name()).into(),
    );
    f.insert("valueInMemory".into(), store.contains(&value).into());
    f.insert("valueOnDisk".into(), disk.contains(&value).into());
    f.insert(
        "valueMemoryBytes".into(),
        store.size(&value).unwrap_or(0).into(),
    );
    f.insert("recachedFromDisk".into(), report.recached_from_disk.into());
    f.insert(
        "valueFormat".into(),
        ValueFormat::OneObject {
            layout: bm.values_conf().layout,
        }
        .describe()
        .into(),
    );
    let verified = report.digest.records == data.records() && (held || decoded == report.digest);
    Ok(TaskOutput {
        records_in: report.digest.records,
        records_out: report.digest.records,
        digest_in: report.digest,
        digest_out: report.digest,
        verified,
        kind_fields: f,
        ..TaskOutput::default()
    })
}

/// `blockifyObject`: the value's elements serialized (and compressed) into one stream, cut into
/// pieces of the block size; with the digest of the records generated.
fn blockify(
    data: &PartitionData,
    conf: &BroadcastConf,
) -> Result<(Vec<Vec<u8>>, RecordDigest), ClassifiedError> {
    let block = conf.block_bytes as usize;
    let mut encoder = Encoder::new(conf.stream_format());
    let mut stream = Vec::new();
    let mut pieces = Vec::new();
    let mut digest = RecordDigest::default();
    let cut = |stream: &mut Vec<u8>, pieces: &mut Vec<Vec<u8>>, last: bool| {
        while stream.len() >= block || (last && !stream.is_empty()) {
            let rest = stream.split_off(block.min(stream.len()));
            pieces.push(std::mem::replace(stream, rest));
        }
    };
    let mut records = data.iter();
    while let Some(r) = records.next_record() {
        if digest.records.is_multiple_of(crate::interrupt::CHECK_EVERY) {
            crate::interrupt::check()?;
        }
        digest.add(r);
        encoder.push(r, &mut stream);
        cut(&mut stream, &mut pieces, false);
    }
    encoder.finish(&mut stream);
    cut(&mut stream, &mut pieces, true);
    Ok((pieces, digest))
}

/// A seeded permutation of `0..n` (Fisher–Yates): `readBlocks`' `Random.shuffle`.
fn fetch_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Where a piece's bytes are read from for decoding.
enum PieceBytes {
    Memory(ReadGuard),
    Disk(Vec<u8>),
}

/// `unBlockifyObject`: decodes the value's records from its stored pieces (in memory, read in
/// fetch order as Spark's reads leave them least recently used first; or read back from their
/// block files) and returns their digest.
fn unblockify(
    bm: &BlockManager,
    id: u64,
    order: &[usize],
    conf: &BroadcastConf,
    data: &PartitionData,
) -> Result<RecordDigest, ClassifiedError> {
    let mut pieces: Vec<Option<PieceBytes>> = (0..order.len()).map(|_| None).collect();
    for &pid in order {
        let block = piece_block(id, pid as u32);
        let bytes = if let Some(guard) = bm.memory_store().get(&block) {
            PieceBytes::Memory(guard)
        } else if let Some(reader) = bm.disk_store().get(&block) {
            let mut reader = reader.map_err(StorageError::from)?;
            let mut buf = Vec::new();
            while let Some(r) = reader.next_record().map_err(StorageError::from)? {
                buf.extend_from_slice(r);
            }
            PieceBytes::Disk(buf)
        } else {
            return Err(ClassifiedError::new(
                "SparkException",
                format!("Failed to get {block} of broadcast_{id}"),
            ));
        };
        pieces[pid] = Some(bytes);
    }
    let slices: Vec<&[u8]> = pieces
        .iter()
        .flat_map(|p| match p.as_ref().expect("every piece was read") {
            PieceBytes::Memory(g) => g.stored_bytes(),
            PieceBytes::Disk(b) => vec![&b[..]],
        })
        .collect();
    let mut digest = RecordDigest::default();
    decode(
        &conf.stream_format(),
        data.records(),
        data.record_bytes(),
        &slices,
        &[],
        |r| {
            if digest.records.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                crate::interrupt::check()?;
            }
            digest.add(r);
            Ok::<(), crate::interrupt::Interrupted>(())
        },
    )
    .map_err(|e| match e {
        ReadError::Decode(d) => ClassifiedError::from(StorageError::Mismatch {
            block: BlockId::Broadcast { broadcast_id: id },
            from: "its pieces",
            detail: format!("they do not decode: {d}"),
        }),
        ReadError::Visit(i) => ClassifiedError::from(i),
    })?;
    Ok(digest)
}
