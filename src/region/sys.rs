//! Thin safe wrappers over the few process-control syscalls spillway's external workers need
//! (`getrlimit`/`setrlimit` of `RLIMIT_AS`), kept here because only `region` may hold `unsafe`.

/// A resource limit pair; `None` is `RLIM_INFINITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitAs {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
}

fn from_rlim(v: libc::rlim_t) -> Option<u64> {
    if v == libc::RLIM_INFINITY {
        None
    } else {
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
        Some(v as u64)
    }
}

/// This process's `RLIMIT_AS` (address-space limit), as `resource.getrlimit(RLIMIT_AS)`.
pub fn get_rlimit_as() -> std::io::Result<RlimitAs> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`; getrlimit writes only into it.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(RlimitAs {
        soft_bytes: from_rlim(lim.rlim_cur),
        hard_bytes: from_rlim(lim.rlim_max),
    })
}

/// Sets this process's `RLIMIT_AS` soft and hard limits to `bytes`, as PySpark's worker does
/// with `resource.setrlimit(RLIMIT_AS, (n, n))`. Lowering is always allowed; raising the hard
/// limit needs `CAP_SYS_RESOURCE` and fails with `EPERM`.
pub fn set_rlimit_as(bytes: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: `lim` is a valid `rlimit` read by the kernel; setrlimit has no other effects on
    // memory this process owns.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
