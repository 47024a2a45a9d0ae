//! The work a worker does, defined once so that the executor can check it independently: the
//! UDF's byte pattern and checksum, the aggregation's records and its order-free digest, and
//! PySpark's `ExternalMerger` constants. `python_worker.py` mirrors every function here.

use crate::data::splitmix64;

/// `ExternalMerger(partitions=59)`: hash partitions of a spill.
pub const SPILL_PARTITIONS: usize = 59;
/// `ExternalMerger(batch=1000)`: items between the first RSS checks.
pub const INITIAL_BATCH: f64 = 1000.0;
/// The UDF fills its buffer with this many bytes of pattern, repeated.
pub const UDF_BLOCK_BYTES: usize = 64 << 10;
/// The UDF's checksum reads one little-endian u64 every this many bytes.
pub const UDF_CHECK_STRIDE: usize = 4096;

/// splitmix64's finaliser: a 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Record `i` of an aggregation input: `(key, value)` drawn from the stream `state`.
pub fn next_record(state: &mut u64, distinct_keys: u64) -> (u64, u64) {
    let r = splitmix64(state);
    (r % distinct_keys.max(1), (r >> 32) & 0xffff)
}

/// One aggregated key's contribution to the digest. Linear in `count` and `sum`, so the digest
/// of a whole aggregation is also the sum over its input records of `key_digest(k, 1, v)`: the
/// executor can compute it streaming, holding no map.
pub fn key_digest(key: u64, count: u64, sum: u64) -> u64 {
    count
        .wrapping_mul(mix64(key ^ 0x5851_f42d_4c95_7f2d))
        .wrapping_add(sum.wrapping_mul(mix64(key ^ 0x1405_7b7e_f767_814f)))
}

/// The partition of a key in a spill (`hash((key, seed)) % partitions`).
pub fn spill_partition(key: u64, seed: u64) -> usize {
    (mix64(key ^ seed) % SPILL_PARTITIONS as u64) as usize
}

/// What an aggregation must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggregateResult {
    pub records: u64,
    pub keys: u64,
    pub value_sum: u64,
    pub digest: u64,
}

/// The expected result of aggregating `records` records of `seed`, computed streaming (a
/// bitmap of `distinct_keys` bits counts the keys seen).
pub fn expected_aggregate(seed: u64, records: u64, distinct_keys: u64) -> AggregateResult {
    let mut seen = vec![0u64; distinct_keys.max(1).div_ceil(64) as usize];
    let mut state = seed;
    let mut out = AggregateResult::default();
    for _ in 0..records {
        let (k, v) = next_record(&mut state, distinct_keys);
        let (w, b) = ((k / 64) as usize, k % 64);
        if seen[w] & (1 << b) == 0 {
            seen[w] |= 1 << b;
            out.keys += 1;
        }
        out.records += 1;
        out.value_sum = out.value_sum.wrapping_add(v);
        out.digest = out.digest.wrapping_add(key_digest(k, 1, v));
    }
    out
}

/// The UDF's pattern block for `seed`: `UDF_BLOCK_BYTES` of splitmix64 words, little-endian.
pub fn udf_block(seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut block = Vec::with_capacity(UDF_BLOCK_BYTES);
    while block.len() < UDF_BLOCK_BYTES {
        block.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    block
}

/// The checksum of a UDF buffer of `bytes` filled with `udf_block(seed)` repeated: the wrapping
/// sum of the u64 at every offset `o` that is a multiple of `UDF_CHECK_STRIDE` with `o + 8 <=
/// bytes`.
pub fn udf_checksum_of(buf: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut o = 0;
    while o + 8 <= buf.len() {
        sum = sum.wrapping_add(u64::from_le_bytes(
            buf[o..o + 8].try_into().expect("8 bytes"),
        ));
        o += UDF_CHECK_STRIDE;
    }
    sum
}

/// The expected UDF checksum, computed from the pattern without building the buffer.
pub fn expected_udf_checksum(seed: u64, bytes: u64) -> u64 {
    let block = udf_block(seed);
    let mut sum = 0u64;
    let mut o = 0u64;
    while o + 8 <= bytes {
        let b = (o % UDF_BLOCK_BYTES as u64) as usize;
        sum = sum.wrapping_add(u64::from_le_bytes(block[b..b + 8].try_into().expect("8")));
        o += UDF_CHECK_STRIDE as u64;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_same_per_key_or_per_record() {
        let r = expected_aggregate(7, 10_000, 100);
        let mut map = std::collections::HashMap::<u64, (u64, u64)>::new();
        let mut s = 7;
        for _ in 0..10_000 {
            let (k, v) = next_record(&mut s, 100);
            let e = map.entry(k).or_default();
            e.0 += 1;
            e.1 += v;
        }
        let digest = map.iter().fold(0u64, |d, (k, (c, s))| {
            d.wrapping_add(key_digest(*k, *c, *s))
        });
        assert_eq!(r.digest, digest);
        assert_eq!(r.keys, map.len() as u64);
        assert_eq!(r.records, 10_000);
    }

    #[test]
    fn udf_checksum_matches_the_buffer() {
        for bytes in [0u64, 7, 8, 4096, 4104, 65_536 * 3 + 17] {
            let block = udf_block(3);
            let buf: Vec<u8> = block.iter().copied().cycle().take(bytes as usize).collect();
            assert_eq!(
                udf_checksum_of(&buf),
                expected_udf_checksum(3, bytes),
                "{bytes}"
            );
        }
    }

    #[test]
    fn python_mirror_constants() {
        // python_worker.py prints these for the same inputs (checked in tests/external_*.rs).
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }
}
