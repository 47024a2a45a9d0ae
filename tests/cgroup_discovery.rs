//! Cgroup discovery, limit and PSI parsing from fixture texts (docs/reliability.md test plan item 1,
//! item 20's parser part, and the pure part of item 22): no file system, runs anywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use spillway::pressure::{
    CgroupError, CgroupVersion, OwnCgroup, check_limit_target, discover_from, effective_limit_with,
    parse_limit, parse_psi, set_memory_limit,
};

const V2_ONLY: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const V1_ONLY: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
";

#[test]
fn v2_only_host() {
    let scope = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-u5.scope";
    let c = discover_from(&format!("0::{scope}\n"), V2_ONLY).unwrap();
    let dir = PathBuf::from(format!("/sys/fs/cgroup{scope}"));
    assert_eq!(c.version, CgroupVersion::V2);
    assert_eq!(c.memory_dir, dir);
    assert_eq!(c.memory_mount, PathBuf::from("/sys/fs/cgroup"));
    assert_eq!(c.pressure_file, Some(dir.join("memory.pressure")));
    assert_eq!(c.unified_dir, None);
    assert!(!c.is_root());
}

#[test]
fn this_hybrid_host_takes_memory_from_v1_and_psi_from_the_v2_tree() {
    let proc = "9:name=systemd:/\n4:memory:/process_api/6791b7\n1:cpu:/\n0::/\n";
    let c = discover_from(proc, HYBRID).unwrap();
    assert_eq!(c.version, CgroupVersion::V1);
    assert_eq!(
        c.memory_dir,
        PathBuf::from("/sys/fs/cgroup/memory/process_api/6791b7")
    );
    assert_eq!(c.memory_mount, PathBuf::from("/sys/fs/cgroup/memory"));
    assert_eq!(c.unified_dir, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    assert_eq!(
        c.pressure_file,
        Some(PathBuf::from("/sys/fs/cgroup/unified/memory.pressure"))
    );
}

#[test]
fn v1_only_host_has_no_pressure_file() {
    let c = discover_from("5:memory:/yarn/container_1\n3:cpu,cpuacct:/\n", V1_ONLY).unwrap();
    assert_eq!(c.version, CgroupVersion::V1);
    assert_eq!(
        c.memory_dir,
        PathBuf::from("/sys/fs/cgroup/memory/yarn/container_1")
    );
    assert_eq!(c.pressure_file, None);
    assert_eq!(c.unified_dir, None);
}

#[test]
fn cgroup_namespace_root_is_the_mount_point() {
    let c = discover_from("0::/\n", V2_ONLY).unwrap();
    assert_eq!(c.memory_dir, PathBuf::from("/sys/fs/cgroup"));
    assert!(c.is_root(), "a namespaced '/' is the root as we see it");
}

#[test]
fn docker_mount_roots_are_stripped() {
    // Without a cgroup namespace, docker bind-mounts the container's own cgroup.
    let v1 = "40 1 0:50 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
    let c = discover_from("4:memory:/docker/abc\n", v1).unwrap();
    assert_eq!(c.memory_dir, PathBuf::from("/sys/fs/cgroup/memory"));
    let c = discover_from("4:memory:/docker/abc/inner\n", v1).unwrap();
    assert_eq!(c.memory_dir, PathBuf::from("/sys/fs/cgroup/memory/inner"));
    let v2 = "40 1 0:50 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
    let c = discover_from("0::/docker/abc\n", v2).unwrap();
    assert_eq!(c.version, CgroupVersion::V2);
    assert_eq!(c.memory_dir, PathBuf::from("/sys/fs/cgroup"));
}

#[test]
fn octal_escapes_in_mountinfo_are_decoded() {
    let mi = "41 1 0:51 / /mnt/my\\040cg\\011x rw - cgroup2 cgroup2 rw\n";
    let c = discover_from("0::/a\n", mi).unwrap();
    assert_eq!(c.memory_dir, PathBuf::from("/mnt/my cg\tx/a"));
}

#[test]
fn garbage_finds_nothing() {
    assert!(discover_from("garbage\n", "nonsense\n").is_none());
    assert!(discover_from("4:memory:/a\n", "").is_none());
    assert!(discover_from("", V2_ONLY).is_none());
}

#[test]
fn limits_max_sentinel_and_above_mem_total_are_unlimited() {
    let total = Some(24 << 30);
    assert_eq!(parse_limit("max\n", total), None);
    assert_eq!(parse_limit("9223372036854771712\n", total), None);
    assert_eq!(parse_limit("104857600\n", total), Some(104_857_600));
    assert_eq!(parse_limit(&format!("{}\n", 25u64 << 30), total), None);
    assert_eq!(parse_limit(&format!("{}\n", 24u64 << 30), total), None);
    assert_eq!(parse_limit("104857600", None), Some(104_857_600));
    assert_eq!(parse_limit("-1", total), None);
    assert_eq!(parse_limit("100M", total), None, "files hold plain numbers");
}

fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
    let m: HashMap<PathBuf, String> = entries
        .iter()
        .map(|(p, v)| (PathBuf::from(p), v.to_string()))
        .collect();
    move |p: &Path| m.get(p).cloned()
}

#[test]
fn the_lowest_ancestor_limit_wins() {
    let total = Some(24 << 30);
    let read = files(&[
        ("/cg/a/b/memory.max", "max\n"),
        ("/cg/a/memory.max", "209715200\n"),
        ("/cg/memory.max", "max\n"),
    ]);
    let v2 = effective_limit_with(
        CgroupVersion::V2,
        Path::new("/cg/a/b"),
        Path::new("/cg"),
        total,
        read,
    );
    assert_eq!(v2, Some(200 << 20));

    let read = files(&[
        ("/m/x/memory.limit_in_bytes", "9223372036854771712\n"),
        ("/m/memory.limit_in_bytes", "9223372036854771712\n"),
    ]);
    let v1 = effective_limit_with(
        CgroupVersion::V1,
        Path::new("/m/x"),
        Path::new("/m"),
        total,
        read,
    );
    assert_eq!(v1, None);

    // No limit files readable (a restricted container): v1's hierarchical_memory_limit.
    let read = files(&[(
        "/m/x/memory.stat",
        "cache 0\nrss 4096\nhierarchical_memory_limit 536870912\n",
    )]);
    let v1 = effective_limit_with(
        CgroupVersion::V1,
        Path::new("/m/x"),
        Path::new("/m"),
        total,
        read,
    );
    assert_eq!(v1, Some(512 << 20));
}

#[test]
fn psi_fixtures_including_malformed() {
    let p = parse_psi(
        "some avg10=0.12 avg60=0.00 avg300=0.00 total=9909\n\
         full avg10=0.05 avg60=0.00 avg300=0.00 total=4135\n",
    )
    .unwrap();
    assert_eq!((p.some_total_us, p.full_total_us), (9909, 4135));
    assert!(parse_psi("").is_none());
    assert!(
        parse_psi("full avg10=0 total=1\n").is_none(),
        "needs `some`"
    );
    assert!(parse_psi("some avg10=0.00 total=\n").is_none());
    assert!(parse_psi("some avg10=nan? total=1\n").is_none());
}

fn hybrid_own() -> OwnCgroup {
    discover_from("4:memory:/process_api/abc\n0::/\n", HYBRID).unwrap()
}

#[test]
fn limits_on_the_root_or_own_cgroup_are_refused_before_anything_is_written() {
    // These paths are refused by the check itself, so nothing is written even as root.
    let own = OwnCgroup::discover().unwrap_or_else(hybrid_own);
    for target in [
        own.memory_mount.clone(),
        own.memory_dir.clone(),
        own.memory_dir.join(".."),
        PathBuf::from("/"),
    ] {
        let e = set_memory_limit(&own, own.version, &target, 64 << 20).unwrap_err();
        assert!(
            matches!(e, CgroupError::RefusedTarget { .. }),
            "{}: {e}",
            target.display()
        );
        assert!(e.to_string().contains("refusing to set a memory limit"));
    }
    let e = check_limit_target(&own, &own.memory_dir).unwrap_err();
    assert!(
        e.to_string()
            .contains("it is the cgroup spillway was started in"),
        "{e}"
    );
    let e = check_limit_target(&own, &own.memory_mount).unwrap_err();
    assert!(e.to_string().contains("it is the root cgroup"), "{e}");
    assert!(check_limit_target(&own, &own.memory_dir.join("spillway-1-2")).is_ok());
}
