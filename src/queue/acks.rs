//! Settling one channel's deliveries, several with one frame where that is safe.
//!
//! Each delivery used to be acked with its own `basic.ack`: a hop through lapin's internal
//! RPC task and its I/O thread (their futex wake-ups were the worker's largest cost under
//! load) and one frame for the broker to process. Now a finished delivery is marked here,
//! and a flush sends the run of finished deliveries that starts at the channel's oldest
//! unsettled one as a single `basic.ack` with `multiple` set.
//!
//! `multiple` acks *every* outstanding delivery up to its tag, so a run never passes a
//! delivery that is still running or is to be requeued. Batches run side by side and often
//! finish out of order, so deliveries finished behind a running one wait for it, up to
//! [`PATIENCE`]; behind one running longer (a slow job) they are acked one by one, so a slow
//! job never holds back the acks of the jobs after it (the prefetch would fill and stall
//! the channel).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicNackOptions};

/// How long finished deliveries wait for an earlier one still running, to be acked with it.
/// Under load a batch runs for tens of milliseconds.
pub const PATIENCE: Duration = Duration::from_millis(200);

/// How a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done with: its effects are committed, or it was moved to a retry or dead-letter queue.
    Ack,
    /// Back to its queue, to be delivered again.
    Requeue,
}

/// One frame to send, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// `basic.ack` with `multiple`: every outstanding delivery up to this tag.
    AckUpTo(u64),
    /// `basic.ack` of this delivery alone.
    Ack(u64),
    /// `basic.nack` with `requeue` of this delivery alone.
    Requeue(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Its job runs; taken at this instant.
    Running(Instant),
    Done(Settlement),
}

/// The channel's deliveries taken and not yet settled, by tag.
#[derive(Debug, Default)]
struct Window {
    tags: BTreeMap<u64, State>,
}

impl Window {
    /// Takes out the settled deliveries that can go now, as the frames that settle them, and
    /// says whether some were left waiting for an earlier delivery.
    fn drain(&mut self, now: Instant) -> (Vec<Frame>, bool) {
        let mut frames = Vec::new();
        let mut run = None;
        let mut head = None;
        while let Some(entry) = self.tags.first_entry() {
            match *entry.get() {
                State::Running(since) => {
                    head = Some(since);
                    break;
                }
                State::Done(Settlement::Ack) => run = Some(*entry.key()),
                State::Done(Settlement::Requeue) => {
                    frames.extend(run.take().map(Frame::AckUpTo));
                    frames.push(Frame::Requeue(*entry.key()));
                }
            }
            entry.remove();
        }
        frames.extend(run.map(Frame::AckUpTo));
        let behind = self.tags.values().any(|s| matches!(s, State::Done(_)));
        let young = head.is_some_and(|since| now.duration_since(since) < PATIENCE);
        if !behind || young {
            return (frames, behind);
        }
        self.tags.retain(|&tag, state| match *state {
            State::Running(_) => true,
            State::Done(Settlement::Ack) => {
                frames.push(Frame::Ack(tag));
                false
            }
            State::Done(Settlement::Requeue) => {
                frames.push(Frame::Requeue(tag));
                false
            }
        });
        (frames, false)
    }
}

type Shared = Arc<Mutex<Window>>;

fn lock(window: &Shared) -> std::sync::MutexGuard<'_, Window> {
    // The window is consistent after every statement, so a panic elsewhere while it was
    // held leaves nothing half done.
    window.lock().unwrap_or_else(PoisonError::into_inner)
}

fn track(window: &Shared, delivery_tag: u64) -> Ticket {
    lock(window)
        .tags
        .insert(delivery_tag, State::Running(Instant::now()));
    Ticket {
        window: Some(window.clone()),
        tag: delivery_tag,
    }
}

/// The settling side of one consuming channel.
pub struct Acks {
    channel: lapin::Channel,
    window: Shared,
    /// Held while frames are worked out and sent: a `multiple` ack sent before an earlier
    /// frame for a tag it covers would make that frame name an unknown tag, which closes
    /// the channel.
    sending: tokio::sync::Mutex<()>,
    /// A later flush is scheduled for deliveries left waiting.
    rechecking: AtomicBool,
}

impl Acks {
    pub fn new(channel: lapin::Channel) -> Arc<Self> {
        Arc::new(Self {
            channel,
            window: Shared::default(),
            sending: tokio::sync::Mutex::new(()),
            rechecking: AtomicBool::new(false),
        })
    }

    /// Starts tracking a delivery. Call it for every delivery as it is taken from the
    /// consumer, in order: a `multiple` ack covers every lower tag.
    pub fn track(&self, delivery_tag: u64) -> Ticket {
        track(&self.window, delivery_tag)
    }

    /// Sends the frames for the deliveries settled so far. Those left waiting for an earlier
    /// one are sent by that one's flush or, at the latest, by a recheck [`PATIENCE`] later.
    pub async fn flush(self: &Arc<Self>) {
        if self.send_settled().await {
            self.recheck_later();
        }
    }

    fn recheck_later(self: &Arc<Self>) {
        if self.rechecking.swap(true, Ordering::AcqRel) {
            return;
        }
        let acks = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PATIENCE).await;
                acks.rechecking.store(false, Ordering::Release);
                // Still waiting, and no other flush took the recheck over: go round again.
                if !acks.send_settled().await || acks.rechecking.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Sends what can go now; true if settled deliveries were left waiting. A failure is
    /// logged: the channel is gone, and the broker delivers its unsettled deliveries again
    /// (a committed job then comes back as a duplicate, which is a no-op).
    async fn send_settled(&self) -> bool {
        let _order = self.sending.lock().await;
        let (frames, waiting) = lock(&self.window).drain(Instant::now());
        for frame in frames {
            let sent = match frame {
                Frame::AckUpTo(tag) => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions { multiple: true })
                        .await
                }
                Frame::Ack(tag) => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions { multiple: false })
                        .await
                }
                Frame::Requeue(tag) => {
                    self.channel
                        .basic_nack(
                            tag,
                            BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            },
                        )
                        .await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, ?frame, "settling failed; the broker will deliver these jobs again (committed ones as duplicates)");
                return false;
            }
        }
        waiting
    }
}

/// A tracked delivery, to be settled once. Dropped unsettled (its task ended early), it is
/// requeued rather than left to hold back its channel's acks for good.
pub struct Ticket {
    window: Option<Shared>,
    tag: u64,
}

impl Ticket {
    /// Marks how the delivery ends; [`Acks::flush`] sends it.
    pub fn settle(mut self, how: Settlement) {
        if let Some(window) = self.window.take() {
            lock(&window).tags.insert(self.tag, State::Done(how));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(window) = self.window.take() {
            lock(&window)
                .tags
                .insert(self.tag, State::Done(Settlement::Requeue));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: State = State::Done(Settlement::Ack);
    const REQUEUE: State = State::Done(Settlement::Requeue);

    fn window(states: &[(u64, State)]) -> Window {
        Window {
            tags: states.iter().copied().collect(),
        }
    }

    fn left(w: &Window) -> Vec<u64> {
        w.tags.keys().copied().collect()
    }

    #[test]
    fn a_run_of_acks_from_the_oldest_goes_as_one_frame() {
        let now = Instant::now();
        let running = State::Running(now);
        let mut w = window(&[(1, ACK), (2, ACK), (3, ACK), (4, running), (5, running)]);
        assert_eq!(w.drain(now), (vec![Frame::AckUpTo(3)], false));
        assert_eq!(left(&w), vec![4, 5]);
        assert_eq!(
            w.drain(now),
            (vec![], false),
            "nothing settled: nothing sent"
        );
    }

    #[test]
    fn acks_behind_a_young_running_delivery_wait_and_go_with_it() {
        let now = Instant::now();
        let running = State::Running(now);
        let mut w = window(&[(1, running), (2, ACK), (3, ACK), (4, running), (5, ACK)]);
        assert_eq!(w.drain(now), (vec![], true), "waiting for delivery 1");
        assert_eq!(left(&w), vec![1, 2, 3, 4, 5]);
        w.tags.insert(1, ACK);
        assert_eq!(w.drain(now), (vec![Frame::AckUpTo(3)], true));
        w.tags.insert(4, ACK);
        assert_eq!(w.drain(now), (vec![Frame::AckUpTo(5)], false));
        assert!(w.tags.is_empty());
    }

    #[test]
    fn acks_behind_a_slow_delivery_go_one_by_one_and_it_stays_outstanding() {
        let now = Instant::now();
        let slow = State::Running(now - PATIENCE);
        let mut w = window(&[
            (1, slow),
            (2, ACK),
            (3, REQUEUE),
            (4, State::Running(now)),
            (5, ACK),
        ]);
        assert_eq!(
            w.drain(now),
            (vec![Frame::Ack(2), Frame::Requeue(3), Frame::Ack(5)], false)
        );
        assert_eq!(left(&w), vec![1, 4]);
        // When it finishes, a multiple ack up to it covers only itself.
        w.tags.insert(1, ACK);
        assert_eq!(w.drain(now), (vec![Frame::AckUpTo(1)], false));
    }

    #[test]
    fn a_multiple_ack_never_passes_a_requeue() {
        let now = Instant::now();
        let mut w = window(&[
            (1, ACK),
            (2, ACK),
            (3, REQUEUE),
            (4, ACK),
            (5, State::Running(now)),
            (6, ACK),
        ]);
        assert_eq!(
            w.drain(now),
            (
                vec![Frame::AckUpTo(2), Frame::Requeue(3), Frame::AckUpTo(4)],
                true
            )
        );
        assert_eq!(left(&w), vec![5, 6]);
    }

    #[test]
    fn a_ticket_dropped_unsettled_is_requeued_not_acked_by_a_later_run() {
        let shared = Shared::default();
        let (first, second) = (track(&shared, 1), track(&shared, 2));
        drop(first);
        second.settle(Settlement::Ack);
        assert_eq!(
            lock(&shared).drain(Instant::now()),
            (vec![Frame::Requeue(1), Frame::AckUpTo(2)], false)
        );
        assert!(lock(&shared).tags.is_empty());
    }
}
