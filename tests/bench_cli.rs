//! `spillway bench --json --size 8m`: runs, prints every key of the report, and leaves no file
//! behind. Structure only: speeds are never asserted (the machine is shared).

use std::process::Command;

#[test]
fn bench_json_has_every_key_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["bench", "--json", "--size", "8m", "--repeats", "1", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "disk_write",
        "disk_read",
        "first_touch",
        "memcpy",
        "lz4_compress",
        "snappy_compress",
        "zstd_compress",
        "shuffle_lz4_compress",
        "shuffle_snappy_compress",
        "shuffle_zstd_compress",
    ] {
        let rate = &v["limits"][key];
        assert!(
            rate["median_bytes_per_sec"].is_number(),
            "limits.{key}: {v}"
        );
    }
    for key in [
        "spill_write",
        "spill_read_merge",
        "evict",
        "evict_and_release",
        "spill_write_lz4",
        "spill_write_snappy",
        "spill_write_zstd",
        "shuffle_write_bypass",
        "shuffle_write_serialized",
        "shuffle_read_local",
        "shuffle_read_remote",
        "shuffle_write_lz4",
        "shuffle_write_snappy",
        "shuffle_write_zstd",
    ] {
        assert!(
            v["spillway"][key]["median_bytes_per_sec"].is_number(),
            "spillway.{key}"
        );
    }
    for key in [
        "spill_write_vs_disk_write",
        "spill_read_vs_disk_read",
        "evict_vs_disk_write",
        "spill_write_lz4_vs_lz4_compress",
        "spill_write_snappy_vs_snappy_compress",
        "spill_write_zstd_vs_zstd_compress",
        "shuffle_write_bypass_vs_disk_write",
        "shuffle_write_serialized_vs_disk_write",
        "shuffle_read_local_vs_disk_read",
        "shuffle_write_lz4_vs_shuffle_lz4_compress",
        "shuffle_write_snappy_vs_shuffle_snappy_compress",
        "shuffle_write_zstd_vs_shuffle_zstd_compress",
    ] {
        let r = &v["ratios"][key];
        assert!(r["median"].is_number(), "ratios.{key}: {v}");
        assert!(r["meets_target"].is_boolean(), "ratios.{key}");
        assert!(r["target"].is_number(), "ratios.{key}");
    }
    for key in [
        "spill_write_lz4_vs_lz4_compress",
        "spill_write_snappy_vs_snappy_compress",
        "spill_write_zstd_vs_zstd_compress",
        "shuffle_write_lz4_vs_shuffle_lz4_compress",
        "shuffle_write_snappy_vs_shuffle_snappy_compress",
        "shuffle_write_zstd_vs_shuffle_zstd_compress",
    ] {
        assert_eq!(v["ratios"][key]["target"], 0.9, "ratios.{key}");
    }
    for key in [
        "shuffle_write_bypass_vs_disk_write",
        "shuffle_write_serialized_vs_disk_write",
        "shuffle_read_local_vs_disk_read",
    ] {
        assert_eq!(v["ratios"][key]["target"], 0.8, "ratios.{key}");
    }
    // The codec rows say what they measured: text-like records that compress.
    let c = &v["config"];
    assert!(
        c["codec_records"].as_str().unwrap().contains("text-like"),
        "{c}"
    );
    for codec in ["lz4", "snappy", "zstd"] {
        for key in ["codec_stored_fraction", "shuffle_codec_stored_fraction"] {
            let f = c[key][codec].as_f64().unwrap();
            assert!(f > 0.0 && f < 1.0, "{key}.{codec}: {c}");
        }
    }
    // The shuffle rows say what they timed: the writer on records generated beforehand.
    assert!(c["shuffle_partitions"].as_u64().unwrap() > 1, "{c}");
    for key in ["shuffle_records", "shuffle_write", "shuffle_read"] {
        assert!(c[key].as_str().is_some_and(|s| !s.is_empty()), "{key}: {c}");
    }
    assert!(
        c["shuffle_records"]
            .as_str()
            .unwrap()
            .contains("before the clock starts"),
        "{c}"
    );
    // Reported without a target.
    for key in [
        "evict_and_release_vs_disk_write",
        "shuffle_read_remote_vs_disk_read",
    ] {
        let r = &v["ratios"][key];
        assert!(
            r["median"].is_number() && r["target"].is_null(),
            "{key}: {r}"
        );
    }
    assert_eq!(v["config"]["size_bytes"], 8 << 20);
    // How busy the machine was, where the system tells (PSI may be absent: null).
    let m = &v["machine"];
    assert!(m["load_average_1m_start"].is_number(), "{m}");
    let p = &m["cpu_pressure_some"];
    assert!(
        p.is_null() || (0.0..=2.0).contains(&p.as_f64().unwrap()),
        "{m}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn bench_rejects_a_bad_size() {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["bench", "--size", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
