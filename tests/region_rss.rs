//! Process-level RSS check of the page allocator: its own process, so no other test's memory
//! moves the numbers.

use spillway::region::{
    DEFAULT_POOL_LIMIT_BYTES, Mapping, PageAllocator, ReleasePolicy, process_rss_bytes,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn writing_a_gib_of_blocks_moves_process_rss_both_ways() {
    let heap = Mapping::anonymous(GIB + 64 * MIB, "heap").unwrap();
    let alloc = PageAllocator::new(
        heap.whole().with_name("unified"),
        ReleasePolicy::ReturnToKernel,
    )
    .unwrap();
    assert_eq!(alloc.pool_limit_bytes(), DEFAULT_POOL_LIMIT_BYTES);
    let before = process_rss_bytes().unwrap();

    let blocks: Vec<_> = (0..GIB / MIB)
        .map(|i| {
            let mut b = alloc.allocate(MIB).unwrap();
            b.fill((i % 251) as u8 + 1);
            b
        })
        .collect();
    let written = process_rss_bytes().unwrap();
    let rise = written.saturating_sub(before);
    assert!(
        rise.abs_diff(GIB) <= GIB / 20,
        "rss rose by {rise} bytes writing {GIB} bytes (before {before}, after {written})"
    );

    drop(blocks);
    alloc.trim();
    let after = process_rss_bytes().unwrap();
    assert!(
        after <= before + GIB / 20,
        "rss {after} bytes after freeing and trim, {before} bytes before (allowed 5% of {GIB})"
    );
    assert_eq!(alloc.free_bytes(), alloc.len());
}
