//! Disk faults end to end (docs/reliability.md test plan 14–17): each ends in a typed error naming
//! the file, with the partial file removed and execution/storage memory back where it was, and
//! — where a directory is at fault (ENOSPC, EROFS, ENOENT) — the task failed, as in Spark, or
//! with `spillway.localDir.failover=true` the spill written again in the next local directory
//! (`DiskBlockManager::write_temp_file`). Tests that need a mount are root-only
//! and print `SKIPPED: <test>: <reason>` otherwise; the failpoint variants run everywhere.

mod faults_support;
mod skip_support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use faults_support::{Tmpfs, bin, executor, files_under, private_dirs};
use skip_support::skip;
use spillway::data::{PartitionData, stream_seed};
use spillway::executor::Executor;
use spillway::memory::{ConsumerSpillError, TaskMemoryError};
use spillway::scheduler::{TaskFailure, run_stage};
use spillway::spill::SpillError;
use spillway::storage::block_manager::StorageError;
use spillway::storage::disk::DiskFault;
use spillway::storage::{BlockId, StorageLevel};
use spillway::tasks::sort::{SortSpec, run_sort_task};
use spillway::tasks::{TaskError, TaskMetrics};

/// A sort of ~1.5 unified pools (512m executor: 127 MiB pool, ~190 MiB of input): it spills
/// at least twice (`temp_local_0`, `temp_local_1`, which hash to different directories of two).
fn sort_spec() -> SortSpec {
    SortSpec {
        records_per_task: 3_400_000,
        record_bytes: 56,
        seed: 7,
    }
}

/// Runs one sort task; returns its metrics or (error class, message).
fn sort(ex: &Executor) -> Result<TaskMetrics, (String, String)> {
    let spec = sort_spec();
    let mut runs = run_stage(ex, 0, 1, false, |ctx| run_sort_task(ctx, &spec), |_| {});
    match runs.remove(0).result {
        Ok(m) => Ok(m),
        Err(TaskFailure::Task(e)) => Err((
            e.error_class().unwrap_or("unclassified").to_string(),
            e.to_string(),
        )),
        Err(e) => Err(("other".into(), e.to_string())),
    }
}

/// `spillway.localDir.failover=true`: the tests of spillway's optional second chance in the
/// next local directory (Spark, and spillway by default, fail the task instead).
const FAILOVER: &[(&str, &str)] = &[("spillway.localDir.failover", "true")];

fn fault(errno: i32, after_bytes: Option<u64>, dir: Option<usize>) -> Option<DiskFault> {
    Some(DiskFault {
        errno,
        after_bytes,
        dir,
    })
}

/// Nothing accounted and nothing on disk once the task is over.
fn assert_clean(ex: &Executor) {
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    assert_eq!(ex.memory_manager().storage_memory_used(), 0);
    assert_eq!(ex.local_dirs().file_count(), 0, "spill files left behind");
}

fn assert_fails_over(ex: &Executor, bad_dir: usize) {
    let m = sort(ex).unwrap_or_else(|e| panic!("the sort should fail over: {e:?}"));
    assert!(m.verification.ok, "{:?}", m.verification);
    assert!(m.spill_count >= 2, "{m:?}");
    assert_eq!(ex.local_dirs().failed_dirs(), vec![bad_dir]);
    assert_clean(ex);
}

#[test]
fn enospc_failpoint_in_one_dir_fails_over_and_the_sort_verifies() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ex = executor(&[a.path(), b.path()], FAILOVER);
    ex.local_dirs()
        .set_fault(fault(libc::ENOSPC, Some(1 << 20), Some(0)));
    assert_fails_over(&ex, 0);
}

/// Where the write that meets a 3 MiB failpoint starts. Uncompressed, the writer writes whole
/// 32 KiB buffers, so exactly at 3 MiB. Compressed (the default, lz4), a write is a buffer's
/// worth or a little more (it ends on a frame: at most a 32 KiB buffer plus one frame's header
/// and lz4 bound), so it starts at or before 3 MiB, and within one such write of it.
fn assert_failed_write_offset(offset: u64, compressed: bool) {
    let budget = 3u64 << 20;
    if compressed {
        let longest_write = 32 * 1024 + 16 + (16 + 4 + 32 * 1024 * 110 / 100);
        assert!(
            offset <= budget && offset + longest_write > budget,
            "a compressed spill's failed write at {offset}"
        );
    } else {
        assert_eq!(offset, budget);
    }
}

/// Compression off (the uncompressed writer's exact write offsets), and on (the default).
const SPILL_COMPRESS: [(bool, &[(&str, &str)]); 2] = [
    (false, &[("spark.shuffle.spill.compress", "false")]),
    (true, &[]),
];

/// Spark's behaviour, and spillway's default: a file goes to its hashed directory only, and a
/// directory fault there fails the task, although another directory has room.
#[test]
fn without_failover_a_fault_in_the_hashed_dir_fails_the_task_as_in_spark() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ex = executor(&[a.path(), b.path()], &[]);
    assert!(!ex.local_dirs().fails_over());
    for bad in 0..2 {
        // The sort spills at least twice, into both directories (see sort_spec): the spill
        // whose name hashes to the bad one fails the task, naming its file there.
        ex.local_dirs()
            .set_fault(fault(libc::ENOSPC, Some(1 << 20), Some(bad)));
        let (class, msg) = sort(&ex).unwrap_err();
        assert_eq!(class, "SPILL_OUT_OF_MEMORY", "{msg}");
        let dir = ex.local_dirs().dirs()[bad].display().to_string();
        assert!(
            msg.contains(&dir) && msg.contains("temp_local_"),
            "dir {bad}: {msg}"
        );
        assert_clean(&ex);
    }
}

#[test]
fn enospc_failpoint_with_one_dir_is_spill_out_of_memory_naming_the_file() {
    for (compressed, conf) in SPILL_COMPRESS {
        let a = tempfile::tempdir().unwrap();
        let ex = executor(&[a.path()], conf);
        ex.local_dirs()
            .set_fault(fault(libc::ENOSPC, Some(3 << 20), None));
        let (class, msg) = sort(&ex).unwrap_err();
        // The task memory manager asked for the spill (the sorter wanted a page): Spark wraps
        // the IOException as SPILL_OUT_OF_MEMORY.
        assert_eq!(class, "SPILL_OUT_OF_MEMORY", "{msg}");
        assert!(msg.contains("temp_local_0"), "{msg}");
        assert!(msg.contains("no space left on device"), "{msg}");
        let offset: u64 = msg
            .split("write at offset ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no write offset in {msg}"));
        assert_failed_write_offset(offset, compressed);
        assert_clean(&ex);
    }
}

#[test]
fn spill_out_of_memory_keeps_the_typed_spill_error_as_its_source() {
    for (compressed, conf) in SPILL_COMPRESS {
        let a = tempfile::tempdir().unwrap();
        let ex = executor(&[a.path()], conf);
        ex.local_dirs()
            .set_fault(fault(libc::ENOSPC, Some(3 << 20), None));
        let spec = sort_spec();
        let mut runs = run_stage(&ex, 0, 1, false, |ctx| run_sort_task(ctx, &spec), |_| {});
        match runs.remove(0).result {
            Err(TaskFailure::Task(TaskError::Memory(TaskMemoryError::SpillFailed {
                source: ConsumerSpillError::File(SpillError::StorageFull { path, offset, .. }),
                ..
            }))) => {
                assert!(path.to_string_lossy().contains("temp_local_0"), "{path:?}");
                assert_failed_write_offset(offset, compressed);
            }
            other => panic!("{:?}", other.map(|_| "the sort finished")),
        }
        assert_clean(&ex);
    }
}

#[test]
fn eio_is_typed_and_not_retried_elsewhere() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ex = executor(&[a.path(), b.path()], &[]);
    ex.local_dirs()
        .set_fault(fault(libc::EIO, Some(1 << 20), None));
    let (class, msg) = sort(&ex).unwrap_err();
    assert_eq!(class, "SPILL_OUT_OF_MEMORY", "{msg}");
    assert!(
        msg.contains("temp_local_0") && msg.contains("Uncategorized"),
        "{msg}"
    );
    assert!(
        ex.local_dirs().failed_dirs().is_empty(),
        "EIO is not a directory fault"
    );
    assert_clean(&ex);
}

#[test]
fn a_local_dir_deleted_mid_run_is_not_recreated_and_the_next_is_used() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ex = executor(&[a.path(), b.path()], FAILOVER);
    let gone = ex.local_dirs().dirs()[0].to_path_buf();
    std::fs::remove_dir_all(&gone).unwrap();
    assert_fails_over(&ex, 0);
    assert!(!gone.exists(), "a deleted private directory stays deleted");

    // With no other directory: a typed NotFound naming the file, nothing left.
    let c = tempfile::tempdir().unwrap();
    let ex = executor(&[c.path()], &[]);
    std::fs::remove_dir_all(ex.local_dirs().dirs()[0]).unwrap();
    let (class, msg) = sort(&ex).unwrap_err();
    assert_eq!(class, "SPILL_OUT_OF_MEMORY", "{msg}");
    assert!(
        msg.contains("temp_local_0") && msg.contains("NotFound"),
        "{msg}"
    );
    assert_clean(&ex);
}

#[test]
fn a_disk_block_put_that_fails_rolls_back_and_leaves_no_file() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ex = executor(&[a.path(), b.path()], FAILOVER);
    let data = PartitionData::new(stream_seed(1, 1, 0), 8 << 20, 100);
    let put = |ex: &Executor, split| {
        let block = BlockId::Rdd {
            rdd_id: 1,
            split_index: split,
        };
        let mut runs = run_stage(
            ex,
            0,
            1,
            false,
            |ctx| {
                ex.block_manager().put_partition(
                    &block,
                    StorageLevel::DISK_ONLY,
                    ctx.task_attempt_id,
                    &data,
                )
            },
            |_| {},
        );
        runs.remove(0).result
    };
    // Mid-write ENOSPC everywhere: the block's records are a stream, so there is no second
    // attempt; a typed StorageFull naming the block file.
    ex.local_dirs()
        .set_fault(fault(libc::ENOSPC, Some(1 << 20), None));
    match put(&ex, 0) {
        Err(TaskFailure::Task(StorageError::Spill(SpillError::StorageFull { path, .. }))) => {
            assert!(path.ends_with("rdd_1_0"), "{}", path.display());
        }
        other => panic!("expected StorageFull, got {:?}", other.map(|_| ())),
    }
    assert!(!ex.block_manager().disk_store().contains(&BlockId::Rdd {
        rdd_id: 1,
        split_index: 0
    }));
    assert_clean(&ex);
    // The file cannot even be created in its hashed directory: created in the other one.
    for dir in 0..2 {
        ex.local_dirs()
            .set_fault(fault(libc::ENOSPC, None, Some(dir)));
        let r = put(&ex, dir as u32 + 10);
        assert!(r.is_ok(), "dir {dir}: {:?}", r.map(|_| ()));
    }
    ex.local_dirs().set_fault(None);
    assert_eq!(ex.local_dirs().file_count(), 2);
    assert_eq!(ex.memory_manager().storage_memory_used(), 0, "DISK_ONLY");
}

#[test]
fn a_full_tmpfs_fails_over_and_its_space_comes_back() {
    let tmpfs = match Tmpfs::mount("size=8m,mode=0700") {
        Ok(t) => t,
        Err(reason) => return skip(&reason),
    };
    let other = tempfile::tempdir().unwrap();
    let baseline = tmpfs.free_bytes();
    let ex = executor(&[tmpfs.path(), other.path()], FAILOVER);
    assert_fails_over(&ex, 0);
    drop(ex);
    assert_eq!(
        tmpfs.free_bytes(),
        baseline,
        "the partial spill's blocks are freed"
    );
    assert!(files_under(tmpfs.path()).is_empty());
    assert!(private_dirs(tmpfs.path()).is_empty());
}

#[test]
fn a_tmpfs_out_of_inodes_fails_over() {
    let tmpfs = match Tmpfs::mount("size=64m,nr_inodes=64,mode=0700") {
        Ok(t) => t,
        Err(reason) => return skip(&reason),
    };
    let other = tempfile::tempdir().unwrap();
    let ex = executor(&[tmpfs.path(), other.path()], FAILOVER);
    // Use up every inode left after the private directory was made.
    let mut fillers = 0;
    loop {
        match std::fs::File::create(tmpfs.path().join(format!("filler-{fillers}"))) {
            Ok(_) => fillers += 1,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
        assert!(fillers < 64, "nr_inodes=64 did not run out");
    }
    // The spill hashed to the tmpfs cannot create its sub-directory or file (ENOSPC): it is
    // written in the other directory.
    assert_fails_over(&ex, 0);
    for i in 0..fillers {
        std::fs::remove_file(tmpfs.path().join(format!("filler-{i}"))).unwrap();
    }
    drop(ex);
    assert!(files_under(tmpfs.path()).is_empty());
}

#[test]
fn a_local_dir_remounted_read_only_mid_run_fails_over() {
    let tmpfs = match Tmpfs::mount("size=64m,mode=0700") {
        Ok(t) => t,
        Err(reason) => return skip(&reason),
    };
    let other = tempfile::tempdir().unwrap();
    let ex = executor(&[tmpfs.path(), other.path()], FAILOVER);
    tmpfs.remount(true); // root ignores modes: only a read-only mount gives EROFS
    assert_fails_over(&ex, 0);
    tmpfs.remount(false);
    drop(ex);
    assert!(private_dirs(tmpfs.path()).is_empty());
}

/// A one-task sort scenario of ~190 MiB in a 512 MiB executor (spills ~127 MiB at once).
fn scenario_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("sort.toml");
    std::fs::write(
        &p,
        "name = \"faults-sort\"\n[conf]\n\"spark.executor.memory\" = \"512m\"\n\
         \"spark.executor.cores\" = \"1\"\n[[stages]]\nkind = \"sort\"\ntasks = 1\n\
         records_per_task = 3400000\nrecord_bytes = 56\n",
    )
    .unwrap();
    p
}

fn spillway_run(wrapper: &[&str], scenario: &Path, local: &Path, out: &Path) -> Command {
    let mut c = if wrapper.is_empty() {
        Command::new(bin())
    } else {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(bin());
        c
    };
    c.arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .arg("--conf")
        .arg(format!("spark.local.dir={}", local.display()))
        .env("SPILLWAY_LOG", "warn")
        .env_remove("SPARK_LOCAL_DIRS")
        .env_remove("SPARK_EXECUTOR_DIRS");
    c
}

#[test]
fn a_local_dir_that_cannot_exist_or_is_read_only_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = scenario_file(tmp.path());
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = spillway_run(&[], &scenario, &file.join("sub"), &tmp.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Failed to create any local dir"), "{err}");
    assert!(err.contains("a-file/sub"), "{err}");

    let tmpfs = match Tmpfs::mount("size=8m,ro") {
        Ok(t) => t,
        Err(reason) => return skip(&reason),
    };
    let out = spillway_run(&[], &scenario, tmpfs.path(), &tmp.path().join("out2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
}

#[test]
fn rlimit_fsize_kills_by_sigxfsz_or_is_file_too_large_when_ignored() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        return skip("prlimit(1) is not installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let scenario = scenario_file(tmp.path());
    let local = tmp.path().join("local");
    let fsize = "--fsize=4194304";
    // Default disposition: the kernel kills the process with SIGXFSZ at the first write past
    // the limit. Not an OOM: no cgroup, no SIGKILL, the signal says which limit.
    let out = spillway_run(
        &["prlimit", fsize, "--"],
        &scenario,
        &local,
        &tmp.path().join("o1"),
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGXFSZ),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGXFSZ ignored (inherited across exec): a short write, then EFBIG = FileTooLarge.
    let sh = format!("trap '' XFSZ; exec prlimit {fsize} -- \"$@\"");
    let out = spillway_run(
        &["sh", "-c", &sh, "sh"],
        &scenario,
        &local,
        &tmp.path().join("o2"),
    )
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A failed task is a result of the run (exit 4, the failure in the report), not a crash.
    assert!(out.status.code().is_some(), "{text}");
    let report = std::fs::read_to_string(tmp.path().join("o2/report.json")).unwrap_or_default();
    assert!(
        report.contains("file too large") && report.contains("temp_local_0"),
        "{report}\n{text}"
    );
    assert!(report.contains("SPILL_OUT_OF_MEMORY"), "{report}");
    // The killed run left its private directory; the second run swept it at start, and
    // removed its own.
    assert!(
        private_dirs(&local).is_empty(),
        "{:?}",
        private_dirs(&local)
    );
}

#[test]
fn too_few_file_descriptors_is_an_error_not_a_panic() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        return skip("prlimit(1) is not installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let scenario = scenario_file(tmp.path());
    let local = tmp.path().join("local");
    // 4: stdio + one more; the merge cannot open a run (EMFILE). 32: enough.
    for nofile in [4, 32] {
        let out = spillway_run(
            &["prlimit", &format!("--nofile={nofile}"), "--"],
            &scenario,
            &local,
            &tmp.path().join(format!("o{nofile}")),
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("RLIMIT_NOFILE={nofile}: {:?}\n{err}", out.status);
        assert!(
            // 4: tasks failed (EMFILE) that the scenario does not declare.
            matches!(out.status.code(), Some(0..=2 | 4)),
            "nofile={nofile}: no panic (101) or signal: {:?}\n{err}",
            out.status
        );
        assert!(!err.contains("panicked"), "{err}");
        let report = std::fs::read_to_string(tmp.path().join(format!("o{nofile}/report.json")))
            .unwrap_or_default();
        if nofile == 4 {
            assert!(
                report.contains("Too many open files") && report.contains("temp_local_"),
                "a typed error naming the file: {report}"
            );
        } else {
            assert!(!report.contains("Too many open files"), "{report}");
        }
    }
    assert!(
        private_dirs(&local).is_empty(),
        "{:?}",
        private_dirs(&local)
    );
}

/// A map task whose local directory fills up (an 8 MiB tmpfs, ~24 MB of map output per task):
/// with each of the three writers the task fails with an IOException naming the file, and
/// nothing it wrote — temporary files, spills, a partial data or index file — is left; the
/// tmpfs's space comes back. Spark fails the task too (no other directory is tried).
#[test]
fn a_full_disk_during_a_shuffle_write_fails_the_task_and_leaves_nothing() {
    use spillway::shuffle::writer::{WriteParams, run_map_task};
    use spillway::shuffle::{Operation, ShuffleSpec, ValueClass, choose_writer};
    let tmpfs = match Tmpfs::mount("size=8m,mode=0700") {
        Ok(t) => t,
        Err(reason) => return skip(&reason),
    };
    let baseline = tmpfs.free_bytes();
    for (operation, partitions, values) in [
        (Operation::PartitionBy, 8, ValueClass::Bytes),
        (Operation::PartitionBy, 400, ValueClass::Bytes),
        (Operation::PartitionBy, 400, ValueClass::Object),
        (Operation::ReduceByKey, 8, ValueClass::Bytes),
    ] {
        let ex = executor(
            &[tmpfs.path()],
            &[
                ("spark.shuffle.compress", "false"),
                (
                    "spark.shuffle.spill.numElementsForceSpillThreshold",
                    "100000",
                ),
            ],
        );
        let spec = ShuffleSpec {
            shuffle_id: 0,
            map_tasks: 1,
            reduce_partitions: partitions,
            records_per_task: 600_000,
            record_bytes: 40,
            distinct_keys: 10_000_000,
            hot_key_percent: 0,
            compressible_percent: 0,
            operation,
            values,
            seed: 5,
        };
        let conf = spillway::conf::SparkConf::new();
        let choice = choose_writer(operation, partitions, values, &conf).unwrap();
        let params = WriteParams {
            codec: None,
            ..WriteParams::from_conf(&conf).unwrap()
        };
        let runs = run_stage(
            &ex,
            0,
            1,
            true,
            |ctx| run_map_task(ctx, &spec, &choice, &params, 0),
            |_| {},
        );
        let err = match &runs[0].result {
            Ok(_) => panic!("{:?}: the map output fit in 8 MiB", choice.kind),
            Err(e) => e.to_string(),
        };
        assert!(
            err.to_lowercase().contains("no space left"),
            "{:?}: {err}",
            choice.kind
        );
        drop(runs);
        assert!(
            files_under(tmpfs.path()).is_empty(),
            "{:?} left {:?}",
            choice.kind,
            files_under(tmpfs.path())
        );
        drop(ex);
        assert_eq!(tmpfs.free_bytes(), baseline, "{:?}", choice.kind);
    }
}
