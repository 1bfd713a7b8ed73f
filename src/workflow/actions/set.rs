//! Helpers for set steps (one statement for a whole batch).

use crate::jobs::JobError;

/// How long a statement for a whole batch may wait for rows another batch holds (the
/// senders' upserts, see [`upsert_sender`]; `match_thread`'s read-ahead of threads).
/// Failing sooner would run the whole batch one job at a time; the rows go in sorted, so
/// two batches take them in one order and cannot deadlock on them.
pub(in crate::workflow::actions) const SET_LOCK_WAIT: std::time::Duration =
    std::time::Duration::from_secs(2);

/// `items` sorted by `key`, so concurrent batches lock their rows in one order, with the
/// position each came from.
pub(in crate::workflow::actions) fn sorted<T: Clone, K: Ord>(
    items: &[T],
    key: impl Fn(&T) -> K,
) -> (Vec<usize>, Vec<T>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| key(&items[i]));
    let sorted = order.iter().map(|&i| items[i].clone()).collect();
    (order, sorted)
}

/// Results for the sorted items of [`sorted`], put back in the items' order.
pub(in crate::workflow::actions) fn unsorted<R>(
    order: &[usize],
    results: Vec<R>,
) -> Result<Vec<R>, JobError> {
    let mut out: Vec<Option<R>> = order.iter().map(|_| None).collect();
    for (&i, r) in order.iter().zip(results) {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| JobError::permanent("a multi-row write returned too few rows")))
        .collect()
}
