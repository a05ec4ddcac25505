//! The pool's slots shared by a batch's variants. Each variant runs its own
//! render (with its own scheduler, retries and stall timeout) on the slots
//! it leased: a short variant on one slot, a long one on as many as it has
//! chunks and are free. A slot returns to the pool the moment the variant's
//! chunks are done, so combining and uploading one variant overlaps with
//! rendering the next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::schedule::WorkerInfo;

#[derive(Debug)]
struct Worker {
    info: WorkerInfo,
    busy: u32,
    aside_until: Option<Instant>,
}

impl Worker {
    fn free(&self) -> u32 {
        self.info.slots.saturating_sub(self.busy)
    }
}

/// The slots of a pool, leased to variants.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    workers: Mutex<Vec<Worker>>,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts are updated whole under the lock: a panic elsewhere leaves
    // them consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slots {
    /// Follows the pool: new workers join, workers that left get no new
    /// leases (their running ones end normally).
    pub(crate) fn sync(&self, pool: &[WorkerInfo]) {
        let mut workers = lock(&self.workers);
        for w in workers.iter_mut() {
            w.info.slots = pool
                .iter()
                .find(|p| p.address == w.info.address)
                .map_or(0, |p| p.slots);
        }
        for p in pool {
            if !workers.iter().any(|w| w.info.address == p.address) {
                workers.push(Worker {
                    info: p.clone(),
                    busy: 0,
                    aside_until: None,
                });
            }
        }
        drop(workers);
        self.changed.notify_waiters();
    }

    /// Sets a worker aside (a variant failed on it) for `d`, unless every
    /// worker is aside.
    pub(crate) fn set_aside(&self, address: &str, d: Duration) {
        let mut workers = lock(&self.workers);
        if let Some(w) = workers.iter_mut().find(|w| w.info.address == address) {
            w.aside_until = Some(Instant::now() + d);
        }
    }

    /// Waits for at least one free slot and leases up to `want` of them,
    /// least loaded workers first. Gives up with `None` when the pool has
    /// had no slot at all for `empty_for`.
    pub(crate) async fn lease(self: &Arc<Self>, want: u32, empty_for: Duration) -> Option<Lease> {
        let mut empty_since: Option<Instant> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let wake = match self.try_lease(want.max(1), now) {
                Attempt::Leased(l) => return Some(l),
                Attempt::Wait(until) => {
                    empty_since = None;
                    until
                }
                Attempt::Empty => {
                    let since = *empty_since.get_or_insert(now);
                    if now >= since + empty_for {
                        return None;
                    }
                    Some(since + empty_for)
                }
            };
            match wake {
                Some(t) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(t) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn try_lease(self: &Arc<Self>, want: u32, now: Instant) -> Attempt {
        let mut workers = lock(&self.workers);
        if workers.iter().all(|w| w.info.slots == 0) {
            return Attempt::Empty;
        }
        // Workers set aside are skipped while others exist; when every
        // worker is aside, they are used anyway (a lone worker that failed
        // once is still the only one).
        let usable = |w: &Worker| w.aside_until.is_none_or(|t| t <= now);
        let any_usable = workers.iter().any(|w| w.info.slots > 0 && usable(w));
        let mut taken: Vec<(String, u32)> = Vec::new();
        let mut left = want;
        while left > 0 {
            let best = workers
                .iter_mut()
                .filter(|w| w.free() > 0 && (!any_usable || usable(w)))
                .min_by(|a, b| {
                    (u64::from(a.busy) * u64::from(b.info.slots))
                        .cmp(&(u64::from(b.busy) * u64::from(a.info.slots)))
                });
            let Some(w) = best else { break };
            w.busy += 1;
            left -= 1;
            match taken.iter_mut().find(|(a, _)| *a == w.info.address) {
                Some((_, n)) => *n += 1,
                None => taken.push((w.info.address.clone(), 1)),
            }
        }
        if taken.is_empty() {
            let next = workers
                .iter()
                .filter_map(|w| w.aside_until)
                .filter(|t| *t > now)
                .min();
            return Attempt::Wait(next);
        }
        let view: Vec<WorkerInfo> = taken
            .iter()
            .map(|(address, n)| WorkerInfo {
                address: address.clone(),
                slots: *n,
            })
            .collect();
        Attempt::Leased(Lease {
            slots: Arc::clone(self),
            view: watch::channel(view).0,
            taken,
        })
    }

    fn release(&self, taken: &[(String, u32)]) {
        let mut workers = lock(&self.workers);
        for (address, n) in taken {
            if let Some(w) = workers.iter_mut().find(|w| w.info.address == *address) {
                w.busy = w.busy.saturating_sub(*n);
            }
        }
        drop(workers);
        self.changed.notify_waiters();
    }
}

/// Keeps `slots` in step with the coordinator's pool (a DNS pool changes)
/// until `stop`.
pub(crate) async fn follow_pool(
    coordinator: &crate::Coordinator,
    slots: &Arc<Slots>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut pool = coordinator.workers(stop.clone()).await;
    slots.sync(&pool.borrow_and_update());
    let slots = Arc::clone(slots);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = pool.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    slots.sync(&pool.borrow_and_update());
                }
            }
        }
    })
}

enum Attempt {
    Leased(Lease),
    /// No free slot: wait for a release (or until a worker is back).
    Wait(Option<Instant>),
    /// The pool has no slots at all.
    Empty,
}

/// Slots leased to one variant; returned when released or dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    slots: Arc<Slots>,
    view: watch::Sender<Vec<WorkerInfo>>,
    taken: Vec<(String, u32)>,
}

impl Lease {
    /// The leased slots as a pool for the variant's scheduler.
    pub(crate) fn pool(&self) -> watch::Receiver<Vec<WorkerInfo>> {
        self.view.subscribe()
    }

    /// Slots leased.
    pub(crate) fn count(&self) -> u32 {
        self.taken.iter().map(|(_, n)| n).sum()
    }

    /// Gives the slots back now.
    pub(crate) fn release(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        self.slots.release(&taken);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(address: &str, slots: u32) -> WorkerInfo {
        WorkerInfo {
            address: address.into(),
            slots,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn leases_spread_over_workers_and_wait_for_a_release() {
        let slots = Arc::new(Slots::default());
        slots.sync(&[worker("a", 2), worker("b", 1)]);
        let first = slots
            .lease(1, Duration::from_secs(1))
            .await
            .expect("a slot");
        assert_eq!(*first.pool().borrow(), vec![worker("a", 1)]);
        let second = slots
            .lease(1, Duration::from_secs(1))
            .await
            .expect("a slot");
        assert_eq!(*second.pool().borrow(), vec![worker("b", 1)]);
        let mut third = slots
            .lease(5, Duration::from_secs(1))
            .await
            .expect("a slot");
        assert_eq!(
            (third.count(), third.pool().borrow()[0].address.as_str()),
            (1, "a")
        );
        // Full: the next waits until a slot is released.
        let waiter = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move {
                slots
                    .lease(2, Duration::from_secs(1))
                    .await
                    .map(|l| l.count())
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        third.release();
        drop(second);
        assert_eq!(waiter.await.expect("joins"), Some(2));
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn workers_set_aside_are_skipped_while_others_can_work() {
        let slots = Arc::new(Slots::default());
        slots.sync(&[worker("a", 1), worker("b", 1)]);
        slots.set_aside("a", Duration::from_secs(30));
        let l = slots.lease(2, Duration::from_secs(1)).await.expect("b");
        assert_eq!(*l.pool().borrow(), vec![worker("b", 1)]);
        drop(l);
        slots.set_aside("b", Duration::from_secs(30));
        // Everyone aside: used anyway.
        let l = slots.lease(2, Duration::from_secs(1)).await.expect("both");
        assert_eq!(l.count(), 2);
        drop(l);
        let empty = Arc::new(Slots::default());
        assert!(empty.lease(1, Duration::from_secs(2)).await.is_none());
    }
}
