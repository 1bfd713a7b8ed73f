//! `GET /readyz` on every replica, polled in the background all run long: what each answered,
//! when, and how long the answer took.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Sample {
    pub replica: usize,
    /// When the request was sent.
    pub at: Instant,
    pub took: Duration,
    /// The status code, or `None` when nothing answered within the client's timeout (or the
    /// port was closed).
    pub status: Option<u16>,
    pub body: String,
}

#[derive(Clone)]
pub struct Readiness {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// How long a probe waits for an answer (a load balancer's would be a few seconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Readiness {
    pub fn start(urls: Vec<String>) -> Readiness {
        let r = Readiness {
            samples: Default::default(),
            stop: Default::default(),
        };
        let client = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .expect("HTTP client");
        for (replica, url) in urls.into_iter().enumerate() {
            let r = r.clone();
            let client = client.clone();
            tokio::spawn(async move {
                while !r.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = Instant::now();
                    let (status, body) = match client.get(&url).send().await {
                        Ok(resp) => {
                            let code = resp.status().as_u16();
                            (Some(code), resp.text().await.unwrap_or_default())
                        }
                        Err(e) => (None, e.to_string()),
                    };
                    let took = at.elapsed();
                    r.samples.lock().expect("samples").push(Sample {
                        replica,
                        at,
                        took,
                        status,
                        body,
                    });
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        r
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The samples of `replica` whose request was sent in `[from, to]`.
    pub fn between(&self, replica: usize, from: Instant, to: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| s.replica == replica && s.at >= from && s.at <= to)
            .cloned()
            .collect()
    }

    /// When `replica` first answered 200 to a request sent after `from`.
    pub fn first_ready_after(&self, replica: usize, from: Instant) -> Option<Instant> {
        self.samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| s.replica == replica && s.at >= from && s.status == Some(200))
            .map(|s| s.at + s.took)
            .min()
    }
}

/// What one replica's probes saw during an outage.
#[derive(Debug)]
pub struct Seen {
    pub probes: usize,
    /// 503 answers whose body named `component` down.
    pub down: usize,
    pub ok: usize,
    pub no_answer: usize,
    pub slowest: Duration,
}

pub fn summarise(samples: &[Sample], component: &str) -> Seen {
    let needle = format!("\"{component}\":\"down\"");
    Seen {
        probes: samples.len(),
        down: samples
            .iter()
            .filter(|s| s.status == Some(503) && s.body.contains(&needle))
            .count(),
        ok: samples.iter().filter(|s| s.status == Some(200)).count(),
        no_answer: samples.iter().filter(|s| s.status.is_none()).count(),
        slowest: samples.iter().map(|s| s.took).max().unwrap_or_default(),
    }
}
