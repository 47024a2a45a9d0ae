//! k-way merge of sorted runs: sorted output, stable on equal keys, digests add up, spill files
//! and in-memory runs together, and a damaged run stops the merge with an error.

use std::path::Path;

use proptest::prelude::*;
use spillway::spill::{
    MemoryRun, MergeError, RecordDigest, SortedMerge, SortedRun, SpillError, SpillKind,
    SpillReader, SpillWriter, SpillWriterOptions, merge_sorted_runs,
};

/// Record = key (u64 BE) ‖ run (u8) ‖ position in run (u32 BE) ‖ padding to 24 bytes.
fn record(key: u64, run: u8, seq: u32) -> Vec<u8> {
    let mut r = vec![0u8; 24];
    r[0..8].copy_from_slice(&key.to_be_bytes());
    r[8] = run;
    r[9..13].copy_from_slice(&seq.to_be_bytes());
    r
}

fn key(r: &[u8]) -> u64 {
    u64::from_be_bytes(r[0..8].try_into().unwrap())
}

fn origin(r: &[u8]) -> (u8, u32) {
    (r[8], u32::from_be_bytes(r[9..13].try_into().unwrap()))
}

fn write_run(path: &Path, recs: &[Vec<u8>]) -> RecordDigest {
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.fixed_record_bytes = Some(24);
    o.batch_records = 5;
    o.buffer_bytes = 256;
    let mut w = SpillWriter::create(path, o).unwrap();
    for r in recs {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap().digest()
}

/// Runs `keys` (each sorted) through spill files, except the last run which stays in memory
/// when `memory_last`; checks order, stability and digests.
fn check_merge(mut keys: Vec<Vec<u64>>, memory_last: bool) {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<Vec<Vec<u8>>> = keys
        .iter_mut()
        .enumerate()
        .map(|(i, ks)| {
            ks.sort_unstable();
            ks.iter()
                .enumerate()
                .map(|(s, &k)| record(k, i as u8, s as u32))
                .collect()
        })
        .collect();
    let mut expected = RecordDigest::default();
    let mut sources: Vec<Box<dyn SortedRun + '_>> = Vec::new();
    for (i, recs) in runs.iter().enumerate() {
        if memory_last && i == runs.len() - 1 {
            let mut d = RecordDigest::default();
            recs.iter().for_each(|r| d.add(r));
            expected = expected.combine(d);
            sources.push(Box::new(MemoryRun::new(recs.iter().map(Vec::as_slice))));
        } else {
            let path = dir.path().join(format!("run-{i}.spill"));
            expected = expected.combine(write_run(&path, recs));
            sources.push(Box::new(SpillReader::open(&path).unwrap()));
        }
    }

    let mut out_digest = RecordDigest::default();
    let mut prev: Option<(u64, (u8, u32))> = None;
    let n = merge_sorted_runs(sources, key, |r| {
        let cur = (key(r), origin(r));
        if let Some(p) = prev {
            // Sorted by key; equal keys in run order, then in order within the run.
            assert!(p < cur, "{p:?} then {cur:?}");
        }
        prev = Some(cur);
        out_digest.add(r);
        Ok::<(), SpillError>(())
    })
    .unwrap();
    assert_eq!(n, runs.iter().map(Vec::len).sum::<usize>() as u64);
    assert_eq!(out_digest, expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn merge_is_sorted_stable_and_loses_nothing(
        // Small key range: many equal keys across and within runs.
        keys in proptest::collection::vec(proptest::collection::vec(0u64..20, 0..60), 1..9),
        memory_last in any::<bool>(),
    ) {
        check_merge(keys, memory_last);
    }
}

#[test]
fn single_and_empty_runs() {
    check_merge(vec![vec![]], false);
    check_merge(vec![vec![3, 1, 2]], false);
    check_merge(vec![vec![], vec![5], vec![], vec![5, 5]], true);
}

#[test]
fn merging_iterator_reports_the_source_run() {
    let a: Vec<Vec<u8>> = vec![record(1, 0, 0), record(4, 0, 1)];
    let b: Vec<Vec<u8>> = vec![record(1, 1, 0), record(2, 1, 1)];
    let runs = vec![
        MemoryRun::new(a.iter().map(Vec::as_slice)),
        MemoryRun::new(b.iter().map(Vec::as_slice)),
    ];
    let mut m = SortedMerge::new(runs, key).unwrap();
    let mut got = Vec::new();
    while let Some(r) = m.next_record().unwrap() {
        let k = key(r);
        got.push((k, m.last_run().unwrap()));
    }
    assert_eq!(got, [(1, 0), (1, 1), (2, 1), (4, 0)]);
}

#[test]
fn damaged_run_fails_the_merge_without_wrong_records() {
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<Vec<u8>> = (0..40).map(|i| record(i * 2, 0, i as u32)).collect();
    let bad: Vec<Vec<u8>> = (0..40).map(|i| record(i * 2 + 1, 1, i as u32)).collect();
    let (pg, pb) = (dir.path().join("good.spill"), dir.path().join("bad.spill"));
    write_run(&pg, &good);
    write_run(&pb, &bad);
    // Flip a payload bit in the third frame of the bad run (frames of 5 records: 12 + 120 bytes).
    let mut bytes = std::fs::read(&pb).unwrap();
    bytes[32 + 2 * 132 + 12 + 40] ^= 0x10;
    std::fs::write(&pb, bytes).unwrap();

    let runs = vec![
        SpillReader::open(&pg).unwrap(),
        SpillReader::open(&pb).unwrap(),
    ];
    let mut out = Vec::new();
    let e = merge_sorted_runs(runs, key, |r| {
        out.push(r.to_vec());
        Ok::<(), SpillError>(())
    })
    .unwrap_err();
    match e {
        MergeError::Run(SpillError::ChecksumMismatch { path, what, .. }) => {
            assert_eq!((path, what), (pb.clone(), "frame"));
        }
        other => panic!("{other}"),
    }
    let mut all: Vec<Vec<u8>> = good.iter().chain(&bad).cloned().collect();
    all.sort();
    assert_eq!(
        out,
        all[..out.len()],
        "output so far is the true merge's prefix"
    );
    assert_eq!(
        out.len(),
        20,
        "the 10 bad-run records of two intact frames, interleaved"
    );
}

#[test]
fn sink_error_stops_the_merge() {
    let a: Vec<Vec<u8>> = (0..10).map(|i| record(i, 0, i as u32)).collect();
    let runs = vec![MemoryRun::new(a.iter().map(Vec::as_slice))];
    let mut n = 0;
    let e = merge_sorted_runs(runs, key, |_| {
        n += 1;
        if n == 3 { Err("disk full") } else { Ok(()) }
    })
    .unwrap_err();
    assert!(matches!(e, MergeError::Sink("disk full")));
    assert_eq!(e.to_string(), "merge: writing the output: disk full");
}
