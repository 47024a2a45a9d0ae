//! `ChildCgroup` through the library: create, limit and read back, observe, and removal on drop,
//! on `remove` and on a panic (docs/reliability.md test plan items 19 and 22). Needs a writable
//! memory cgroup; otherwise prints `SKIPPED: <test>: <reason>` (`skip_support`) and returns.

use std::path::PathBuf;

use spillway::pressure::{CgroupVersion, ChildCgroup, OwnCgroup};

mod skip_support;
use skip_support::skip;

fn own_writable() -> Result<OwnCgroup, String> {
    let own = OwnCgroup::discover().ok_or("no memory cgroup is mounted")?;
    if own.version == CgroupVersion::V2 {
        // Creating a v2 child may move this test process (the no-internal-process rule); the
        // binary-level tests cover v2 through `spillway run --cgroup`.
        return Err("v2: covered by tests/cgroup_run.rs, not in-process".into());
    }
    skip_support::probe_child_cgroup(&own.memory_dir, "memory.limit_in_bytes")?;
    Ok(own)
}

fn dirs(c: &ChildCgroup) -> Vec<PathBuf> {
    std::iter::once(c.memory_dir().to_path_buf())
        .chain(c.unified_dir().map(|p| p.to_path_buf()))
        .collect()
}

#[test]
fn create_limit_observe_and_remove() {
    let own = match own_writable() {
        Ok(o) => o,
        Err(r) => return skip(&r),
    };
    let c = ChildCgroup::create(&own).unwrap();
    assert!(
        c.name()
            .starts_with(&format!("spillway-{}-", std::process::id()))
    );
    assert!(c.memory_dir().starts_with(&own.memory_dir));
    assert_ne!(c.memory_dir(), own.memory_dir);
    let made = dirs(&c);
    assert!(made.iter().all(|d| d.is_dir()));
    assert_eq!(c.set_limit(96 << 20).unwrap(), 96 << 20);
    // The own cgroup's limit was not touched.
    assert_eq!(
        own.limit_bytes(),
        OwnCgroup::discover().unwrap().limit_bytes()
    );
    assert_eq!(c.as_own().limit_bytes(), Some(96 << 20));
    let s = c.stats();
    assert_eq!(s.oom_kill, 0);
    assert_eq!(s.usage_bytes, 0, "nothing runs in it yet");
    assert!(c.procs().is_empty());
    if c.unified_dir().is_some() {
        assert!(s.psi.is_some(), "the hybrid host's v2 directory gives PSI");
    }
    c.remove().unwrap();
    assert!(made.iter().all(|d| !d.exists()), "{made:?}");
}

#[test]
fn drop_removes_it_even_during_a_panic() {
    let own = match own_writable() {
        Ok(o) => o,
        Err(r) => return skip(&r),
    };
    let made = std::panic::catch_unwind(|| {
        let c = ChildCgroup::create(&own).unwrap();
        c.set_limit(64 << 20).unwrap();
        let d = dirs(&c);
        std::panic::panic_any(d);
    })
    .unwrap_err()
    .downcast::<Vec<PathBuf>>()
    .unwrap();
    assert!(!made.is_empty());
    assert!(made.iter().all(|d| !d.exists()), "{made:?}");
}
