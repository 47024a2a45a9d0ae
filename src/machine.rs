//! [`MachineInfo`]: which machine a run or a benchmark ran on, read through `sysinfo`.
//!
//! Numbers measured on one machine mean little without it: a bench's ratios depend on the CPU
//! and on how busy the machine was, a run's RSS on the memory the host had free. `sysinfo` reads
//! this on every platform it supports (on Linux from `/proc` and `/sys`; the CPU brand also on
//! aarch64, where `/proc/cpuinfo` has no `model name`), so spillway parses none of it by hand.
//!
//! Every field is what the system tells at [`MachineInfo::detect`]; where it tells nothing (a
//! sandbox hiding `/proc/loadavg`, a platform sysinfo does not support) the field is `None`
//! rather than a guess, and serialises as `null`.

use serde::Serialize;
use sysinfo::{CpuRefreshKind, System};

/// The machine a run ran on, serialised with report.json's camelCase names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineInfo {
    /// The CPU's brand string (`"AMD EPYC 7B13"`, `"Neoverse-N1"`), `None` if unknown.
    pub cpu_brand: Option<String>,
    /// The CPU architecture (`x86_64`, `aarch64`).
    pub cpu_arch: String,
    /// Physical cores, `None` if the system does not tell.
    pub physical_cores: Option<usize>,
    /// Logical CPUs (hardware threads) the system has, `None` if the system does not tell.
    pub logical_cpus: Option<usize>,
    /// Installed memory in bytes (`MemTotal`), `None` if unknown.
    pub total_memory_bytes: Option<u64>,
    /// Memory available for new allocations without swapping, in bytes (`MemAvailable`), at
    /// detection time.
    pub available_memory_bytes: Option<u64>,
    /// The load averages at detection time.
    pub load_average: Option<LoadAverage>,
    /// Operating system name (`"Debian GNU/Linux"`).
    pub os_name: Option<String>,
    /// Operating system version (`"13"`).
    pub os_version: Option<String>,
    /// Kernel version (`"6.12.48"`).
    pub kernel_version: Option<String>,
}

/// Run-queue load averages (`/proc/loadavg` on Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadAverage {
    /// Over the last minute.
    pub one_minute: f64,
    /// Over the last five minutes.
    pub five_minutes: f64,
    /// Over the last fifteen minutes.
    pub fifteen_minutes: f64,
}

impl MachineInfo {
    /// Reads the machine's description now. Cheap (a few small `/proc` and `/sys` files); it
    /// does not sample CPU usage, so it never sleeps.
    pub fn detect() -> MachineInfo {
        let sys = System::new().ok().map(|mut sys| {
            // The CPU list carries each CPU's brand; neither usage nor frequency is needed.
            sys.refresh_cpu_list(CpuRefreshKind::nothing());
            sys.refresh_memory();
            sys
        });
        let cpu_brand = sys.as_ref().and_then(|s| {
            s.cpus()
                .iter()
                .map(|c| c.brand().trim())
                .find(|b| !b.is_empty())
                .map(str::to_string)
        });
        let nonzero = |n: u64| (n > 0).then_some(n);
        MachineInfo {
            cpu_brand,
            cpu_arch: System::cpu_arch(),
            physical_cores: System::physical_core_count().ok(),
            logical_cpus: sys.as_ref().map(|s| s.cpus().len()).filter(|&n| n > 0),
            total_memory_bytes: sys.as_ref().and_then(|s| nonzero(s.total_memory())),
            available_memory_bytes: sys.as_ref().and_then(|s| nonzero(s.available_memory())),
            load_average: System::load_average().ok().map(|l| LoadAverage {
                one_minute: l.one,
                five_minutes: l.five,
                fifteen_minutes: l.fifteen,
            }),
            os_name: System::name().ok(),
            os_version: System::os_version().ok(),
            kernel_version: System::kernel_version().ok(),
        }
    }

    /// The CPU brand, or `"unknown CPU"`, for one-line summaries.
    pub fn cpu_label(&self) -> &str {
        self.cpu_brand.as_deref().unwrap_or("unknown CPU")
    }
}

/// The 1-minute load average now, `None` where the system does not tell.
pub fn load_average_1m() -> Option<f64> {
    System::load_average().ok().map(|l| l.one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_machine() {
        let m = MachineInfo::detect();
        // Linux tells all of these; a field missing here is a detection bug, not a platform gap.
        if cfg!(target_os = "linux") {
            let total = m.total_memory_bytes.expect("MemTotal");
            let available = m.available_memory_bytes.expect("MemAvailable");
            assert!(available <= total, "available {available} > total {total}");
            let logical = m.logical_cpus.expect("logical CPUs");
            let physical = m.physical_cores.expect("physical cores");
            assert!(
                (1..=logical).contains(&physical),
                "physical {physical}, logical {logical}"
            );
            assert!(m.load_average.is_some() && m.kernel_version.is_some());
            let procs = std::fs::read_to_string("/proc/cpuinfo").unwrap();
            let listed = procs.lines().filter(|l| l.starts_with("processor")).count();
            assert_eq!(logical, listed, "logical CPUs vs /proc/cpuinfo");
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
            let kib: u64 = meminfo.lines().next().unwrap()["MemTotal:".len()..]
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .unwrap();
            assert_eq!(total, kib * 1024, "MemTotal");
        }
        assert_eq!(m.cpu_arch, std::env::consts::ARCH);
    }

    #[test]
    fn serialises_with_camel_case_names() {
        let m = MachineInfo::detect();
        let v = serde_json::to_value(&m).unwrap();
        for key in [
            "cpuBrand",
            "cpuArch",
            "physicalCores",
            "logicalCpus",
            "totalMemoryBytes",
            "availableMemoryBytes",
            "loadAverage",
            "osName",
            "osVersion",
            "kernelVersion",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        if let Some(load) = m.load_average {
            assert_eq!(v["loadAverage"]["oneMinute"], load.one_minute);
        }
    }
}
