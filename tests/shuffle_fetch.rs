//! The reduce side's fetch end to end: map outputs written by `run_map_task`, every partition
//! read back by `read_partition` through `run_stage` with map outputs local, remote, in memory
//! and on disk, under each flow-control limit; damaged and truncated data files fail as
//! `FetchFailed` naming the block; a buffer damaged in flight is refetched without duplicating
//! a record; no buffer and no temporary file outlives a read, on success or error.

use std::sync::atomic::{AtomicU64, Ordering};

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::scheduler::{TaskFailure, run_stage};
use spillway::shuffle::fetch::{
    FetchFault, FetchParams, ShuffleReadMetrics, read_partition, read_partition_with_fault,
};
use spillway::shuffle::writer::{WriteParams, run_map_task};
use spillway::shuffle::{
    MapStatus, Operation, ShuffleBlockId, ShuffleSpec, ValueClass, WriterKind, choose_writer,
};
use spillway::spill::RecordDigest;
use spillway::tasks::TaskError;

/// A small executor (16 MiB of `spark.testing.memory`, no reserved memory: the fetch uses no
/// execution memory) with two cores over its own local directory.
struct Fixture {
    ex: Executor,
    conf: SparkConf,
    _local: tempfile::TempDir,
}

fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let local = tempfile::tempdir().unwrap();
    let mut conf = SparkConf::new()
        .with("spark.testing", "true")
        .with("spark.testing.memory", &(16u64 << 20).to_string())
        .with("spark.testing.reservedMemory", "0")
        .with("spark.executor.memory", "16m")
        .with("spark.executor.cores", "2")
        .with("spark.local.dir", &local.path().display().to_string());
    for (k, v) in extra {
        conf = conf.with(k, v);
    }
    let layout = Layout::from_conf(&conf, None).unwrap();
    let ex = Executor::start(&layout, &conf).unwrap();
    Fixture {
        ex,
        conf,
        _local: local,
    }
}

fn spec(maps: u32, partitions: u32) -> ShuffleSpec {
    ShuffleSpec {
        shuffle_id: 3,
        map_tasks: maps,
        reduce_partitions: partitions,
        records_per_task: 20_000,
        record_bytes: 100,
        distinct_keys: 1_000_000,
        hot_key_percent: 0,
        compressible_percent: 50,
        operation: Operation::PartitionBy,
        values: ValueClass::Bytes,
        seed: 11,
    }
}

/// Runs the map stage; map `m` is placed on executor `placement(m)` (0 is this one).
fn write_maps(
    fx: &Fixture,
    spec: &ShuffleSpec,
    placement: impl Fn(u32) -> u32 + Sync,
) -> Vec<MapStatus> {
    let choice = choose_writer(
        spec.operation,
        spec.reduce_partitions,
        spec.values,
        &fx.conf,
    )
    .unwrap();
    let params = WriteParams::from_conf(&fx.conf).unwrap();
    let runs = run_stage(
        &fx.ex,
        0,
        spec.map_tasks,
        true,
        |ctx| run_map_task(ctx, spec, &choice, &params, placement(ctx.partition)),
        |_| {},
    );
    runs.into_iter()
        .map(|r| match r.result {
            Ok(out) => out.status,
            Err(e) => panic!("map task {} failed: {e}", r.partition),
        })
        .collect()
}

/// Mixed placement: maps 0 and 1 here, 2..=3 on executor 1, the rest on executor 2.
fn mixed(m: u32) -> u32 {
    match m {
        0 | 1 => 0,
        2 | 3 => 1,
        _ => 2,
    }
}

/// What a reduce task read.
#[derive(Debug)]
struct Read {
    metrics: ShuffleReadMetrics,
    digest: RecordDigest,
    /// The largest fetch-buffer gauge and the most files in the local directories seen
    /// while records arrived.
    gauge_seen: u64,
    files_seen: usize,
}

/// Reads every partition (one reduce task each) with `params`; `fault` for the partition it
/// names.
fn reduce_stage(
    fx: &Fixture,
    spec: &ShuffleSpec,
    statuses: &[MapStatus],
    params: &FetchParams,
    fault: Option<FetchFault>,
) -> Vec<Result<Read, TaskFailure<TaskError>>> {
    let runs = run_stage(
        &fx.ex,
        1,
        spec.reduce_partitions,
        true,
        |ctx| {
            let gauge = AtomicU64::new(0);
            let files = AtomicU64::new(0);
            let mut digest = RecordDigest::default();
            let mut n = 0u64;
            let fault = fault.filter(|FetchFault::CorruptFirstCopy(b)| b.reduce == ctx.partition);
            let metrics = read_partition_with_fault(
                ctx,
                spec.shuffle_id,
                statuses,
                ctx.partition,
                params,
                0,
                fault,
                |rec| {
                    digest.add(rec);
                    n += 1;
                    if n % 500 == 1 {
                        let g = ctx.memory.metrics().fetch_bytes_in_flight();
                        gauge.fetch_max(g, Ordering::Relaxed);
                        let f = ctx.executor.local_dirs().file_count() as u64;
                        files.fetch_max(f, Ordering::Relaxed);
                    }
                    Ok(())
                },
            )?;
            Ok(Read {
                metrics,
                digest,
                gauge_seen: gauge.load(Ordering::Relaxed),
                files_seen: files.load(Ordering::Relaxed) as usize,
            })
        },
        |_| {},
    );
    runs.into_iter().map(|r| r.result).collect()
}

fn expected(statuses: &[MapStatus], r: u32) -> RecordDigest {
    statuses.iter().fold(RecordDigest::default(), |d, s| {
        d.combine(s.expected[r as usize])
    })
}

/// Checks every partition read exactly the generated records, local and remote bytes as the
/// statuses place them; returns the reads.
fn check_all(
    spec: &ShuffleSpec,
    statuses: &[MapStatus],
    reads: Vec<Result<Read, TaskFailure<TaskError>>>,
) -> Vec<Read> {
    let mut out = Vec::new();
    for (r, read) in reads.into_iter().enumerate() {
        let read = read.unwrap_or_else(|e| panic!("reduce task {r} failed: {e}"));
        let want = expected(statuses, r as u32);
        assert!(want.records > 0);
        assert_eq!(read.digest, want, "partition {r}");
        assert_eq!(read.metrics.records_read, want.records);
        let here = |s: &&MapStatus| s.executor == 0 && s.lengths[r] > 0;
        let there = |s: &&MapStatus| s.executor != 0 && s.lengths[r] > 0;
        let m = &read.metrics;
        assert_eq!(
            m.local_blocks_fetched,
            statuses.iter().filter(here).count() as u64
        );
        assert_eq!(
            m.local_bytes_read,
            statuses
                .iter()
                .filter(here)
                .map(|s| s.lengths[r])
                .sum::<u64>()
        );
        assert_eq!(
            m.remote_blocks_fetched,
            statuses.iter().filter(there).count() as u64
        );
        assert_eq!(
            m.remote_bytes_read,
            statuses
                .iter()
                .filter(there)
                .map(|s| s.lengths[r])
                .sum::<u64>()
        );
        assert!(m.remote_bytes_read_to_disk <= m.remote_bytes_read);
        assert!(m.peak_bytes_in_flight <= m.remote_bytes_read);
        out.push(read);
    }
    assert_eq!(out.len(), spec.reduce_partitions as usize);
    out
}

/// The map outputs' files (`maps` of them) are all that is left, and no fetch buffer.
fn check_clean(fx: &Fixture, maps: usize) {
    assert_eq!(
        fx.ex.local_dirs().file_count(),
        2 * maps,
        "a temporary file was left"
    );
    assert_eq!(fx.ex.metrics().fetch_bytes_in_flight(), 0);
}

fn defaults(fx: &Fixture) -> FetchParams {
    FetchParams::from_conf(&fx.conf).unwrap()
}

/// The largest non-empty block of map outputs not on this executor.
fn largest_remote_block(statuses: &[MapStatus]) -> u64 {
    statuses
        .iter()
        .filter(|s| s.executor != 0)
        .flat_map(|s| s.lengths.iter().copied())
        .max()
        .unwrap()
}

#[test]
fn all_local_reads_every_record_from_the_data_files() {
    let fx = fixture(&[]);
    let spec = spec(4, 8);
    let statuses = write_maps(&fx, &spec, |_| 0);
    let choice = choose_writer(spec.operation, 8, spec.values, &fx.conf).unwrap();
    assert_eq!(choice.kind, WriterKind::BypassMergeSort);
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &defaults(&fx), None),
    );
    for read in &reads {
        assert_eq!(read.metrics.remote_blocks_fetched, 0);
        assert_eq!(read.metrics.peak_bytes_in_flight, 0);
        assert_eq!(read.gauge_seen, 0);
    }
    check_clean(&fx, statuses.len());
}

#[test]
fn mixed_local_and_remote_blocks_read_the_same_records() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &defaults(&fx), None),
    );
    for read in &reads {
        assert_eq!(read.metrics.remote_bytes_read_to_disk, 0);
        // The default 48 MiB: one request per address, all in flight at once.
        assert_eq!(
            read.metrics.peak_bytes_in_flight,
            read.metrics.remote_bytes_read
        );
    }
    assert!(
        reads.iter().any(|r| r.gauge_seen > 0),
        "remote blocks were read from buffers counted in the executor's metrics"
    );
    check_clean(&fx, statuses.len());

    // Only remote blocks, on three executors: the same records again.
    let spec4 = ShuffleSpec {
        shuffle_id: 4,
        ..spec
    };
    let remote = write_maps(&fx, &spec4, |m| 1 + m % 3);
    let params = defaults(&fx);
    check_all(
        &spec4,
        &remote,
        reduce_stage(&fx, &spec4, &remote, &params, None),
    );
    check_clean(&fx, statuses.len() + remote.len());
}

#[test]
fn one_byte_in_flight_sends_one_request_at_a_time() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    let params = FetchParams {
        max_bytes_in_flight: 1,
        ..defaults(&fx)
    };
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &params, None),
    );
    for (r, read) in reads.iter().enumerate() {
        // A request per block, each alone in flight though larger than the limit.
        let largest = statuses
            .iter()
            .filter(|s| s.executor != 0)
            .map(|s| s.lengths[r])
            .max()
            .unwrap();
        assert_eq!(read.metrics.peak_bytes_in_flight, largest);
    }
    check_clean(&fx, statuses.len());
}

#[test]
fn one_request_and_one_block_per_address_still_read_everything() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    let one_req = FetchParams {
        max_reqs_in_flight: 1,
        ..defaults(&fx)
    };
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &one_req, None),
    );
    for (r, read) in reads.iter().enumerate() {
        // Default requests hold an address's blocks: at most one address's bytes at once.
        let per_address = (1..=2)
            .map(|e| {
                statuses
                    .iter()
                    .filter(|s| s.executor == e)
                    .map(|s| s.lengths[r])
                    .sum::<u64>()
            })
            .max()
            .unwrap();
        assert_eq!(read.metrics.peak_bytes_in_flight, per_address);
    }
    let one_block = FetchParams {
        max_blocks_in_flight_per_address: 1,
        ..defaults(&fx)
    };
    check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &one_block, None),
    );
    let all_three = FetchParams {
        max_reqs_in_flight: 1,
        max_blocks_in_flight_per_address: 1,
        max_bytes_in_flight: 1000,
        ..defaults(&fx)
    };
    check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &all_three, None),
    );
    check_clean(&fx, statuses.len());
}

#[test]
fn bytes_in_flight_stay_under_the_limit_when_requests_are_smaller() {
    let fx = fixture(&[]);
    let spec = spec(8, 8);
    let statuses = write_maps(&fx, &spec, |m| m % 4);
    let largest = largest_remote_block(&statuses);
    // Requests of about half a block's size (so one block, or two small ones: less than
    // 1.5 blocks), at most 2.5 blocks in flight.
    let limit = largest * 5 / 2;
    let params = FetchParams {
        max_bytes_in_flight: limit,
        ..defaults(&fx)
    };
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &params, None),
    );
    for read in &reads {
        assert!(
            read.metrics.peak_bytes_in_flight <= limit,
            "{} > {limit}",
            read.metrics.peak_bytes_in_flight
        );
    }
    assert!(
        reads
            .iter()
            .any(|r| r.metrics.peak_bytes_in_flight > largest),
        "more than one request was in flight at once"
    );
    check_clean(&fx, statuses.len());
}

#[test]
fn large_requests_are_fetched_to_disk_and_their_files_deleted() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    let params = FetchParams {
        max_remote_block_size_fetch_to_mem: 0,
        ..defaults(&fx)
    };
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &params, None),
    );
    for read in &reads {
        assert!(read.metrics.remote_bytes_read > 0);
        assert_eq!(
            read.metrics.remote_bytes_read_to_disk,
            read.metrics.remote_bytes_read
        );
        assert_eq!(read.gauge_seen, 0, "nothing was fetched into memory");
    }
    assert!(
        reads.iter().any(|r| r.files_seen > 2 * statuses.len()),
        "a temp_local file existed while its block was read"
    );
    check_clean(&fx, statuses.len());

    // A limit between the request sizes: each request goes where its size says.
    let sizes: Vec<u64> = (0..8)
        .map(|r| {
            statuses
                .iter()
                .filter(|s| s.executor == 1)
                .map(|s| s.lengths[r])
                .sum()
        })
        .collect();
    let limit = *sizes.iter().min().unwrap();
    let params = FetchParams {
        max_remote_block_size_fetch_to_mem: limit,
        ..defaults(&fx)
    };
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(&fx, &spec, &statuses, &params, None),
    );
    let to_disk: u64 = reads
        .iter()
        .map(|r| r.metrics.remote_bytes_read_to_disk)
        .sum();
    let remote: u64 = reads.iter().map(|r| r.metrics.remote_bytes_read).sum();
    assert!(to_disk > 0 && to_disk < remote, "{to_disk} of {remote}");
    check_clean(&fx, statuses.len());
}

/// Flips one byte in the middle of block `shuffle_s_map_r`.
fn flip(statuses: &[MapStatus], map: usize, r: u32) {
    let s = &statuses[map];
    let at = s.offset(r) + s.lengths[r as usize] / 2;
    let mut bytes = std::fs::read(&s.files.data).unwrap();
    bytes[at as usize] ^= 0x04;
    std::fs::write(&s.files.data, bytes).unwrap();
}

/// The partitions' outcomes: `Ok` or the `FetchFailed` fields.
fn outcomes(
    reads: Vec<Result<Read, TaskFailure<TaskError>>>,
) -> Vec<Result<RecordDigest, (String, u32, String)>> {
    reads
        .into_iter()
        .map(|r| match r {
            Ok(read) => Ok(read.digest),
            Err(TaskFailure::Task(e @ TaskError::FetchFailed { .. })) => {
                assert_eq!(e.error_class(), Some("FetchFailedException"));
                let TaskError::FetchFailed {
                    block,
                    executor,
                    detail,
                } = e
                else {
                    unreachable!()
                };
                Err((block, executor, detail))
            }
            Err(e) => panic!("not a fetch failure: {e}"),
        })
        .collect()
}

#[test]
fn a_flipped_byte_fails_the_fetch_naming_the_block_local_or_remote() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    // Map 1 is local, map 2 on executor 1, map 4 on executor 2.
    flip(&statuses, 1, 2);
    flip(&statuses, 2, 5);
    flip(&statuses, 4, 6);
    for params in [
        defaults(&fx),
        FetchParams {
            max_remote_block_size_fetch_to_mem: 0,
            ..defaults(&fx)
        },
    ] {
        let got = outcomes(reduce_stage(&fx, &spec, &statuses, &params, None));
        for (r, o) in got.iter().enumerate() {
            let (map, executor) = match r {
                2 => (1, 0),
                5 => (2, 1),
                6 => (4, 2),
                _ => {
                    assert_eq!(o.as_ref().unwrap(), &expected(&statuses, r as u32));
                    continue;
                }
            };
            let (block, ex, detail) = o.as_ref().unwrap_err();
            assert_eq!(block, &format!("shuffle_3_{map}_{r}"));
            assert_eq!(*ex, executor);
            let data = statuses[map].files.data.display().to_string();
            assert!(detail.contains(&data), "{detail}");
            assert!(
                detail.contains("corrupt") || detail.contains("truncated"),
                "{detail}"
            );
            if executor == 0 {
                assert!(detail.contains("local"), "{detail}");
            } else if params.max_remote_block_size_fetch_to_mem == 0 {
                assert!(detail.contains("fetched to disk"), "{detail}");
            } else {
                // Fetched again before failing.
                assert!(detail.contains("fetched into memory twice"), "{detail}");
            }
        }
        check_clean(&fx, statuses.len());
    }
}

#[test]
fn a_truncated_data_file_fails_the_fetch() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    // Local map 0 cut inside partition 6, remote map 3 inside partition 4.
    for (map, r) in [(0usize, 6u32), (3, 4)] {
        let s = &statuses[map];
        let cut = s.offset(r) + s.lengths[r as usize] / 3;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&s.files.data)
            .unwrap()
            .set_len(cut)
            .unwrap();
    }
    for params in [
        defaults(&fx),
        FetchParams {
            max_remote_block_size_fetch_to_mem: 0,
            ..defaults(&fx)
        },
    ] {
        let got = outcomes(reduce_stage(&fx, &spec, &statuses, &params, None));
        for (r, o) in got.iter().enumerate() {
            match r {
                0..=3 => assert_eq!(o.as_ref().unwrap(), &expected(&statuses, r as u32)),
                4 | 5 => {
                    let (block, ex, detail) = o.as_ref().unwrap_err();
                    assert_eq!(block, &format!("shuffle_3_3_{r}"), "{detail}");
                    assert_eq!(*ex, 1);
                    assert!(detail.contains(&statuses[3].files.data.display().to_string()));
                }
                _ => {
                    // Map 0 (read first, locally) or map 3: whichever the task met first.
                    let (block, _, detail) = o.as_ref().unwrap_err();
                    assert!(
                        block == &format!("shuffle_3_0_{r}")
                            || block == &format!("shuffle_3_3_{r}"),
                        "{block}: {detail}"
                    );
                    if block.starts_with("shuffle_3_0_") {
                        assert!(detail.contains("truncated"), "{detail}");
                    }
                }
            }
        }
        check_clean(&fx, statuses.len());
    }
}

#[test]
fn a_block_damaged_in_flight_is_fetched_again_without_duplicating_records() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    let victim = ShuffleBlockId {
        shuffle: 3,
        map: 2,
        reduce: 5,
    };
    // The flip is three quarters into a block of several codec blocks: records of the first
    // copy were handed out before the damage was found.
    assert!(statuses[2].lengths[5] > 4 * 32 * 1024);
    let reads = check_all(
        &spec,
        &statuses,
        reduce_stage(
            &fx,
            &spec,
            &statuses,
            &defaults(&fx),
            Some(FetchFault::CorruptFirstCopy(victim)),
        )
        .into_iter()
        .enumerate()
        .map(|(r, read)| {
            read.map(|mut read| {
                if r == 5 {
                    // Fetched twice, counted twice (as Spark counts a refetch).
                    assert_eq!(
                        read.metrics.remote_bytes_read,
                        statuses
                            .iter()
                            .filter(|s| s.executor != 0)
                            .map(|s| s.lengths[5])
                            .sum::<u64>()
                            + statuses[2].lengths[5]
                    );
                    read.metrics.remote_blocks_fetched -= 1;
                    read.metrics.remote_bytes_read -= statuses[2].lengths[5];
                }
                read
            })
        })
        .collect(),
    );
    assert_eq!(reads[5].digest, expected(&statuses, 5));
    check_clean(&fx, statuses.len());
}

#[test]
fn an_error_of_the_caller_stops_the_fetch_and_frees_everything() {
    let fx = fixture(&[]);
    let spec = spec(6, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    for to_mem in [u64::MAX, 0] {
        let params = FetchParams {
            max_remote_block_size_fetch_to_mem: to_mem,
            // Small requests: several buffers or files queued when the caller fails.
            max_bytes_in_flight: largest_remote_block(&statuses) * 3,
            max_blocks_in_flight_per_address: 1,
            ..defaults(&fx)
        };
        let runs = run_stage(
            &fx.ex,
            1,
            spec.reduce_partitions,
            true,
            |ctx| {
                let mut n = 0u64;
                // Fail in the middle of the remote blocks (the local ones come first).
                let local: u64 = statuses
                    .iter()
                    .filter(|s| s.executor == 0)
                    .map(|s| s.expected[ctx.partition as usize].records)
                    .sum();
                let stop_at = local + 3000;
                read_partition(ctx, 3, &statuses, ctx.partition, &params, 0, |_| {
                    n += 1;
                    if n == stop_at {
                        return Err(TaskError::Verification("enough".into()));
                    }
                    Ok(())
                })
            },
            |_| {},
        );
        for run in runs {
            match run.result {
                Err(TaskFailure::Task(TaskError::Verification(m))) => assert_eq!(m, "enough"),
                other => panic!("{other:?}"),
            }
        }
        check_clean(&fx, statuses.len());
    }
}

#[test]
fn other_writers_outputs_read_back_too() {
    // The sort writer's aggregation needs a few pages of execution memory.
    let fx = fixture(&[
        ("spark.testing.memory", "134217728"),
        ("spark.executor.memory", "128m"),
    ]);
    // 300 partitions: the serialized writer (Kryo for byte values), many small blocks.
    let mut many = spec(4, 300);
    many.records_per_task = 6000;
    let choice = choose_writer(many.operation, 300, many.values, &fx.conf).unwrap();
    assert_eq!(choice.kind, WriterKind::UnsafeShuffle);
    let statuses = write_maps(&fx, &many, |m| m % 3);
    let params = FetchParams {
        max_bytes_in_flight: 4096,
        max_blocks_in_flight_per_address: 2,
        ..defaults(&fx)
    };
    check_all(
        &many,
        &statuses,
        reduce_stage(&fx, &many, &statuses, &params, None),
    );
    check_clean(&fx, statuses.len());
    drop(statuses);

    // reduceByKey: the sort writer combines on the map side; the reduce side reads exactly
    // what the writers wrote.
    let mut combine = spec(4, 8);
    combine.shuffle_id = 9;
    combine.operation = Operation::ReduceByKey;
    combine.distinct_keys = 5000;
    let statuses = write_maps(&fx, &combine, |m| m % 2);
    let reads = reduce_stage(&fx, &combine, &statuses, &defaults(&fx), None);
    for (r, read) in reads.into_iter().enumerate() {
        let read = read.unwrap();
        let want = statuses
            .iter()
            .fold(RecordDigest::default(), |d, s| d.combine(s.written[r]));
        assert_eq!(read.digest, want);
    }
    check_clean(&fx, statuses.len());
}

#[test]
fn a_damaged_or_truncated_index_file_fails_the_fetch_naming_it() {
    let fx = fixture(&[]);
    let spec = spec(4, 8);
    let statuses = write_maps(&fx, &spec, mixed);
    // Map 1's index: one bit of an offset flipped. Map 2's: its last byte cut off.
    let index1 = statuses[1].files.index.clone();
    let mut bytes = std::fs::read(&index1).unwrap();
    bytes[8 * 3 + 7] ^= 0x01;
    std::fs::write(&index1, bytes).unwrap();
    let index2 = statuses[2].files.index.clone();
    let len = std::fs::metadata(&index2).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index2)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let got = outcomes(reduce_stage(&fx, &spec, &statuses, &defaults(&fx), None));
    for (r, o) in got.iter().enumerate() {
        let (block, _, detail) = o.as_ref().unwrap_err();
        assert!(
            block == &format!("shuffle_3_1_{r}") || block == &format!("shuffle_3_2_{r}"),
            "{block}: {detail}"
        );
        assert!(detail.contains("index file"), "{detail}");
    }
    check_clean(&fx, statuses.len());
}
