//! Page allocator hot path: allocate + free of a pooled size (no syscall) against sizes that go
//! back to the free extents (and, under ReturnToKernel, through `madvise`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use spillway::region::{Mapping, PageAllocator, ReleasePolicy, os_page_size};

const MIB: u64 = 1 << 20;

fn allocator(policy: ReleasePolicy, pool_limit_bytes: u64) -> PageAllocator {
    let heap = Mapping::anonymous(256 * MIB, "heap").unwrap();
    PageAllocator::with_pool_limit(heap.whole().with_name("unified"), policy, pool_limit_bytes)
        .unwrap()
}

/// Allocates `size`, optionally writes one byte per OS page (so the cost of re-faulting pages
/// the kernel took back shows), and frees.
fn cycle(a: &PageAllocator, size: u64, write: bool) {
    let mut b = a.allocate(black_box(size)).unwrap();
    if write {
        let page = os_page_size() as usize;
        let s = b.as_mut_slice();
        for i in (0..s.len()).step_by(page) {
            s[i] = 1;
        }
    }
    drop(black_box(b));
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("page_alloc");
    let cases: [(&str, ReleasePolicy, u64, u64); 4] = [
        ("pooled_1MiB", ReleasePolicy::ReturnToKernel, 32 * MIB, MIB),
        (
            "unpooled_1MiB_return",
            ReleasePolicy::ReturnToKernel,
            0,
            MIB,
        ),
        ("unpooled_1MiB_keep", ReleasePolicy::Keep, 0, MIB),
        (
            "small_4KiB_return",
            ReleasePolicy::ReturnToKernel,
            32 * MIB,
            4096,
        ),
    ];
    for (name, policy, pool, size) in cases {
        for write in [false, true] {
            let a = allocator(policy, pool);
            cycle(&a, size, write); // warm: a pooled size is now in the pool
            let id = format!("{name}{}", if write { "_write_pages" } else { "" });
            g.bench_function(id, |bch| bch.iter(|| cycle(&a, size, write)));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
