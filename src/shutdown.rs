//! Graceful shutdown: one signal, observed by every task.
//!
//! A `watch` channel instead of a broadcast: late subscribers still see that shutdown began,
//! and `is_shutdown` can be polled without awaiting.

use tokio::sync::watch;

/// Starts the shutdown; cloning it lets several places (signals, tests) trigger it.
#[derive(Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Given to each long-running task; resolves `recv` when shutdown begins.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its first listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown begins (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means every trigger was dropped: nobody can stop us any more, so treat it
        // as shutdown rather than hang forever.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Returns on SIGTERM or SIGINT (as [`signal`]); calls `on_hangup` on each SIGHUP meanwhile
/// (reload the configuration that can change while running).
pub async fn signal_or_hangup(mut on_hangup: impl FnMut()) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal as unix_signal};
        if let Ok(mut hup) = unix_signal(SignalKind::hangup()) {
            let stop = signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = hup.recv() => on_hangup(),
                }
            }
        }
    }
    signal().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_trigger() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_shutdown());
        trigger.trigger();
        a.recv().await;
        b.recv().await;
        // A listener created after the trigger sees it too.
        let mut late = trigger.subscribe();
        assert!(late.is_shutdown());
        late.recv().await;
    }
}
