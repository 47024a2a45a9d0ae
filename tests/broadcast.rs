//! A broadcast as Spark stores it on an executor (docs/spark-model.md §22.4): its compressed
//! pieces with `putBytes` at MEMORY_AND_DISK_SER, its value with `putSingle` at
//! MEMORY_AND_DISK, whose one-element unroll asks for about 1.5 times the value. On the small
//! executor of `storage_support` (8 MiB unified, 1 core).

mod storage_support;

use spillway::conf::SparkConf;
use spillway::exit::{Exit, ExitStatus};
use spillway::memory::MemoryMode;
use spillway::scenario::Scenario;
use spillway::scheduler::run_stage;
use spillway::stage::{BroadcastConf, ClassifiedError, TaskOutput, broadcast_data, broadcast_task};
use spillway::storage::BlockId;
use spillway::storage::values::{JvmLayout, values_array_estimate};
use storage_support::{Fixture, UNIFIED_BYTES, fixture};

const SEED: u64 = 11;

/// The small executor with `extra` keys, and the broadcast settings they give.
fn setup(extra: &[(&str, &str)]) -> (Fixture, BroadcastConf) {
    let mut conf = SparkConf::new();
    for (k, v) in extra {
        conf = conf.with(k, v);
    }
    (fixture(extra), BroadcastConf::from_conf(&conf).unwrap())
}

/// Runs broadcast `id`'s read in one task; panics if it fails.
fn read(
    (f, conf): &(Fixture, BroadcastConf),
    id: u64,
    bytes: u64,
    record_bytes: u64,
) -> TaskOutput {
    let runs = run_stage(
        &f.ex,
        0,
        1,
        true,
        |ctx| -> Result<TaskOutput, ClassifiedError> {
            broadcast_task(ctx, id, bytes, record_bytes, conf, SEED)
        },
        |_| {},
    );
    let out = runs.into_iter().next().unwrap().result.unwrap();
    assert!(out.verified, "{:?}", out.kind_fields);
    out
}

fn field(o: &TaskOutput, name: &str) -> u64 {
    o.kind_fields[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}"))
}

fn flag(o: &TaskOutput, name: &str) -> bool {
    o.kind_fields[name]
        .as_bool()
        .unwrap_or_else(|| panic!("{name}"))
}

fn piece(id: u64, i: u64) -> BlockId {
    BlockId::BroadcastPiece {
        broadcast_id: id,
        piece: i as u32,
    }
}

fn value(id: u64) -> BlockId {
    BlockId::Broadcast { broadcast_id: id }
}

/// SizeEstimator's size of the stored value: `vector.toArray` (one slot) referencing an
/// `Array[Array[Byte]]` of the records.
fn value_size(bytes: u64, record_bytes: u64) -> u64 {
    let layout = JvmLayout::for_heap(16 << 20);
    let data = broadcast_data(SEED, 0, bytes, record_bytes);
    let sizes: Vec<u64> = (0..data.records())
        .map(|i| layout.byte_array(data.record_len(i) as u64))
        .collect();
    layout.ref_array(1) + values_array_estimate(&layout, &sizes)
}

fn storage_used(f: &Fixture) -> u64 {
    f.ex.memory_manager().storage_memory_used()
}

/// With room for everything, the pieces hold exactly their bytes of storage memory each (all
/// of `spark.broadcast.blockSize` but the last), the value its SizeEstimator size, and nothing
/// else is held after the task.
#[test]
fn pieces_and_value_hold_storage_memory() {
    let fx = setup(&[("spark.broadcast.blockSize", "256k")]);
    let f = &fx.0;
    let bytes = 2 << 20;
    let out = read(&fx, 0, bytes, 1000);
    let pieces = field(&out, "pieces");
    let piece_bytes = field(&out, "pieceBytes");
    assert_eq!(pieces, piece_bytes.div_ceil(256 << 10));
    assert!(pieces >= 2, "{:?}", out.kind_fields);
    assert_eq!(field(&out, "piecesInMemory"), pieces);
    assert_eq!(field(&out, "piecesOnDisk"), 0);
    let store = f.store();
    let mut held = 0;
    for i in 0..pieces {
        let size = store.size(&piece(0, i)).unwrap();
        if i + 1 < pieces {
            assert_eq!(size, 256 << 10, "piece {i}");
        }
        held += size;
    }
    assert_eq!(held, piece_bytes);
    assert!(flag(&out, "valueInMemory"));
    assert!(!flag(&out, "valueOnDisk"));
    let v = value_size(bytes, 1000);
    assert_eq!(store.size(&value(0)), Some(v));
    assert_eq!(field(&out, "valueMemoryBytes"), v);
    assert_eq!(storage_used(f), piece_bytes + v);
    assert_eq!(store.current_unroll_memory(MemoryMode::OnHeap), 0);
    assert_eq!(f.ex.local_dirs().file_count(), 0);
    // The text payload compresses: lz4's pieces are well under the value's bytes.
    assert_eq!(out.kind_fields["pieceCodec"], "lz4");
    assert!(piece_bytes < bytes * 3 / 4, "{piece_bytes} of {bytes}");
    // removeBroadcast frees it all.
    assert_eq!(
        f.ex.block_manager().remove_broadcast(0),
        pieces as usize + 1
    );
    assert_eq!(storage_used(f), 0);
}

/// Without compression the pieces are the serializer's stream itself: each element a Kryo
/// `byte[]` (class id, not-null mark, varint length + 1, the bytes), cut every 256 KiB.
#[test]
fn uncompressed_pieces_are_the_serialized_stream() {
    let fx = setup(&[
        ("spark.broadcast.blockSize", "256k"),
        ("spark.broadcast.compress", "false"),
    ]);
    let f = &fx.0;
    let out = read(&fx, 3, 2 << 20, 1000);
    // 2097 full elements of 1 + 1 + 2 + 1000 bytes, and one of 152 bytes (1 + 1 + 2 + 152).
    assert_eq!(field(&out, "pieceBytes"), 2097 * 1004 + 156);
    assert_eq!(field(&out, "pieces"), 9);
    assert_eq!(out.kind_fields["pieceCodec"], "none");
    assert_eq!(
        f.store().size(&piece(3, 8)),
        Some(2097 * 1004 + 156 - 8 * (256 << 10))
    );
}

/// The value's unroll asks for about 1.5 times the value: a 6 MiB value fits the 8 MiB of
/// storage by its size but not by its unroll, so it goes to disk; its pieces stay in memory.
#[test]
fn value_needs_one_and_a_half_times_its_size_to_unroll() {
    let fx = setup(&[("spark.broadcast.blockSize", "256k")]);
    let f = &fx.0;
    let bytes = 6 << 20;
    let v = value_size(bytes, 1000);
    assert!(v < UNIFIED_BYTES && v * 3 / 2 > UNIFIED_BYTES, "{v}");
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&events);
    f.ex.memory_manager().set_event_sink(std::sync::Arc::new(
        move |e: &spillway::memory::MemoryEvent| sink.lock().unwrap().push(e.to_string()),
    ));
    let out = read(&fx, 1, bytes, 1000);
    // One size check, after the whole value: SizeTrackingVector's estimate with the one element
    // (the vector's own 232 bytes, one queued sample of 32, its 64-slot array of 272, and the
    // value without `toArray`'s one-slot array) times 1.5, less the 1 MiB reserved first.
    let estimate = v - 24 + 232 + 32 + 272;
    let request = (estimate as f64 * 1.5 - (1 << 20) as f64) as u64;
    assert_eq!(
        events.lock().unwrap().as_slice(),
        [format!(
            "Will not store broadcast_1 as the required space ({request} bytes) exceeds our memory limit ({UNIFIED_BYTES} bytes)"
        )]
    );
    assert!(!flag(&out, "valueInMemory"), "{:?}", out.kind_fields);
    assert!(flag(&out, "valueOnDisk"));
    assert!(!flag(&out, "recachedFromDisk"));
    let pieces = field(&out, "pieces");
    assert_eq!(field(&out, "piecesInMemory"), pieces);
    assert_eq!(storage_used(f), field(&out, "pieceBytes"));
    assert_eq!(f.store().current_unroll_memory(MemoryMode::OnHeap), 0);
    // The value's block file and nothing else.
    assert_eq!(f.ex.local_dirs().file_count(), 1);
    f.ex.block_manager().remove_broadcast(1);
    assert_eq!(f.ex.local_dirs().file_count(), 0);
}

/// Under pressure the value's unroll evicts the broadcast's own pieces (blocks of no RDD),
/// least recently used first; each goes to disk (MEMORY_AND_DISK_SER), not away.
#[test]
fn the_value_evicts_pieces_to_disk() {
    let fx = setup(&[("spark.broadcast.blockSize", "256k")]);
    let f = &fx.0;
    let bytes = 4608 << 10;
    let v = value_size(bytes, 1000);
    let out = read(&fx, 2, bytes, 1000);
    let pieces = field(&out, "pieces");
    let piece_bytes = field(&out, "pieceBytes");
    // The pieces and the value's 1.5x unroll do not fit together; the value alone does.
    assert!(
        piece_bytes + v * 3 / 2 > UNIFIED_BYTES && v * 3 / 2 < UNIFIED_BYTES,
        "{piece_bytes} {v}"
    );
    assert!(flag(&out, "valueInMemory"), "{:?}", out.kind_fields);
    let on_disk = field(&out, "piecesOnDisk");
    assert!(on_disk >= 1, "{:?}", out.kind_fields);
    assert_eq!(field(&out, "piecesInMemory") + on_disk, pieces);
    let store = f.store();
    let disk = f.ex.block_manager().disk_store();
    let mut in_memory = 0;
    for i in 0..pieces {
        let (m, d) = (store.size(&piece(2, i)), disk.contains(&piece(2, i)));
        assert!(m.is_some() != d, "piece {i} is in exactly one place");
        in_memory += m.unwrap_or(0);
    }
    assert_eq!(storage_used(f), v + in_memory);
    assert_eq!(f.ex.local_dirs().file_count() as u64, on_disk);
    assert!(f.ex.block_manager().counters().blocks_dropped_to_disk >= on_disk);
    f.ex.block_manager().remove_broadcast(2);
    assert_eq!((storage_used(f), f.ex.local_dirs().file_count()), (0, 0));
}

/// A broadcast bigger than storage: later pieces evict earlier ones to disk, the value goes to
/// disk, and the task still reads it all back correctly.
#[test]
fn a_broadcast_too_big_for_storage_ends_on_disk() {
    let fx = setup(&[
        ("spark.broadcast.blockSize", "1m"),
        ("spark.broadcast.compress", "false"),
    ]);
    let f = &fx.0;
    let out = read(&fx, 4, 12 << 20, 4096);
    let pieces = field(&out, "pieces");
    assert_eq!(pieces, field(&out, "pieceBytes").div_ceil(1 << 20));
    assert!(field(&out, "piecesOnDisk") >= 4, "{:?}", out.kind_fields);
    assert_eq!(
        field(&out, "piecesInMemory") + field(&out, "piecesOnDisk"),
        pieces
    );
    assert!(!flag(&out, "valueInMemory"));
    assert!(flag(&out, "valueOnDisk"));
    assert!(storage_used(f) <= UNIFIED_BYTES);
    f.ex.block_manager().remove_broadcast(4);
    assert_eq!(f.ex.local_dirs().file_count(), 0);
}

/// An executor that holds the value reads it and fetches no piece (`getLocalValues`).
#[test]
fn a_second_read_uses_the_stored_value() {
    let fx = setup(&[]);
    let f = &fx.0;
    let first = read(&fx, 5, 1 << 20, 512);
    assert_eq!(field(&first, "pieces"), 1);
    let used = storage_used(f);
    let again = read(&fx, 5, 1 << 20, 512);
    assert_eq!(field(&again, "pieces"), 0);
    assert!(flag(&again, "valueInMemory"));
    assert_eq!(storage_used(f), used);
}

/// A storage level other than MEMORY_AND_DISK is refused, naming key and value (exit 2).
#[test]
fn other_storage_levels_are_refused() {
    for level in ["MEMORY_ONLY", "DISK_ONLY", "MEMORY_AND_DISK_SER"] {
        let text = format!("[[stages]]\nkind = \"broadcast\"\nstorage_level = \"{level}\"\n");
        let e = Scenario::parse(&text, "test", None).unwrap_err();
        assert_eq!(e.exit_status(), ExitStatus::BadInput);
        let msg = e.to_string();
        assert!(
            msg.contains("'storage_level'")
                && msg.contains(&format!("\"{level}\""))
                && msg.contains("always stored at MEMORY_AND_DISK"),
            "{msg}"
        );
    }
    let text = "[[stages]]\nkind = \"broadcast\"\nstorage_level = \"MEMORY_AND_DISK\"\n";
    Scenario::parse(text, "test", None).unwrap();
}
