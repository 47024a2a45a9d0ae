//! What runs as root must not hand files to other users or write limits where it should not
//! (docs/reliability.md test plan 22): private directories 0700, spill and block files 0600,
//! sizes checked against the layout before anything is allocated, and no limit ever written
//! to the root or own cgroup.

mod faults_support;
mod skip_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use faults_support::{bin, executor, files_under};
use skip_support::skip;
use spillway::data::{PartitionData, stream_seed};
use spillway::pressure::OwnCgroup;
use spillway::pressure::check_limit_target;
use spillway::scheduler::run_stage;
use spillway::spill::{SpillKind, SpillWriterOptions};
use spillway::storage::{BlockId, StorageLevel};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn private_dirs_are_0700_and_spill_and_block_files_0600() {
    let root = tempfile::tempdir().unwrap();
    let ex = executor(&[root.path()], &[]);
    let private = ex.local_dirs().dirs()[0].to_path_buf();
    assert_eq!(mode(&private), 0o700, "{}", private.display());

    // A spill, checked while it exists.
    let mut opts = SpillWriterOptions::new(SpillKind::SortRun);
    opts.fixed_record_bytes = Some(8);
    let info = ex
        .local_dirs()
        .write_temp_file("temp_local", &opts, &mut |w| w.write_record(&[1u8; 8]))
        .unwrap();
    assert_eq!(mode(&info.path), 0o600, "{}", info.path.display());
    assert_eq!(mode(info.path.parent().unwrap()), 0o700, "sub-directory");
    std::fs::remove_file(&info.path).unwrap();

    // A block on disk.
    let data = PartitionData::new(stream_seed(1, 1, 0), 1 << 20, 100);
    let block = BlockId::Rdd {
        rdd_id: 1,
        split_index: 0,
    };
    let runs = run_stage(
        &ex,
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
    assert!(runs[0].result.is_ok());
    let files = files_under(&private);
    assert_eq!(files.len(), 1);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        assert_eq!(mode(f.parent().unwrap()), 0o700);
    }
    drop(ex);
    assert!(!private.exists());
}

#[test]
fn no_limit_is_ever_written_to_the_root_or_own_cgroup() {
    let Some(own) = OwnCgroup::discover() else {
        return skip("no memory cgroup is mounted");
    };
    for target in [
        own.memory_mount.clone(),
        own.memory_dir.clone(),
        own.memory_dir.join(".."),
        own.memory_dir.join("spillway-1-x/../.."),
        std::path::PathBuf::from("/"),
    ] {
        let e = check_limit_target(&own, &target).expect_err(&target.display().to_string());
        assert!(e.to_string().contains("refus") || !e.to_string().is_empty());
    }
    assert!(check_limit_target(&own, &own.memory_dir.join("spillway-1-x")).is_ok());
}

/// A record larger than the largest page (or the heap) is refused before anything is
/// allocated, naming the key, with exit 2 (`run::validate_sizes`).
#[test]
fn a_record_or_partition_larger_than_the_heap_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, stage) in [
        (
            "record_bytes",
            "kind = \"sort\"\ntasks = 1\nrecords_per_task = 2\nrecord_bytes = \"1g\"",
        ),
        (
            "record_bytes",
            "kind = \"cache\"\npartitions = 1\npartition_bytes = \"2g\"\nrecord_bytes = \"1g\"",
        ),
    ] {
        let p = tmp.path().join("big.toml");
        std::fs::write(
            &p,
            format!(
                "name = \"big\"\n[conf]\n\"spark.executor.memory\" = \"512m\"\n[[stages]]\n{stage}\n"
            ),
        )
        .unwrap();
        let out = Command::new(bin())
            .arg("run")
            .arg(&p)
            .arg("--out")
            .arg(tmp.path().join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stage}: {err}");
        assert!(err.contains(key), "{err}");
    }
}
