//! Resident-memory helpers: the OS page size and the process's resident set size from `/proc`.

use std::sync::OnceLock;

/// The OS page size in bytes (`sysconf(_SC_PAGESIZE)`), read once.
pub fn os_page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
    })
}

/// The resident set size of this process in bytes.
///
/// Reads `Rss:` from `/proc/self/smaps_rollup` (exact, summed over the mappings) and falls back
/// to `VmRSS:` in `/proc/self/status` (kept by the kernel per-CPU and possibly a little stale).
/// This is the number the layout, the timeline and the accounted-vs-real drift report compare
/// with the model.
pub fn process_rss_bytes() -> std::io::Result<u64> {
    match std::fs::read_to_string("/proc/self/smaps_rollup") {
        Ok(text) => parse_kib_field(&text, "Rss:"),
        Err(_) => parse_kib_field(&std::fs::read_to_string("/proc/self/status")?, "VmRSS:"),
    }
}

/// The resident set size from `/proc/self/statm` (the kernel's counters, the same as
/// `VmRSS`): constant time, unlike `smaps_rollup`, which walks every mapping and takes
/// milliseconds once the heap is mapped; the timeline samples with this.
pub fn process_rss_bytes_fast() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("cannot parse /proc/self/statm: {text:?}")))?;
    Ok(pages * os_page_size())
}

/// Finds `field  <n> kB` in a `/proc` text and returns `n * 1024`.
fn parse_kib_field(text: &str, field: &str) -> std::io::Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| std::io::Error::other(format!("no {field} line in /proc")))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("cannot parse /proc line {line:?}")))?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_proc_formats() {
        let status = "Name:\tx\nVmRSS:\t  123 kB\nVmSwap: 0 kB\n";
        assert_eq!(parse_kib_field(status, "VmRSS:").unwrap(), 123 * 1024);
        let rollup = "55d-7ff ---p 0 00:00 0 [rollup]\nRss:              8448 kB\nPss: 1 kB\n";
        assert_eq!(parse_kib_field(rollup, "Rss:").unwrap(), 8448 * 1024);
        assert!(parse_kib_field("Pss: 1 kB\n", "Rss:").is_err());
    }

    #[test]
    fn process_rss_is_plausible() {
        let rss = process_rss_bytes().unwrap();
        assert!(rss > 1 << 20 && rss < 64 << 30, "rss {rss} bytes");
        let fast = process_rss_bytes_fast().unwrap();
        assert!(
            fast.abs_diff(rss) < 16 << 20,
            "statm {fast} vs smaps_rollup {rss}"
        );
        assert!(os_page_size().is_power_of_two());
    }
}
