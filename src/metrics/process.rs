//! The standard `process_*` metrics, read from `/proc/self` at scrape time (Linux).

use super::render::{Kind, Value, Writer};

/// Clock ticks per second of `/proc/self/stat` times; 100 on every Linux we run on.
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) fn render(w: &mut Writer, start_time: f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // Indexes are the stat(5) field numbers minus 3.
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        w.header(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
        );
        let cpu = (utime + stime) as f64 / TICKS_PER_SECOND;
        w.sample(
            "process_cpu_seconds_total",
            "",
            &[],
            None,
            Value::Float(cpu),
        );
    }
    if let Some(vsize) = field(20) {
        w.header(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
        );
        w.sample(
            "process_virtual_memory_bytes",
            "",
            &[],
            None,
            Value::Int(vsize),
        );
    }
    if let Some(rss_pages) = field(21) {
        w.header(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        );
        w.sample(
            "process_resident_memory_bytes",
            "",
            &[],
            None,
            Value::Int(rss_pages * 4096),
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        w.header(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
        );
        w.sample(
            "process_open_fds",
            "",
            &[],
            None,
            Value::Int(dir.count() as u64),
        );
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
    {
        w.header(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
        );
        w.sample("process_max_fds", "", &[], None, Value::Int(max));
    }
    w.header(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    );
    w.sample(
        "process_start_time_seconds",
        "",
        &[],
        None,
        Value::Float(start_time),
    );
}
