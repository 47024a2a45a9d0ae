//! Fuzzes the cgroup and PSI parsers of `pressure` (docs/reliability.md items 1, 20, 21):
//! `/proc/self/cgroup` + mountinfo discovery, limit files, the effective-limit walk over
//! fixture files, keyed files (`memory.stat`, `memory.events`) and `memory.pressure`.
//!
//! Input: NUL-separated parts: proc cgroup, mountinfo, a limit file, a PSI file, a keyed file,
//! a key, MemTotal (a decimal). Oracles: no panic; a limit is below MemTotal and never the v1
//! "unlimited" sentinel; discovered directories lie under their mount point.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spillway::pressure::{
    CgroupVersion, discover_from, effective_limit_with, parse_limit, parse_psi, stat_value,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (proc_cgroup, mountinfo, limit, psi, keyed, key, total) =
        (next(), next(), next(), next(), next(), next(), next());
    let mem_total: Option<u64> = total.trim().parse().ok();

    if let Some(v) = parse_limit(limit, mem_total) {
        assert!(v < 0x7FFF_FFFF_FFFF_F000, "sentinel {v} read as a limit");
        assert!(mem_total.is_none_or(|t| v < t));
    }
    let _ = parse_psi(psi);
    let _ = stat_value(keyed, key);

    let own = discover_from(proc_cgroup, mountinfo);
    let (version, dir, mount) = match &own {
        Some(c) => {
            assert!(
                c.memory_dir.starts_with(&c.memory_mount),
                "{:?} is not under {:?}",
                c.memory_dir,
                c.memory_mount
            );
            (c.version, c.memory_dir.clone(), c.memory_mount.clone())
        }
        None => (
            if limit.len() % 2 == 0 { CgroupVersion::V1 } else { CgroupVersion::V2 },
            Path::new("/sys/fs/cgroup/memory").join(key.trim_start_matches('/')),
            Path::new("/sys/fs/cgroup/memory").to_path_buf(),
        ),
    };
    // Fixture files: the limit file at every level, the keyed file as memory.stat; a level
    // whose depth is odd has no limit file.
    let read = |p: &Path| -> Option<String> {
        let name = p.file_name()?.to_str()?;
        match name {
            "memory.stat" => Some(keyed.to_string()),
            _ if p.components().count() % 2 == 1 => None,
            _ => Some(limit.to_string()),
        }
    };
    if let Some(v) = effective_limit_with(version, &dir, &mount, mem_total, read) {
        assert!(mem_total.is_none_or(|t| v < t));
    }
});
