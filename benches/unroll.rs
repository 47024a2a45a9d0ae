//! Unroll: `MemoryStore::put_records` with Spark's thresholds (1 MiB initial, check every 16
//! records, growth 1.5), a success into storage memory and a failure that keeps the unrolled
//! prefix until it is dropped. Warm: the allocator's pool and pages are reused across
//! iterations.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway::data::PartitionData;
use spillway::memory::{PoolSizes, UnifiedMemoryManager};
use spillway::region::{Mapping, PageAllocator, ReleasePolicy};
use spillway::storage::memory_store::{MemoryStore, PutOutcome, UnrollConf};
use spillway::storage::{BlockId, StorageLevel};

const MIB: u64 = 1 << 20;

fn store(unified: u64) -> Arc<MemoryStore> {
    let manager = Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(
        unified,
        unified / 2,
    )));
    let mapping = Mapping::anonymous(2 * unified + 64 * MIB, "bench").unwrap();
    let alloc =
        Arc::new(PageAllocator::new(mapping.whole(), ReleasePolicy::ReturnToKernel).unwrap());
    MemoryStore::new(manager, alloc, None, UnrollConf::default())
}

fn bench(c: &mut Criterion) {
    let block = BlockId::Rdd {
        rdd_id: 1,
        split_index: 0,
    };
    let mut g = c.benchmark_group("unroll");
    g.sample_size(20);
    for (name, bytes, record) in [
        ("success_1MiB_56B", MIB, 56),
        ("success_16MiB_56B", 16 * MIB, 56),
        ("success_16MiB_1KiB", 16 * MIB, 1024),
    ] {
        let s = store(64 * MIB);
        let data = PartitionData::new(1, bytes, record);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut src = data.iter();
                match s.put_records(&block, StorageLevel::MEMORY_ONLY, 0, record, &mut src) {
                    PutOutcome::Stored { .. } => {}
                    PutOutcome::Failed(_) => panic!("unroll failed"),
                }
                s.release_all_unroll_memory_for_task(0);
                s.remove(&block);
            })
        });
    }
    // 32 MiB into 16 MiB of unified memory: unrolling stops at the limit and the partial block
    // releases its unroll memory on drop.
    let s = store(16 * MIB);
    let data = PartitionData::new(1, 32 * MIB, 56);
    g.throughput(Throughput::Bytes(32 * MIB));
    g.bench_function("failure_32MiB_into_16MiB", |b| {
        b.iter(|| {
            let mut src = data.iter();
            match s.put_records(&block, StorageLevel::MEMORY_ONLY, 0, 56, &mut src) {
                PutOutcome::Stored { .. } => panic!("should not fit"),
                PutOutcome::Failed(p) => drop(p),
            }
            s.release_all_unroll_memory_for_task(0);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
