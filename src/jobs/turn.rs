//! Turns: batches of one consumer start their transactions in delivery order. Batches run
//! concurrently (four by default), so without turns a batch delivered later could take its
//! locks and commit before an earlier one: a reply drained from a backlog would then miss
//! the mail it answers, committed a moment later by the earlier batch, and open a thread of
//! its own. With turns, a batch's first step (`store_raw_mail`: begin, take the
//! conversation locks) waits until the batch before it has done the same; a later batch
//! that needs a conversation an earlier one holds then waits for its commit and sees it.
//! The rest of the batches still run side by side.
//!
//! The consumer gives each batch's task its [`Turn`] ([`Turns::next_turn`], [`Turn::scope`]); a
//! step runs its ordered part through [`in_turn`]. A batch that never gets there (only
//! duplicates, a failure before) passes its turn on when its task ends. Code run outside a
//! consumer (tests, `gochat mail reprocess`) has no turn and waits for nothing.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

tokio::task_local! {
    static TURN: Turn;
}

/// The signal of the batch before (none for the first), and this batch's own for the next.
type Signals = (Option<oneshot::Receiver<()>>, oneshot::Sender<()>);

/// One batch's place in its consumer's order; taken by the first [`in_turn`] of the batch.
pub struct Turn {
    slot: Mutex<Option<Signals>>,
}

impl Turn {
    /// Runs `f` (the batch's task) holding this turn.
    pub async fn scope<T>(self, f: impl Future<Output = T>) -> T {
        TURN.scope(self, f).await
    }
}

/// Hands out turns in the order batches are formed.
#[derive(Default)]
pub struct Turns {
    previous: Option<oneshot::Receiver<()>>,
}

impl Turns {
    /// The next batch's turn.
    pub fn next_turn(&mut self) -> Turn {
        let (done, after) = oneshot::channel();
        let before = self.previous.replace(after);
        Turn {
            slot: Mutex::new(Some((before, done))),
        }
    }
}

/// Runs `f` once the batch before this one ran its own, then lets the next batch go. The
/// first call in a batch takes the turn; later ones (a job of the batch run again alone)
/// run at once.
pub async fn in_turn<T>(f: impl Future<Output = T>) -> T {
    let taken = TURN
        .try_with(|t| t.slot.lock().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten();
    let Some((before, done)) = taken else {
        return f.await;
    };
    if let Some(before) = before {
        // Sent or dropped: either way the batch before is past its turn.
        let _ = before.await;
    }
    let out = f.await;
    drop(done);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn batches_take_their_turns_in_order_whatever_order_they_reach_them() {
        let mut turns = Turns::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for k in 0..4u64 {
            let turn = turns.next_turn();
            let order = order.clone();
            tasks.push(tokio::spawn(turn.scope(async move {
                // Later batches reach their turn first.
                tokio::time::sleep(Duration::from_millis(40 - 10 * k)).await;
                in_turn(async { order.lock().map(|mut o| o.push(k)).ok() }).await;
                // A second call in the same batch does not wait.
                in_turn(async {}).await;
            })));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().expect("order"), vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_batch_that_never_takes_its_turn_passes_it_on_when_it_ends() {
        let mut turns = Turns::default();
        let skipped = turns.next_turn();
        let waiting = turns.next_turn();
        drop(skipped);
        tokio::time::timeout(Duration::from_secs(1), waiting.scope(in_turn(async {})))
            .await
            .expect("not blocked");
        // Outside any batch: runs at once.
        assert_eq!(in_turn(async { 7 }).await, 7);
    }
}
