//! The process's own memory cgroup (v1 or v2) and memory pressure (PSI), read directly from
//! `/proc` and `/sys/fs/cgroup` (docs/reliability.md says why: no crate reads both trees of a hybrid
//! host correctly).
//!
//! Discovery follows the JDK's design: `/proc/self/cgroup` gives the path (`N:memory:/p` on v1,
//! `0::/p` on v2), `/proc/self/mountinfo` the mount point and root to strip. On a hybrid host
//! (a v1 memory controller beside a cgroup2 mount that only carries PSI) usage comes from v1 and
//! pressure from the v2 tree; `/proc/pressure/memory` (system-wide) is the last resort.

use std::path::{Path, PathBuf};

mod control;
pub mod report;

pub use control::{
    CgroupError, CgroupStats, ChildCgroup, check_limit_target, panic_on_oom, set_memory_limit,
    sweep_stale,
};

/// Which hierarchy the memory controller lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The memory cgroup this process is in, and where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroup {
    pub version: CgroupVersion,
    /// The directory of the memory controller's files for this cgroup.
    pub memory_dir: PathBuf,
    /// The mount point of the memory controller's hierarchy (the root cgroup as this process
    /// sees it); limits are never set on it.
    pub memory_mount: PathBuf,
    /// The `memory.pressure` file, if any (v2 tree, possibly beside a v1 controller).
    pub pressure_file: Option<PathBuf>,
    /// This process's directory in the cgroup2 tree when the memory controller is v1 (a hybrid
    /// host): a child run must be placed there too, so its PSI can be read. `None` on pure v1
    /// and on v2 (where it is `memory_dir`).
    pub unified_dir: Option<PathBuf>,
}

/// PSI memory totals (microseconds stalled) and 10-second averages (percent).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Psi {
    pub some_avg10: f64,
    pub some_total_us: u64,
    pub full_avg10: f64,
    pub full_total_us: u64,
}

/// One mount of a cgroup filesystem from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    root: String,
    mount_point: PathBuf,
    v2: bool,
    memory: bool,
}

/// Parses `/proc/self/mountinfo` lines for cgroup and cgroup2 mounts.
fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.is_empty() {
            continue;
        }
        let fstype = rfields[0];
        let (v2, memory) = match fstype {
            "cgroup2" => (true, true),
            "cgroup" => (
                false,
                rfields
                    .get(2)
                    .is_some_and(|opts| opts.split(',').any(|o| o == "memory")),
            ),
            _ => continue,
        };
        out.push(CgroupMount {
            root: unescape_mount(fields[3]),
            mount_point: PathBuf::from(unescape_mount(fields[4])),
            v2,
            memory,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(octal) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(octal, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps a cgroup path to a directory under a mount, stripping the mount's root (a container's
/// or cgroup namespace's view: docker mounts `/docker/<id>` at `/sys/fs/cgroup/memory`).
fn under_mount(mount: &CgroupMount, cgroup_path: &str) -> PathBuf {
    let rel = if mount.root == "/" {
        cgroup_path
    } else {
        cgroup_path.strip_prefix(&mount.root).unwrap_or(cgroup_path)
    };
    mount.mount_point.join(rel.trim_start_matches('/'))
}

/// Discovers the memory cgroup from the texts of `/proc/self/cgroup` and
/// `/proc/self/mountinfo`, without touching the file system: v1 when `/proc/self/cgroup` names
/// a `memory` hierarchy that is mounted (hybrid hosts included), else v2 when a cgroup2 tree is
/// mounted. [`OwnCgroup::discover`] also checks that a v2 cgroup has memory files.
pub fn discover_from(proc_cgroup: &str, mountinfo: &str) -> Option<OwnCgroup> {
    let mounts = parse_mountinfo(mountinfo);
    let mut v1_path = None;
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_path = Some(path.to_string());
        }
    }
    let v2_mount = mounts.iter().find(|m| m.v2);
    let v2_dir = match (&v2_path, v2_mount) {
        (Some(p), Some(m)) => Some(under_mount(m, p)),
        _ => None,
    };
    let pressure_file = v2_dir.as_ref().map(|d| d.join("memory.pressure"));
    if let (Some(path), Some(m)) = (&v1_path, mounts.iter().find(|m| !m.v2 && m.memory)) {
        return Some(OwnCgroup {
            version: CgroupVersion::V1,
            memory_dir: under_mount(m, path),
            memory_mount: m.mount_point.clone(),
            pressure_file,
            unified_dir: v2_dir,
        });
    }
    if let (Some(dir), Some(m)) = (v2_dir, v2_mount) {
        return Some(OwnCgroup {
            version: CgroupVersion::V2,
            memory_dir: dir,
            memory_mount: m.mount_point.clone(),
            pressure_file,
            unified_dir: None,
        });
    }
    None
}

/// v1's "unlimited": `memory.limit_in_bytes` reads `PAGE_COUNTER_MAX * page size`
/// (9223372036854771712 with 4 KiB pages); anything this large is no limit.
pub const V1_UNLIMITED_MIN: u64 = 0x7FFF_FFFF_FFFF_0000;

/// Parses a memory limit file: v2 `memory.max` (`max` = unlimited), v1 `memory.limit_in_bytes`
/// (the sentinel = unlimited). A limit at or above `mem_total_bytes` limits nothing the machine
/// could give, and is treated as unlimited (the JDK's rule). `None`: unlimited or unreadable.
pub fn parse_limit(text: &str, mem_total_bytes: Option<u64>) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let v: u64 = t.parse().ok()?;
    if v >= V1_UNLIMITED_MIN {
        return None;
    }
    if mem_total_bytes.is_some_and(|total| v >= total) {
        return None;
    }
    Some(v)
}

/// The lowest limit from `dir` up to (and including) `mount`, read through `read` (a file
/// reader, so fixtures can stand in for the file system). v1 falls back to `memory.stat`'s
/// `hierarchical_memory_limit`, which already is the effective limit.
pub fn effective_limit_with(
    version: CgroupVersion,
    dir: &Path,
    mount: &Path,
    mem_total_bytes: Option<u64>,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let file = match version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    let mut lowest: Option<u64> = None;
    let mut any_read = false;
    let mut d = dir.to_path_buf();
    loop {
        if let Some(text) = read(&d.join(file)) {
            any_read = true;
            if let Some(v) = parse_limit(&text, mem_total_bytes) {
                lowest = Some(lowest.map_or(v, |l| l.min(v)));
            }
        }
        if d == mount || !d.pop() || !d.starts_with(mount) {
            break;
        }
    }
    if !any_read && version == CgroupVersion::V1 {
        let stat = read(&dir.join("memory.stat"))?;
        let v = stat_value(&stat, "hierarchical_memory_limit")?;
        return parse_limit(&v.to_string(), mem_total_bytes);
    }
    lowest
}

/// The value of `key` in a keyed file (`memory.stat`, `memory.events`: `key value` lines).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_value(&text, "MemTotal:")
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_value(&text, "MemAvailable:")
}

fn meminfo_value(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl OwnCgroup {
    /// The memory cgroup of this process, if one is mounted.
    pub fn discover() -> Option<OwnCgroup> {
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let c = discover_from(&proc_cgroup, &mountinfo)?;
        if c.version == CgroupVersion::V2 {
            // A cgroup2 tree without the memory controller (a hybrid host whose memory
            // controller is not mounted) has no usage to read.
            let d = &c.memory_dir;
            if !(d.join("memory.current").exists()
                || d.join("memory.max").exists()
                || d.join("memory.stat").exists())
            {
                return None;
            }
        }
        Some(c)
    }

    /// Whether this is the root of its hierarchy (as this process sees it).
    pub fn is_root(&self) -> bool {
        self.memory_dir == self.memory_mount
    }

    /// Current usage: v2 `memory.current`; v1 `memory.usage_in_bytes`.
    pub fn usage_bytes(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read_u64(&self.memory_dir.join(file))
    }

    /// The effective memory limit: the lowest limit of this cgroup and its ancestors up to the
    /// mount point; `None` when unlimited (a limit ≥ MemTotal counts as unlimited).
    pub fn limit_bytes(&self) -> Option<u64> {
        effective_limit_with(
            self.version,
            &self.memory_dir,
            &self.memory_mount,
            mem_total_bytes(),
            |p| std::fs::read_to_string(p).ok(),
        )
    }

    /// PSI of this cgroup, else of the whole system.
    pub fn psi(&self) -> Option<Psi> {
        self.pressure_file
            .as_deref()
            .and_then(read_psi)
            .or_else(|| read_psi(Path::new("/proc/pressure/memory")))
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads and parses a PSI file.
pub fn read_psi(path: &Path) -> Option<Psi> {
    parse_psi(&std::fs::read_to_string(path).ok()?)
}

/// Parses `some avg10=.. avg60=.. avg300=.. total=..` / `full ...` lines.
pub fn parse_psi(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    let mut seen = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let which = words.next()?;
        let (mut avg10, mut total) = (None, None);
        for w in words {
            if let Some(v) = w.strip_prefix("avg10=") {
                avg10 = v.parse().ok();
            } else if let Some(v) = w.strip_prefix("total=") {
                total = v.parse().ok();
            }
        }
        let (Some(avg10), Some(total)) = (avg10, total) else {
            return None;
        };
        match which {
            "some" => {
                psi.some_avg10 = avg10;
                psi.some_total_us = total;
                seen = true;
            }
            "full" => {
                psi.full_avg10 = avg10;
                psi.full_total_us = total;
            }
            _ => return None,
        }
    }
    seen.then_some(psi)
}

impl crate::exit::Exit for CgroupError {
    /// A missing, refused or unwritable cgroup is the machine's state, not the user's input.
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu
";

    #[test]
    fn hybrid_host_uses_v1_memory_and_v2_pressure() {
        let proc = "4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice\n";
        let c = discover_from(proc, HYBRID_MOUNTINFO).unwrap();
        assert_eq!(c.version, CgroupVersion::V1);
        assert_eq!(
            c.memory_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(
            c.pressure_file,
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/user.slice/memory.pressure"
            ))
        );
        assert_eq!(
            c.unified_dir,
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice"))
        );
    }

    #[test]
    fn mount_roots_are_stripped_and_escapes_decoded() {
        let mi = "40 1 0:50 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  41 1 0:51 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        let c = discover_from("5:memory:/docker/abc/inner\n", mi).unwrap();
        assert_eq!(c.memory_dir, PathBuf::from("/sys/fs/cgroup/memory/inner"));
        let mounts = parse_mountinfo(mi);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/mnt/my cg"));
        assert!(discover_from("garbage\n", "nonsense\n").is_none());
    }

    #[test]
    fn psi_parses_and_refuses_malformed_text() {
        let p = parse_psi(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\n\
             full avg10=0.25 avg60=0.00 avg300=0.00 total=99\n",
        )
        .unwrap();
        assert_eq!((p.some_total_us, p.full_total_us), (1234, 99));
        assert_eq!((p.some_avg10, p.full_avg10), (1.5, 0.25));
        assert!(parse_psi("").is_none());
        assert!(parse_psi("some avg10=x total=1\n").is_none());
        assert!(parse_psi("weird avg10=1 total=1\n").is_none());
    }

    #[test]
    fn this_machine_is_readable_or_absent() {
        // On any host this must not panic; where a cgroup is found its usage is a number.
        if let Some(c) = OwnCgroup::discover() {
            let _ = c.usage_bytes();
            let _ = c.psi();
        }
    }
}
