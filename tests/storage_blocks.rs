//! Block manager reads, damaged block files, clean-up and storage levels: every record read
//! back — from memory, from disk or recomputed — is the generator's (docs/reliability.md "Nothing
//! lost"); a damaged file is a typed error naming it, never wrong records (test plan item 13
//! at block level); nothing is left on disk (BlockManagerSuite "on-disk storage", "disk and
//! memory storage", "remove block", "removing rdd"); levels behave as docs/spark-model.md §7 says.

mod storage_support;

use std::path::PathBuf;

use spillway::spill::{FOOTER_BYTES, HEADER_BYTES, SpillError};
use spillway::storage::block_manager::{ReadFrom, StorageError};
use spillway::storage::{BlockId, StorageLevel};
use storage_support::*;

const BLOCK: u64 = 2_000_000;

/// BlockManagerSuite "disk and memory storage" / "in-memory LRU storage": each source gives
/// the generator's records and is counted once.
#[test]
fn reads_from_memory_disk_and_recompute_return_the_generated_records() {
    let f = fixture(&[]);
    let bm = f.ex.block_manager();
    let (m, d, r) = (rdd(1, 0), rdd(2, 0), rdd(3, 0));
    f.put(&m, StorageLevel::MEMORY_ONLY, &data(&m, BLOCK));
    f.put(&d, StorageLevel::DISK_ONLY, &data(&d, BLOCK));
    f.read_ok(
        &m,
        StorageLevel::MEMORY_ONLY,
        &data(&m, BLOCK),
        ReadFrom::Memory,
    );
    f.read_ok(
        &d,
        StorageLevel::DISK_ONLY,
        &data(&d, BLOCK),
        ReadFrom::Disk,
    );
    f.read_ok(
        &r,
        StorageLevel::MEMORY_ONLY,
        &data(&r, BLOCK),
        ReadFrom::Recomputed,
    );
    let c = bm.counters();
    assert_eq!((c.memory_hits, c.disk_hits, c.recomputes), (1, 1, 1));
    // The recompute cached it; DISK_ONLY stays on disk.
    f.read_ok(
        &r,
        StorageLevel::MEMORY_ONLY,
        &data(&r, BLOCK),
        ReadFrom::Memory,
    );
    f.read_ok(
        &d,
        StorageLevel::DISK_ONLY,
        &data(&d, BLOCK),
        ReadFrom::Disk,
    );
    assert!(!f.in_memory(&d));
    // A short last record and an empty partition come back too.
    let odd = rdd(4, 0);
    f.read_ok(
        &odd,
        StorageLevel::MEMORY_AND_DISK,
        &data(&odd, 12_345),
        ReadFrom::Recomputed,
    );
    f.read_ok(
        &odd,
        StorageLevel::MEMORY_AND_DISK,
        &data(&odd, 12_345),
        ReadFrom::Memory,
    );
    let empty = rdd(5, 0);
    f.put(&empty, StorageLevel::DISK_ONLY, &data(&empty, 0));
    f.read_ok(
        &empty,
        StorageLevel::DISK_ONLY,
        &data(&empty, 0),
        ReadFrom::Disk,
    );
    let c = bm.counters();
    assert_eq!((c.memory_hits, c.disk_hits, c.recomputes), (3, 3, 2));
}

/// BlockManagerSuite "disk and memory storage": a MEMORY_AND_DISK block evicted to disk reads
/// from disk, is cached again on the way, then reads from memory.
#[test]
fn evicted_memory_and_disk_block_reads_back_from_disk_then_memory() {
    let f = fixture(&[]);
    let l = StorageLevel::MEMORY_AND_DISK;
    let ids: Vec<BlockId> = (0..4).map(|i| rdd(10 + i, 0)).collect();
    for b in &ids {
        f.put(b, l, &data(b, BLOCK));
    }
    assert!(!f.in_memory(&ids[0]) && f.on_disk(&ids[0]));
    f.read_ok(&ids[0], l, &data(&ids[0], BLOCK), ReadFrom::Disk);
    assert!(f.in_memory(&ids[0]), "maybeCacheDiskValuesInMemory");
    assert!(!f.in_memory(&ids[1]) && f.on_disk(&ids[1]));
    f.read_ok(&ids[0], l, &data(&ids[0], BLOCK), ReadFrom::Memory);
    f.read_ok(&ids[1], l, &data(&ids[1], BLOCK), ReadFrom::Disk);
    for b in &ids {
        f.read_ok(
            b,
            l,
            &data(b, BLOCK),
            if f.in_memory(b) {
                ReadFrom::Memory
            } else {
                ReadFrom::Disk
            },
        );
    }
}

/// The file of a block on disk.
fn file_of(f: &Fixture, b: &BlockId) -> PathBuf {
    f.ex.block_manager().disk_store().block(b).unwrap().path
}

/// The read must fail with a spill error naming the file; never wrong records, never a panic.
fn expect_damage(f: &Fixture, b: &BlockId, level: StorageLevel, what: &str) -> SpillError {
    let path = file_of(f, b);
    match f.read(b, level, &data(b, BLOCK)) {
        Ok((from, d)) => {
            assert_eq!(
                d,
                digest(&data(b, BLOCK)),
                "{what}: wrong records from {from:?}"
            );
            panic!("{what}: damage not detected (read from {from:?})");
        }
        Err(StorageError::Spill(e)) => {
            assert_eq!(e.path(), Some(path.as_path()), "{what}: {e}");
            assert!(e.to_string().contains(&b.to_string()), "{what}: {e}");
            e
        }
        Err(e) => panic!("{what}: unexpected {e}"),
    }
}

/// docs/reliability.md test 13 at block level: a bit flipped in the header, a frame or the footer,
/// a cut file, an empty file — each read is a typed error naming the file.
#[test]
fn damaged_block_files_are_typed_errors() {
    let level = StorageLevel::DISK_ONLY;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("header bit", Box::new(|b: &mut Vec<u8>| b[9] ^= 0x10)),
        (
            "first frame bit",
            Box::new(|b: &mut Vec<u8>| b[HEADER_BYTES + 40] ^= 1),
        ),
        (
            "middle payload bit",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len() / 2;
                b[n] ^= 0x80
            }),
        ),
        (
            "last payload byte",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len() - FOOTER_BYTES - 1;
                b[n] ^= 4
            }),
        ),
        (
            "footer bit",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len() - 10;
                b[n] ^= 2
            }),
        ),
        (
            "cut by one byte",
            Box::new(|b: &mut Vec<u8>| {
                b.pop();
            }),
        ),
        (
            "cut in half",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
        ),
        (
            "cut after the header",
            Box::new(|b: &mut Vec<u8>| b.truncate(HEADER_BYTES)),
        ),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
    ];
    for (what, damage) in cases {
        let f = fixture(&[]);
        let b = rdd(1, 0);
        f.put(&b, level, &data(&b, BLOCK));
        let path = file_of(&f, &b);
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let e = expect_damage(&f, &b, level, what);
        assert!(
            matches!(
                e,
                SpillError::ChecksumMismatch { .. }
                    | SpillError::Truncated { .. }
                    | SpillError::Corrupt { .. }
                    | SpillError::BadFormat { .. }
            ),
            "{what}: {e:?}"
        );
        // Reading again is still an error, never the damaged records.
        expect_damage(&f, &b, level, what);
    }
}

/// A MEMORY_AND_DISK block read from a damaged file is cached again on the way
/// (maybeCacheDiskValuesInMemory): the read fails, and the records before the damage must not
/// be left in memory as if they were the whole block.
#[test]
fn damaged_disk_block_is_not_cached_in_memory() {
    let f = fixture(&[]);
    let level = StorageLevel::MEMORY_AND_DISK;
    let b = rdd(1, 0);
    f.put(&b, level, &data(&b, BLOCK));
    assert!(f.ex.block_manager().remove(&b));
    // Straight to disk (memory full of other RDDs' blocks would do the same).
    f.put(&b, StorageLevel::DISK_ONLY, &data(&b, BLOCK));
    let path = file_of(&f, &b);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    expect_damage(&f, &b, level, "payload bit, first read");
    assert!(
        !f.in_memory(&b),
        "a block cut short by damage was cached in memory"
    );
    assert_eq!(f.storage_used(spillway::memory::MemoryMode::OnHeap), 0);
    assert_eq!(
        f.store()
            .current_unroll_memory(spillway::memory::MemoryMode::OnHeap),
        0
    );
    expect_damage(&f, &b, level, "payload bit, second read");
}

/// Nothing left behind: the private directories go with the executor.
#[test]
fn private_dirs_are_removed_with_the_executor() {
    let f = fixture(&[]);
    for (i, level) in [StorageLevel::DISK_ONLY, StorageLevel::MEMORY_AND_DISK]
        .iter()
        .enumerate()
    {
        let b = rdd(1, i as u32);
        f.put(&b, *level, &data(&b, BLOCK));
    }
    let big = rdd(2, 0);
    f.put(&big, StorageLevel::MEMORY_AND_DISK, &data(&big, 12_000_000));
    // rdd_1_0 (DISK_ONLY), rdd_2_0 (too large, straight to disk) and rdd_1_1, which the
    // failing unroll of rdd_2_0 evicted to disk on its way.
    assert_eq!(f.ex.local_dirs().file_count(), 3);
    let dirs = f.private_dirs();
    assert_eq!(dirs.len(), 1);
    assert!(
        dirs[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("spillway-blockmgr-")
    );
    let Fixture { ex, local } = f;
    drop(ex);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert_eq!(std::fs::read_dir(local.path()).unwrap().count(), 0);
}

/// A put that fails — in memory (MEMORY_ONLY too large) and on disk (its sub-directory
/// cannot be created) — leaves no file, no storage or unroll memory; the directories still
/// go with the executor.
#[test]
fn failed_puts_leave_nothing_behind() {
    let f = fixture(&[]);
    let bm = f.ex.block_manager();
    let big = rdd(1, 0);
    let r = f.put(&big, StorageLevel::MEMORY_ONLY, &data(&big, 12_000_000));
    assert!(!r.in_memory && !r.on_disk);
    assert_eq!(f.ex.local_dirs().file_count(), 0);
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 0);
    assert_eq!(bm.rdd_storage(1).num_cached_partitions, 0);

    // The block's sub-directory is a file: the disk write fails with a typed error.
    let b = rdd(2, 0);
    let where_ = f.ex.local_dirs().file(&b.to_string()).unwrap();
    let sub = where_.parent().unwrap().to_path_buf();
    std::fs::remove_dir(&sub).unwrap();
    std::fs::write(&sub, b"in the way").unwrap();
    let task = f.ex.next_task_attempt_id();
    let err = bm
        .put_partition(
            &b,
            StorageLevel::MEMORY_AND_DISK,
            task,
            &data(&b, 12_000_000),
        )
        .unwrap_err();
    f.store().release_all_unroll_memory_for_task(task);
    assert!(err.to_string().contains("rdd_2_0"), "{err}");
    assert!(!f.on_disk(&b) && !f.in_memory(&b));
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 0);
    assert_eq!(
        f.store()
            .current_unroll_memory(spillway::memory::MemoryMode::OnHeap),
        0
    );
    assert_eq!(
        f.ex.local_dirs().file_count(),
        1,
        "only the file the test put in the way"
    );
    // The same block reads back by recomputing (its put fails again, visibly).
    assert!(
        f.read(&b, StorageLevel::MEMORY_AND_DISK, &data(&b, 12_000_000))
            .is_err()
    );
    let dirs = f.private_dirs();
    drop(f);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// BlockManagerSuite "removing block" / "removing rdd": removing a block deletes its file
/// and frees its memory; `remove_rdd` removes every block of the RDD and nothing else.
#[test]
fn remove_and_remove_rdd_delete_files_and_free_memory() {
    let f = fixture(&[]);
    let bm = f.ex.block_manager();
    let d = rdd(1, 0);
    f.put(&d, StorageLevel::DISK_ONLY, &data(&d, BLOCK));
    let path = file_of(&f, &d);
    assert!(path.exists());
    assert!(bm.remove(&d));
    assert!(!path.exists(), "removing a block left its file");
    assert!(!bm.remove(&d));

    // rdd 2: one in memory, one on disk, one in both (read back from disk into memory).
    let l = StorageLevel::MEMORY_AND_DISK;
    f.put(
        &rdd(2, 0),
        StorageLevel::MEMORY_ONLY,
        &data(&rdd(2, 0), BLOCK),
    );
    f.put(
        &rdd(2, 1),
        StorageLevel::DISK_ONLY,
        &data(&rdd(2, 1), BLOCK),
    );
    f.put(
        &rdd(2, 2),
        StorageLevel::DISK_ONLY,
        &data(&rdd(2, 2), BLOCK),
    );
    f.read_ok(&rdd(2, 2), l, &data(&rdd(2, 2), BLOCK), ReadFrom::Disk);
    assert!(f.in_memory(&rdd(2, 2)) && f.on_disk(&rdd(2, 2)));
    f.put(&rdd(3, 0), l, &data(&rdd(3, 0), 500_000));
    let files: Vec<PathBuf> = [rdd(2, 1), rdd(2, 2)]
        .iter()
        .map(|b| file_of(&f, b))
        .collect();
    let s = bm.rdd_storage(2);
    assert_eq!(
        (
            s.num_cached_partitions,
            s.partitions_in_memory,
            s.partitions_on_disk
        ),
        (3, 2, 2)
    );
    assert_eq!(bm.remove_rdd(2), 3);
    for b in [rdd(2, 0), rdd(2, 1), rdd(2, 2)] {
        assert!(!f.in_memory(&b) && !f.on_disk(&b), "{b}");
    }
    for p in files {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert_eq!(bm.rdd_storage(2), Default::default());
    assert!(f.in_memory(&rdd(3, 0)), "remove_rdd(2) removed rdd_3_0");
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 500_000);
    assert_eq!(f.ex.local_dirs().file_count(), 0);
    assert_eq!(bm.remove_rdd(2), 0);
}

/// Spec §7: DISK_ONLY writes straight to disk; NONE stores nothing (and consumes every
/// record); the replicated levels store one copy on a single executor.
#[test]
fn storage_levels() {
    let f = fixture(&[]);
    let bm = f.ex.block_manager();
    let dk = rdd(1, 0);
    let r = f.put(&dk, StorageLevel::DISK_ONLY, &data(&dk, BLOCK));
    assert!(r.on_disk && !r.in_memory);
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 0);
    assert_eq!(
        f.ex.block_manager()
            .disk_store()
            .block(&dk)
            .unwrap()
            .info
            .records,
        2000
    );

    let none = rdd(2, 0);
    let r = f.put(&none, StorageLevel::NONE, &data(&none, BLOCK));
    assert!(!r.on_disk && !r.in_memory);
    assert!(!f.in_memory(&none) && !f.on_disk(&none));
    f.read_ok(
        &none,
        StorageLevel::NONE,
        &data(&none, BLOCK),
        ReadFrom::Recomputed,
    );
    f.read_ok(
        &none,
        StorageLevel::NONE,
        &data(&none, BLOCK),
        ReadFrom::Recomputed,
    );
    assert_eq!(bm.rdd_storage(2).num_cached_partitions, 0);

    let files_before = f.ex.local_dirs().file_count();
    let replicated = [
        (rdd(3, 0), StorageLevel::MEMORY_ONLY_2, true, false),
        (rdd(3, 1), StorageLevel::MEMORY_ONLY_SER_2, true, false),
        (rdd(4, 0), StorageLevel::DISK_ONLY_2, false, true),
        (rdd(4, 1), StorageLevel::DISK_ONLY_3, false, true),
        (rdd(5, 0), StorageLevel::MEMORY_AND_DISK_2, true, false),
    ];
    for (b, l, mem, disk) in &replicated {
        let r = f.put(b, *l, &data(b, 500_000));
        assert_eq!((r.in_memory, r.on_disk), (*mem, *disk), "{b} {l}");
        f.read_ok(
            b,
            *l,
            &data(b, 500_000),
            if *mem {
                ReadFrom::Memory
            } else {
                ReadFrom::Disk
            },
        );
    }
    // One copy each: 3 blocks × 500,000 in memory, 2 files on disk.
    assert_eq!(f.ex.memory_manager().storage_memory_used(), 3 * 500_000);
    assert_eq!(f.ex.local_dirs().file_count(), files_before + 2);
    assert_eq!(bm.rdd_storage(3).memory_used, 2 * 500_000);
    assert_eq!(bm.rdd_storage(4).disk_used, 2 * 500_000);
}

/// An OFF_HEAP level with no off-heap memory (`spark.memory.offHeap.size` 0): the off-heap
/// storage limit is 0, so Spark's "Will not store" refuses the unroll and the block goes to
/// disk whole; reading it back from disk (`getLocalValues`), `putBytes` of its 2,000,000 bytes
/// is refused the same way (docs/spark-model.md §6.6).
#[test]
fn off_heap_level_without_off_heap_memory_goes_to_disk() {
    let f = fixture(&[]);
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&events);
    f.ex.memory_manager().set_event_sink(std::sync::Arc::new(
        move |e: &spillway::memory::MemoryEvent| sink.lock().unwrap().push(e.to_string()),
    ));
    let b = rdd(1, 0);
    let r = f.put(&b, StorageLevel::OFF_HEAP, &data(&b, BLOCK));
    assert!(!r.in_memory && r.on_disk);
    assert_eq!(
        events.lock().unwrap().as_slice(),
        [
            "Will not store rdd_1_0 as the required space (1048576 bytes) exceeds our memory limit (0 bytes)",
            "Will not store rdd_1_0 as the required space (2000000 bytes) exceeds our memory limit (0 bytes)"
        ]
    );
    f.read_ok(&b, StorageLevel::OFF_HEAP, &data(&b, BLOCK), ReadFrom::Disk);
}

/// A memory store whose range cannot place a second chunk (spillway's own failure mode: a
/// JVM would not fail there): the unroll stops, and a MEMORY_AND_DISK put must still write
/// every record to disk — none may be lost between memory and disk (docs/reliability.md "Nothing
/// lost"). The same for an OFF_HEAP level whose store has no off-heap arena.
#[test]
fn chunk_allocation_failure_loses_no_record() {
    use spillway::memory::{PoolSizes, UnifiedMemoryManager};
    use spillway::region::{Mapping, PageAllocator, ReleasePolicy};
    use spillway::storage::block_manager::BlockManager;
    use spillway::storage::disk::DiskBlockManager;
    use spillway::storage::memory_store::{MemoryStore, UnrollConf};
    use std::sync::Arc;

    let local = tempfile::tempdir().unwrap();
    let manager = Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(
        UNIFIED_BYTES,
        STORAGE_REGION_BYTES,
    )));
    // Room for one 1,048,000-byte chunk, not two.
    let range = Mapping::anonymous(3 << 19, "tiny").unwrap().whole();
    let alloc = Arc::new(PageAllocator::new(range, ReleasePolicy::ReturnToKernel).unwrap());
    let store = MemoryStore::new(Arc::clone(&manager), alloc, None, UnrollConf::default());
    let dirs = Arc::new(DiskBlockManager::new(&[local.path().to_path_buf()], 32 << 10).unwrap());
    let bm = BlockManager::new(Arc::clone(&store), dirs);
    for (b, level) in [
        (rdd(1, 0), StorageLevel::MEMORY_AND_DISK),
        (rdd(2, 0), StorageLevel::MEMORY_AND_DISK_SER),
        (rdd(3, 0), StorageLevel::OFF_HEAP),
    ] {
        let d = data(&b, 3_000_000);
        let report = bm.put_partition(&b, level, 0, &d).unwrap();
        assert!(!report.in_memory && report.on_disk, "{b}");
        assert_eq!(report.digest, digest(&d), "{b}");
        let info = bm.disk_store().block(&b).unwrap().info;
        assert_eq!(
            info.records,
            d.records(),
            "{b}: records lost on the way to disk"
        );
        let mut seen = spillway::spill::RecordDigest::default();
        let (from, got) = bm
            .get_or_compute(&b, level, 1, &d, &mut |r| seen.add(r))
            .unwrap();
        assert_eq!((from, got), (ReadFrom::Disk, digest(&d)), "{b}");
        store.release_all_unroll_memory_for_task(0);
        store.release_all_unroll_memory_for_task(1);
    }
    assert_eq!(manager.storage_memory_used(), 0);
}

/// Spark's `BlockManager.doPut`: a block that is already stored is not re-added (found by the
/// soak test: a second DISK_ONLY put of the same block failed with "File exists").
#[test]
fn putting_a_stored_block_again_keeps_the_first_copy() {
    let dir = tempfile::tempdir().unwrap();
    let conf = spillway::conf::SparkConf::new()
        .with("spark.executor.memory", "512m")
        .with("spark.local.dir", dir.path().to_str().unwrap());
    let layout = spillway::layout::Layout::from_conf(&conf, None).unwrap();
    let ex = spillway::executor::Executor::start(&layout, &conf).unwrap();
    let data = spillway::data::PartitionData::new(7, 1 << 20, 100);
    let block = spillway::storage::BlockId::Rdd {
        rdd_id: 9,
        split_index: 0,
    };
    for level in [
        spillway::storage::StorageLevel::DISK_ONLY,
        spillway::storage::StorageLevel::MEMORY_ONLY,
    ] {
        let first = ex
            .block_manager()
            .put_partition(&block, level, 1, &data)
            .unwrap();
        let again = ex
            .block_manager()
            .put_partition(&block, level, 2, &data)
            .unwrap();
        assert_eq!(first, again, "{level:?}");
        assert_eq!(ex.block_manager().rdd_storage(9).num_cached_partitions, 1);
        ex.block_manager().remove(&block);
    }
}
