//! The process metrics Prometheus' Go client exports (`process_*`), read from `/proc` at each
//! scrape. Only on Linux; elsewhere, and when `/proc` cannot be read, they are left out.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Clock ticks per second of `/proc/<pid>/stat`: `USER_HZ` is 100 on every Linux ABI the
/// SDK runs on (the Go client assumes the same).
const USER_HZ: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Reading {
    /// User and system CPU time, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub(crate) virtual_bytes: u64,
    /// Open file descriptors.
    pub(crate) open_fds: u64,
    /// The soft limit on open file descriptors.
    pub(crate) max_fds: Option<u64>,
    /// Start time, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: f64,
}

impl Reading {
    /// Reads `/proc/self`; `None` where there is no `/proc` or it does not parse.
    pub(crate) fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut reading = parse(&stat, &boot, &status, &limits)?;
        // The directory listing holds its own descriptor open while it is read.
        reading.open_fds = open_fds.saturating_sub(1);
        Some(reading)
    }
}

/// The reading in the texts of `/proc/self/stat`, `/proc/stat`, `/proc/self/status` and
/// `/proc/self/limits` (file descriptors are counted by the caller).
fn parse(stat: &str, boot: &str, status: &str, limits: &str) -> Option<Reading> {
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted
    // after its closing parenthesis, from field 3 (`state`).
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
    let cpu_seconds = (field(14)? + field(15)?) / USER_HZ;
    let virtual_bytes = fields.get(23 - 3)?.parse().ok()?;
    let started_ticks = field(22)?;
    let boot_time: f64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let resident_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    Some(Reading {
        cpu_seconds,
        resident_bytes: resident_kib * 1024,
        virtual_bytes,
        open_fds: 0,
        max_fds,
        start_time_seconds: boot_time + started_ticks / USER_HZ,
    })
}

/// Encodes the process metrics at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(reading) = Reading::now() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(reading.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                reading.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                reading.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                reading.open_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                reading.start_time_seconds,
            ),
        ];
        let max_fds = reading.max_fds.map(|max| {
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            )
        });
        for (name, help, value) in gauges.into_iter().chain(max_fds) {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const STAT: &str = "4242 (my (odd) op) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 \
                        20 0 9 0 123456 104857600 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 \
                        0 0 17 1 0 0 0 0 0";

    #[test]
    fn the_proc_files_parse_into_a_reading() {
        let reading = parse(
            STAT,
            "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n",
            "Name:\top\nVmRSS:\t   20480 kB\n",
            "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n",
        )
        .unwrap();
        assert_eq!(reading.cpu_seconds, 3.0);
        assert_eq!(reading.resident_bytes, 20 * 1024 * 1024);
        assert_eq!(reading.virtual_bytes, 104_857_600);
        assert_eq!(reading.max_fds, Some(1024));
        assert_eq!(reading.start_time_seconds, 1_700_000_000.0 + 1234.56);
    }

    #[test]
    fn text_that_is_not_proc_reads_as_nothing() {
        assert_eq!(parse("garbage", "", "", ""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_sanely() {
        let reading = Reading::now().unwrap();
        assert!(reading.resident_bytes > 1024 * 1024, "{reading:?}");
        assert!(reading.open_fds >= 3, "{reading:?}");
        assert!(reading.start_time_seconds > 1.5e9, "{reading:?}");
    }
}
