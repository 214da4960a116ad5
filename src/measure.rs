//! CPU and memory of a process, read from `/proc` (Linux), for the benchmarks.

use std::time::Duration;

/// User and system CPU time of a process so far (clock-tick resolution).
pub fn cpu_time(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|t| t.parse().ok()).unwrap_or(0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { sysconf(SC_CLK_TCK) } as f64;
    (
        Duration::from_secs_f64(ticks(11) as f64 / hz),
        Duration::from_secs_f64(ticks(12) as f64 / hz),
    )
}

/// Time the scheduler ran a process's threads so far (nanosecond
/// accounting, where `cpu_time`'s user/system split comes in clock ticks).
pub fn scheduled_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    threads
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// Peak resident set size (VmHWM), in kB.
pub fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Whole microseconds.
pub fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round()
}

const SC_CLK_TCK: i32 = 2; // Linux

extern "C" {
    fn sysconf(name: i32) -> i64;
}
