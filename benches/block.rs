//! Block manager: put a partition into the memory store, read it back, and evict it to disk.
//!
//! Each case uses a fresh unified region of its own (storage region 0, so execution can evict
//! every cached byte), over a ReturnToKernel page allocator as an executor has by default.
//! `put` and `get` are warm (the pages were written by the previous iteration and the
//! allocator's pool keeps 1 MiB chunks); `evict_to_disk` writes the block file through the
//! page cache (no fsync: as Spark's DiskStore; `spillway bench` measures the synced case).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway::data::PartitionData;
use spillway::memory::{MemoryMode, PoolSizes, UnifiedMemoryManager};
use spillway::region::{Mapping, PageAllocator, ReleasePolicy};
use spillway::storage::block_manager::{BlockManager, ReadFrom};
use spillway::storage::disk::DiskBlockManager;
use spillway::storage::memory_store::{MemoryStore, UnrollConf};
use spillway::storage::{BlockId, StorageLevel};

const MIB: u64 = 1 << 20;
const BLOCK_BYTES: u64 = 16 * MIB;
const RECORD_BYTES: u64 = 56;

struct Rig {
    manager: Arc<UnifiedMemoryManager>,
    store: Arc<MemoryStore>,
    bm: Arc<BlockManager>,
    unified: u64,
    _local: tempfile::TempDir,
}

fn rig() -> Rig {
    let unified = 4 * BLOCK_BYTES;
    let manager = Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(unified, 0)));
    let mapping = Mapping::anonymous(2 * unified + 64 * MIB, "bench").unwrap();
    let alloc =
        Arc::new(PageAllocator::new(mapping.whole(), ReleasePolicy::ReturnToKernel).unwrap());
    let store = MemoryStore::new(Arc::clone(&manager), alloc, None, UnrollConf::default());
    let local = tempfile::tempdir().unwrap();
    let dirs = Arc::new(DiskBlockManager::new(&[local.path().to_path_buf()], 32 << 10).unwrap());
    let bm = BlockManager::new(Arc::clone(&store), dirs);
    Rig {
        manager,
        store,
        bm,
        unified,
        _local: local,
    }
}

fn block(i: u32) -> BlockId {
    BlockId::Rdd {
        rdd_id: 1,
        split_index: i,
    }
}

fn bench(c: &mut Criterion) {
    let data = PartitionData::new(7, BLOCK_BYTES, RECORD_BYTES);
    let mut g = c.benchmark_group("block");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(BLOCK_BYTES));

    let r = rig();
    g.bench_function("put_memory_only_16MiB", |b| {
        b.iter(|| {
            let rep =
                r.bm.put_partition(&block(0), StorageLevel::MEMORY_ONLY, 0, &data)
                    .unwrap();
            assert!(rep.in_memory);
            r.store.release_all_unroll_memory_for_task(0);
            r.bm.remove(&block(0));
        })
    });

    r.bm.put_partition(&block(0), StorageLevel::MEMORY_ONLY, 0, &data)
        .unwrap();
    r.store.release_all_unroll_memory_for_task(0);
    g.bench_function("get_memory_16MiB", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            let (from, _) =
                r.bm.get_or_compute(&block(0), StorageLevel::MEMORY_ONLY, 1, &data, &mut |rec| {
                    sum = sum.wrapping_add(rec[0] as u64)
                })
                .unwrap();
            assert_eq!(from, ReadFrom::Memory);
            black_box(sum)
        })
    });
    r.bm.remove(&block(0));

    // Eviction: cache a MEMORY_AND_DISK block (untimed), then time one execution acquire of
    // the whole region, which drops the block to disk through the block manager.
    g.bench_function("evict_to_disk_16MiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                r.bm.put_partition(&block(1), StorageLevel::MEMORY_AND_DISK, 0, &data)
                    .unwrap();
                r.store.release_all_unroll_memory_for_task(0);
                let t = Instant::now();
                let got = r
                    .manager
                    .acquire_execution_memory(r.unified, 2, MemoryMode::OnHeap);
                total += t.elapsed();
                assert_eq!(got, r.unified);
                assert!(r.bm.disk_store().contains(&block(1)));
                r.manager.release_all_execution_memory_for_task(2);
                r.bm.remove(&block(1));
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
