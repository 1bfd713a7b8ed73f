//! Where the machine's CPU went during the burst: the worker, PostgreSQL, RabbitMQ, the
//! bench itself and the rest, read from Linux's `/proc`. On two cores the burst is bound
//! by the CPU, so this split says what a change must shrink; and the steal time says
//! when a slow run was the host's doing, not the build's.
//!
//! The host can slow a guest without any steal (a busy sibling hyper-thread, a lower
//! clock): the same `sha256sum` took 0.63 to 1.00 s of CPU on an idle machine within half
//! a minute. So each sample also times a fixed piece of work on the bench's own CPU clock
//! (the *probe*), and the report gives the burst's cost per mail in probes too: a rough
//! gauge, less swayed by such moments than milliseconds are (docs/BENCHMARKS.md).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Who a process's CPU time is counted to; the discriminant indexes [`Sample`]'s groups
/// and [`NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Worker,
    Postgres,
    Rabbitmq,
    Bench,
    Other,
}

/// The groups' names in the report, in discriminant order.
const NAMES: [&str; 5] = ["worker", "postgresql", "rabbitmq", "bench", "other"];

impl Group {
    /// `comm` is the process's name as `/proc/<pid>/stat` gives it.
    fn of(pid: u32, comm: &str, worker: u32, bench: u32) -> Group {
        match comm {
            _ if pid == worker => Group::Worker,
            _ if pid == bench => Group::Bench,
            "postgres" => Group::Postgres,
            "beam.smp" => Group::Rabbitmq,
            _ => Group::Other,
        }
    }
}

/// The machine's CPU counters at one instant, in clock ticks.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Busy (not idle, not waiting on I/O) ticks of all cores; steal excluded.
    busy: u64,
    /// Every tick of all cores.
    total: u64,
    /// Ticks the hypervisor gave to other guests.
    steal: u64,
    /// Busy ticks by group, summed over each group's live processes.
    groups: [u64; 5],
    /// CPU nanoseconds the probe took at this sample.
    probe_ns: Option<u64>,
}

/// `(busy, total, steal)` from `/proc/stat`'s first line
/// (`cpu user nice system idle iowait irq softirq steal ...`).
fn machine(stat: &str) -> Option<(u64, u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    let total = f.iter().take(8).sum();
    Some((busy, total, at(7)))
}

/// `(pid, comm, utime + stime)` of one `/proc/<pid>/stat`. The name sits in parentheses
/// and may itself hold spaces or parentheses, so the fields are counted from the last `)`.
fn process(stat: &str) -> Option<(u32, &str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat.get(..open)?.trim().parse().ok()?;
    let comm = stat.get(open + 1..close)?;
    // After the name: state (field 3) ... utime (14), stime (15).
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((pid, comm, utime + stime))
}

/// Reads the counters now; `None` where `/proc` is not Linux's.
fn sample(worker: u32, bench: u32) -> Option<Sample> {
    let (busy, total, steal) = machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mut groups = [0u64; 5];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may end between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pid, comm, ticks)) = process(&stat) {
            groups[Group::of(pid, comm, worker, bench) as usize] += ticks;
        }
    }
    Some(Sample {
        at: Utc::now(),
        busy,
        total,
        steal,
        groups,
        probe_ns: probe(),
    })
}

/// Numbers the probe sorts: 32,768 of them (256 KiB) stay in a core's cache, so the probe
/// measures the core, not the memory bus, in under a millisecond (about 0.4 ms here).
const PROBE_LEN: u64 = 32_768;

/// CPU nanoseconds this thread takes to fill and sort [`PROBE_LEN`] pseudo-random numbers;
/// time spent preempted is not counted, so a saturated machine does not inflate it.
fn probe() -> Option<u64> {
    let before = thread_cpu_ns()?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v: Vec<u64> = (0..PROBE_LEN)
        .map(|_| {
            // xorshift64 from a fixed seed: the same numbers, so the same work, every time.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    v.sort_unstable();
    std::hint::black_box(&v);
    thread_cpu_ns()?.checked_sub(before)
}

/// This thread's CPU clock, in nanoseconds.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if r != 0 {
        return None;
    }
    Some(u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?)
}

/// Samples the counters on an interval until dropped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling now, every `every`; `worker` is the worker process's pid.
    pub fn start(worker: u32, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let bench = std::process::id();
        let into = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(s) = tokio::task::spawn_blocking(move || sample(worker, bench))
                    .await
                    .ok()
                    .flatten()
                else {
                    return;
                };
                into.lock().unwrap_or_else(PoisonError::into_inner).push(s);
            }
        });
        Sampler { samples, task }
    }

    /// The split from the first sample to the first taken at or after `until`.
    pub fn split_until(&self, until: DateTime<Utc>) -> Option<Split> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let first = samples.first()?;
        let end = samples.iter().position(|s| s.at >= until)?;
        let mut s = split(first, &samples[end])?;
        s.probe_us = median_probe_us(&samples[..=end]);
        Some(s)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What happened between two samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub seconds: f64,
    /// Share of all cores' time that was busy.
    pub busy: f64,
    /// Share of all cores' time the hypervisor took.
    pub steal: f64,
    /// Each group's share of the busy time, in [`NAMES`] order.
    pub groups: Vec<(&'static str, f64)>,
    /// Busy CPU seconds, all cores.
    pub busy_seconds: f64,
    /// The probe's median CPU time over the samples, in microseconds.
    pub probe_us: Option<f64>,
}

/// The median probe time of `samples`, in microseconds: the median, since a probe that a
/// context switch interrupted also paid for refilling the cache.
fn median_probe_us(samples: &[Sample]) -> Option<f64> {
    let mut ns: Vec<u64> = samples.iter().filter_map(|s| s.probe_ns).collect();
    ns.sort_unstable();
    ns.get(ns.len() / 2).map(|n| *n as f64 / 1000.0)
}

fn split(a: &Sample, b: &Sample) -> Option<Split> {
    let total = b.total.checked_sub(a.total).filter(|t| *t > 0)? as f64;
    let busy = b.busy.saturating_sub(a.busy) as f64;
    let by: Vec<f64> = a
        .groups
        .iter()
        .zip(&b.groups)
        .map(|(x, y)| y.saturating_sub(*x) as f64)
        .collect();
    let counted: f64 = by.iter().sum::<f64>().max(1.0);
    Some(Split {
        seconds: (b.at - a.at).num_milliseconds() as f64 / 1000.0,
        busy: busy / total,
        steal: b.steal.saturating_sub(a.steal) as f64 / total,
        groups: NAMES
            .into_iter()
            .zip(by)
            .map(|(g, t)| (g, t / counted))
            .collect(),
        busy_seconds: busy / USER_HZ,
        probe_us: None,
    })
}

/// Linux's `USER_HZ`, the unit of `/proc`'s CPU counters: fixed at 100 for user space
/// whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} s, cores {:.0} % busy, {:.1} % stolen by the host; of the busy time:",
            self.seconds,
            self.busy * 100.0,
            self.steal * 100.0
        )?;
        for (i, (name, share)) in self.groups.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{name} {:.0} %", share * 100.0)?;
        }
        if let Some(p) = self.probe_us {
            write!(f, "; the speed probe took {p:.0} µs")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_gives_busy_total_and_steal() {
        let stat = "cpu  344322 7 69710 240246 8485 3 17563 4725 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let (busy, total, steal) = machine(stat).unwrap();
        assert_eq!(busy, 344322 + 7 + 69710 + 3 + 17563);
        assert_eq!(total, 344322 + 7 + 69710 + 240246 + 8485 + 3 + 17563 + 4725);
        assert_eq!(steal, 4725);
        assert_eq!(machine("intr 1 2 3"), None);
    }

    #[test]
    fn a_process_line_is_read_from_the_last_parenthesis() {
        let line = "3026 (beam.smp) S 1 3026 3026 0 -1 4194560 96 0 0 0 1500 250 0 0 20 0 40 0";
        assert_eq!(process(line), Some((3026, "beam.smp", 1750)));
        // A name with a space and a parenthesis of its own.
        let odd = "77 (tokio (rt) x) R 1 77 77 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0";
        assert_eq!(process(odd), Some((77, "tokio (rt) x", 10)));
        assert_eq!(process("77 (short) R 1"), None);
    }

    #[test]
    fn processes_are_counted_to_their_group() {
        assert_eq!(Group::of(10, "gochat", 10, 11), Group::Worker);
        assert_eq!(Group::of(11, "gochat", 10, 11), Group::Bench);
        assert_eq!(Group::of(12, "postgres", 10, 11), Group::Postgres);
        assert_eq!(Group::of(13, "beam.smp", 10, 11), Group::Rabbitmq);
        assert_eq!(Group::of(14, "kworker/0:1", 10, 11), Group::Other);
    }

    #[test]
    fn a_split_is_the_difference_of_two_samples_in_shares() {
        let at = Utc::now();
        let a = Sample {
            at,
            busy: 1000,
            total: 2000,
            steal: 10,
            groups: [100, 200, 300, 10, 40],
            probe_ns: Some(900_000),
        };
        let b = Sample {
            at: at + chrono::Duration::seconds(2),
            busy: 1380,
            total: 2400,
            steal: 30,
            groups: [200, 400, 430, 30, 90],
            probe_ns: Some(1_100_000),
        };
        let s = split(&a, &b).unwrap();
        assert_eq!(s.seconds, 2.0);
        assert!((s.busy - 0.95).abs() < 1e-9);
        assert!((s.steal - 0.05).abs() < 1e-9);
        assert!((s.busy_seconds - 3.8).abs() < 1e-9);
        let want = [
            ("worker", 0.2),
            ("postgresql", 0.4),
            ("rabbitmq", 0.26),
            ("bench", 0.04),
            ("other", 0.1),
        ];
        for ((name, share), (want_name, want_share)) in s.groups.iter().zip(want) {
            assert_eq!(*name, want_name);
            assert!((share - want_share).abs() < 1e-9, "{name} {share}");
        }
        // No time passed: no split.
        assert_eq!(split(&a, &a), None);
        // The probe's median, odd and even counts (the upper middle).
        let c = Sample {
            probe_ns: Some(1_000_000),
            ..b.clone()
        };
        assert_eq!(median_probe_us(&[a.clone(), b.clone(), c]), Some(1000.0));
        assert_eq!(median_probe_us(&[a, b]), Some(1100.0));
        assert_eq!(median_probe_us(&[]), None);
    }

    #[test]
    fn the_probe_takes_cpu_time_on_this_thread() {
        let ns = probe().expect("Linux has a thread CPU clock");
        // Sorting 32,768 numbers takes some microseconds, far from a second.
        assert!(ns > 10_000 && ns < 1_000_000_000, "{ns} ns");
    }
}
