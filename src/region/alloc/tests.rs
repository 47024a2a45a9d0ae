//! Unit tests of the page allocator: packing, coalescing, pool, release, and a proptest model.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::region::Mapping;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn allocator(len: u64, policy: ReleasePolicy, pool_limit_bytes: u64) -> PageAllocator {
    let map = Mapping::anonymous(len, "heap").unwrap();
    PageAllocator::with_pool_limit(map.whole().with_name("unified"), policy, pool_limit_bytes)
        .unwrap()
}

#[test]
fn neighbours_coalesce_into_one_extent() {
    let a = allocator(MIB, ReleasePolicy::Keep, 0);
    let b0 = a.allocate(1000).unwrap();
    let b1 = a.allocate(1000).unwrap();
    let b2 = a.allocate(1000).unwrap();
    assert_eq!((b0.offset(), b1.offset(), b2.offset()), (0, 1024, 2048));
    assert_eq!(b1.footprint_bytes(), 1024);
    assert_eq!(a.allocated_bytes(), 3 * KIB);
    drop(b1);
    assert_eq!(a.extents(), vec![(1024, 1024), (3 * KIB, MIB - 3 * KIB)]);
    drop(b0);
    assert_eq!(a.extents(), vec![(0, 2 * KIB), (3 * KIB, MIB - 3 * KIB)]);
    // Best fit: a 2 KiB request takes the 2 KiB hole, not the big tail.
    let b3 = a.allocate(2 * KIB).unwrap();
    assert_eq!(b3.offset(), 0);
    drop(b3);
    drop(b2);
    assert_eq!(a.extents(), vec![(0, MIB)]);
    assert_eq!(
        (a.free_bytes(), a.allocated_bytes(), a.largest_free_extent()),
        (MIB, 0, MIB)
    );
    a.check_invariants();
}

#[test]
fn packs_a_range_to_its_last_granule() {
    let a = allocator(MIB, ReleasePolicy::Keep, 0);
    let mut blocks: Vec<_> = (0..MIB / 64 - 1).map(|_| a.allocate(64).unwrap()).collect();
    assert_eq!(a.free_bytes(), 64);
    blocks.push(a.allocate(1).unwrap());
    assert_eq!((a.free_bytes(), a.allocated_bytes()), (0, MIB));
    let err = a.allocate(1).unwrap_err();
    assert_eq!(
        (err.requested, err.free_bytes, err.largest_free_extent),
        (1, 0, 0)
    );
    a.check_invariants();
    drop(blocks);
    assert_eq!(a.extents(), vec![(0, MIB)]);
}

#[test]
fn odd_length_range_uses_its_short_tail() {
    let a = allocator(1000, ReleasePolicy::ReturnToKernel, 0);
    let head = a.allocate(960).unwrap();
    let tail = a.allocate(40).unwrap();
    assert_eq!(
        (tail.offset(), tail.footprint_bytes(), a.free_bytes()),
        (960, 40, 0)
    );
    assert!(a.allocate(1).is_err());
    drop((head, tail));
    assert_eq!(a.extents(), vec![(0, 1000)]);
    a.check_invariants();
}

#[test]
fn fragmentation_refusal_reports_the_numbers() {
    let a = allocator(8 * MIB, ReleasePolicy::ReturnToKernel, 0);
    let mut blocks: Vec<_> = (0..8).map(|_| Some(a.allocate(MIB).unwrap())).collect();
    for i in (1..8).step_by(2) {
        blocks[i] = None;
    }
    let err = a.allocate(2 * MIB).unwrap_err();
    assert_eq!(
        err,
        AllocError {
            range: "unified",
            requested: 2 * MIB,
            free_bytes: 4 * MIB,
            largest_free_extent: MIB,
            range_len: 8 * MIB,
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot allocate 2097152 bytes in range 'unified' of 8388608 bytes: 4194304 bytes free, \
         largest free extent 1048576 bytes"
    );
    a.check_invariants();
}

#[test]
fn pool_reuses_without_touching_free_extents() {
    let a = allocator(
        64 * MIB,
        ReleasePolicy::ReturnToKernel,
        DEFAULT_POOL_LIMIT_BYTES,
    );
    let mut b = a.allocate(MIB).unwrap();
    b.fill(7);
    let offset = b.offset();
    drop(b);
    assert_eq!(
        (a.pooled_bytes(), a.free_bytes(), a.allocated_bytes()),
        (MIB, 63 * MIB, 0)
    );
    let b = a.allocate(MIB - 10).unwrap(); // same footprint: a pool hit
    assert_eq!(b.offset(), offset);
    assert_eq!((a.pooled_bytes(), a.free_bytes()), (0, 63 * MIB));
    // Not given back to the kernel: the data is still there.
    assert!(b.as_slice().iter().all(|&x| x == 7));
    a.check_invariants();
}

#[test]
fn small_blocks_are_not_pooled_and_go_back_to_the_kernel() {
    let a = allocator(
        4 * MIB,
        ReleasePolicy::ReturnToKernel,
        DEFAULT_POOL_LIMIT_BYTES,
    );
    let mut b = a.allocate(512 * KIB).unwrap();
    b.fill(9);
    drop(b);
    assert_eq!((a.pooled_bytes(), a.free_bytes()), (0, 4 * MIB));
    let b = a.allocate(512 * KIB).unwrap();
    assert!(
        b.as_slice().iter().all(|&x| x == 0),
        "freed pages were not returned"
    );
}

#[test]
fn pool_bound_is_respected_and_trim_empties_it() {
    let a = allocator(16 * MIB, ReleasePolicy::ReturnToKernel, 4 * MIB);
    let blocks: Vec<_> = (0..6).map(|_| a.allocate(MIB).unwrap()).collect();
    drop(blocks);
    assert_eq!((a.pooled_bytes(), a.free_bytes()), (4 * MIB, 12 * MIB));
    a.check_invariants();
    a.trim();
    assert_eq!((a.pooled_bytes(), a.free_bytes()), (0, 16 * MIB));
    assert_eq!(a.extents(), vec![(0, 16 * MIB)]);
}

#[test]
fn pool_disabled_with_zero_limit() {
    let a = allocator(4 * MIB, ReleasePolicy::Keep, 0);
    drop(a.allocate(MIB).unwrap());
    assert_eq!((a.pooled_bytes(), a.free_bytes()), (0, 4 * MIB));
}

#[test]
fn a_miss_drains_the_pool_before_refusing() {
    let a = allocator(4 * MIB, ReleasePolicy::Keep, DEFAULT_POOL_LIMIT_BYTES);
    let blocks: Vec<_> = (0..4).map(|_| a.allocate(MIB).unwrap()).collect();
    drop(blocks);
    assert_eq!((a.pooled_bytes(), a.free_bytes()), (4 * MIB, 0));
    let big = a.allocate(3 * MIB).unwrap();
    assert_eq!(
        (a.pooled_bytes(), a.free_bytes(), a.allocated_bytes()),
        (0, MIB, 3 * MIB)
    );
    drop(big);
    a.check_invariants();
}

#[test]
fn zero_sized_blocks_take_nothing() {
    let a = allocator(MIB, ReleasePolicy::Keep, 0);
    let z = a.allocate(0).unwrap();
    assert!(z.is_empty() && z.as_slice().is_empty());
    assert_eq!(a.free_bytes(), MIB);
    drop(z);
    assert_eq!(a.free_bytes(), MIB);
    let empty = allocator(0, ReleasePolicy::Keep, 0);
    assert_eq!(empty.allocate(1).unwrap_err().free_bytes, 0);
    assert!(empty.allocate(0).is_ok());
}

#[test]
fn overlapping_allocators_and_touching_claimed_bytes_are_refused() {
    let map = Mapping::anonymous(4 * MIB, "heap").unwrap();
    let unified = map.whole().sub_range(MIB, 2 * MIB).with_name("unified");
    let a = PageAllocator::new(unified, ReleasePolicy::default()).unwrap();
    let err = PageAllocator::new(map.whole().sub_range(2 * MIB, 2 * MIB), ReleasePolicy::Keep)
        .unwrap_err();
    assert!(matches!(err, RegionError::Claimed { claimed_offset, .. } if claimed_offset == MIB));
    assert!(map.whole().touch().is_err());
    assert!(map.whole().release().is_err());
    // Neighbours of the claim are free to touch.
    map.whole().sub_range(0, MIB).touch().unwrap();
    // The claim ends with the allocator and its last block.
    let block = a.allocate(MIB).unwrap();
    drop(a);
    assert!(PageAllocator::new(map.whole(), ReleasePolicy::Keep).is_err());
    drop(block);
    PageAllocator::new(map.whole(), ReleasePolicy::Keep).unwrap();
}

#[test]
fn blocks_outlive_their_allocator_handle() {
    let a = allocator(MIB, ReleasePolicy::Keep, 0);
    let mut b = a.allocate(100).unwrap();
    drop(a);
    b.fill(3);
    assert_eq!(b.as_slice()[99], 3);
}

#[test]
fn threads_share_an_allocator_without_overlap() {
    let a = allocator(16 * MIB, ReleasePolicy::ReturnToKernel, 2 * MIB);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let a = a.clone();
            s.spawn(move || {
                let mut live: Vec<MemoryBlock> = Vec::new();
                for i in 0..400u64 {
                    let size = [100, 4096, MIB, 70_000][(i % 4) as usize];
                    if let Ok(mut b) = a.allocate(size) {
                        b.fill(t);
                        live.push(b);
                    }
                    if i % 3 == 0 && !live.is_empty() {
                        let b = live.swap_remove((i as usize * 7) % live.len());
                        assert!(
                            b.as_slice().iter().all(|&x| x == t),
                            "thread {t} block clobbered"
                        );
                    }
                }
                for b in &live {
                    assert!(
                        b.as_slice().iter().all(|&x| x == t),
                        "thread {t} block clobbered"
                    );
                }
            });
        }
    });
    a.check_invariants();
    a.trim();
    assert_eq!(a.extents(), vec![(0, 16 * MIB)]);
}

/// Allocates and writes `count` blocks of 1 MiB from a 512 MiB range, frees them and trims,
/// returning the range's resident bytes (before, after writing, after freeing, after trim).
fn resident_through_a_cycle(policy: ReleasePolicy, count: u64) -> [u64; 4] {
    let a = allocator(512 * MIB, policy, DEFAULT_POOL_LIMIT_BYTES);
    let before = a.resident_bytes();
    let blocks: Vec<_> = (0..count)
        .map(|i| {
            let mut b = a.allocate(MIB).unwrap();
            b.fill(i as u8 | 1);
            b
        })
        .collect();
    let written = a.resident_bytes();
    drop(blocks);
    let freed = a.resident_bytes();
    a.trim();
    [before, written, freed, a.resident_bytes()]
}

#[test]
fn real_memory_rises_and_returns_to_the_kernel() {
    let page = os_page_size();
    let [before, written, freed, trimmed] =
        resident_through_a_cycle(ReleasePolicy::ReturnToKernel, 256);
    assert!(before <= page, "fresh range resident {before}");
    assert!(
        written >= 256 * MIB && written <= 256 * MIB + 4 * page,
        "written: {written}"
    );
    // The pool (32 MiB) keeps its blocks resident until trimmed.
    let pooled = DEFAULT_POOL_LIMIT_BYTES;
    assert!(
        freed.abs_diff(pooled) <= 4 * page,
        "after free: {freed}, pool {pooled}"
    );
    assert!(trimmed <= 4 * page, "after trim: {trimmed}");
}

#[test]
fn real_memory_stays_under_keep() {
    let page = os_page_size();
    let [_, written, freed, trimmed] = resident_through_a_cycle(ReleasePolicy::Keep, 256);
    assert!(
        written >= 256 * MIB && written <= 256 * MIB + 4 * page,
        "written: {written}"
    );
    assert!(
        freed >= 256 * MIB && trimmed >= 256 * MIB,
        "keep: {freed}, {trimmed}"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64),
    Free(usize),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![1u64..=200, 1u64..=70_000, Just(MIB), (MIB - 64)..=(MIB + 200)]
            .prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Trim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random allocate/free/trim: blocks never overlap (each keeps its own pattern until freed),
    /// the counters always add up to the range, and a refusal only happens when no free extent
    /// (after draining the pool) is big enough.
    #[test]
    fn random_sequences_never_overlap(
        ops in prop::collection::vec(op(), 1..300),
        keep in any::<bool>(),
        pool_limit in prop_oneof![Just(0u64), Just(2 * MIB), Just(DEFAULT_POOL_LIMIT_BYTES)],
        len in prop_oneof![Just(6 * MIB), (1u64..=6 * MIB)],
    ) {
        let policy = if keep { ReleasePolicy::Keep } else { ReleasePolicy::ReturnToKernel };
        let a = allocator(len, policy, pool_limit);
        let mut live: Vec<(MemoryBlock, u8)> = Vec::new();
        let mut next_pattern = 1u8;
        for op in ops {
            match op {
                Op::Alloc(size) => match a.allocate(size) {
                    Ok(mut b) => {
                        prop_assert_eq!(b.len(), size);
                        prop_assert!(b.offset() + b.footprint_bytes() <= len);
                        b.fill(next_pattern);
                        live.push((b, next_pattern));
                        next_pattern = next_pattern.wrapping_add(1).max(1);
                    }
                    Err(e) => {
                        prop_assert_eq!(a.pooled_bytes(), 0, "refused with a non-empty pool");
                        prop_assert!(e.largest_free_extent < size.next_multiple_of(GRANULE_BYTES));
                        prop_assert_eq!(e.free_bytes, a.free_bytes());
                    }
                },
                Op::Free(i) if !live.is_empty() => {
                    let (b, pattern) = live.swap_remove(i % live.len());
                    prop_assert!(
                        b.as_slice().iter().all(|&x| x == pattern),
                        "block at {} ({} bytes) was overwritten", b.offset(), b.len()
                    );
                }
                Op::Free(_) => {}
                Op::Trim => a.trim(),
            }
            a.check_invariants();
            let live_bytes: u64 = live.iter().map(|(b, _)| b.footprint_bytes()).sum();
            prop_assert_eq!(a.allocated_bytes(), live_bytes);
            prop_assert_eq!(a.allocated_bytes() + a.pooled_bytes() + a.free_bytes(), len);
        }
        for (b, pattern) in &live {
            prop_assert!(b.as_slice().iter().all(|&x| x == *pattern));
        }
        drop(live);
        a.trim();
        prop_assert_eq!(a.extents(), vec![(0, len)]);
    }
}

#[test]
fn allocator_and_block_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PageAllocator>();
    check::<MemoryBlock>();
    check::<Arc<Mapping>>();
}
