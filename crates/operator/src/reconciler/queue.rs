//! When each `CompShareInstance` is reconciled: the instance controller's work queue, in place of
//! kube-runtime's `Controller` (BENCHMARKS.md, Memory).
//!
//! A resource is reconciled when the watch brings a version whose inputs changed, when the
//! poller announces a new observation, when a credentials Secret changed (every resource), and at
//! the time its last reconciliation asked for. Never twice at once: asked for while it runs, it
//! runs again after. Asked for twice before it runs, it runs once, at the earlier time.
//!
//! Why not kube-runtime's controller: its scheduler keeps the capacity of its tables after a
//! burst, and the first list of every resource is one (about 0.2 KiB per resource for good, by
//! the heap profile at 10,000). This queue holds only what waits or runs, and gives back what a
//! burst took. Its rules are kube-runtime's: the earliest time asked wins, and a resource asked
//! for while it runs waits for that run to end.
//!
//! [`Queue`] is pure (time is passed in) so that its rules are unit-tested; [`drive`] runs it.

use std::collections::{BTreeSet, HashMap, HashSet, hash_map::Entry};
use std::future::Future;
use std::hash::Hash;
use std::pin::pin;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

/// What a reconciliation asks of the queue: to be reconciled again after a while, if nothing
/// else asks first, or only when something changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `after`.
    pub(crate) const fn requeue(after: Duration) -> Self {
        Action {
            requeue_after: Some(after),
        }
    }

    /// Reconcile again only when the resource, its observation or its credentials change.
    pub(crate) const fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }
}

/// The resources waiting to be reconciled, and those being reconciled.
#[derive(Debug)]
pub(crate) struct Queue<K> {
    /// When each waiting resource is due.
    due: HashMap<K, Instant>,
    /// The same, in the order they are due.
    order: BTreeSet<(Instant, K)>,
    running: HashSet<K>,
}

impl<K: Clone + Eq + Hash + Ord> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            due: HashMap::new(),
            order: BTreeSet::new(),
            running: HashSet::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Queue<K> {
    /// Asks for `key` to be reconciled at `at`, or at the time already asked if that is earlier.
    pub(crate) fn schedule(&mut self, key: K, at: Instant) {
        match self.due.entry(key) {
            Entry::Occupied(mut waiting) => {
                let was = *waiting.get();
                if was <= at {
                    return;
                }
                self.order.remove(&(was, waiting.key().clone()));
                self.order.insert((at, waiting.key().clone()));
                waiting.insert(at);
            }
            Entry::Vacant(new) => {
                self.order.insert((at, new.key().clone()));
                new.insert(at);
            }
        }
    }

    /// Takes the resource due first at `now` that is not being reconciled, and marks it running.
    pub(crate) fn start(&mut self, now: Instant) -> Option<K> {
        let (at, key) = self
            .order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .find(|(_, key)| !self.running.contains(key))?
            .clone();
        self.order.remove(&(at, key.clone()));
        self.due.remove(&key);
        if sparse(self.due.len(), self.due.capacity()) {
            self.due.shrink_to(self.due.len() * 2);
        }
        self.running.insert(key.clone());
        Some(key)
    }

    /// `key`'s reconciliation ended at `now`, asking for `action`.
    pub(crate) fn finish(&mut self, key: &K, action: Action, now: Instant) {
        self.running.remove(key);
        if sparse(self.running.len(), self.running.capacity()) {
            self.running.shrink_to(self.running.len() * 2);
        }
        if let Some(after) = action.requeue_after {
            self.schedule(key.clone(), now + after);
        }
    }

    /// When the first resource that is not being reconciled is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.order
            .iter()
            .find(|(_, key)| !self.running.contains(key))
            .map(|(at, _)| *at)
    }

    /// Reconciliations running.
    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// Resources waiting (running ones asked for again included).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.due.len()
    }
}

/// Whether a table holds less than a quarter of its capacity, which is then mostly given back:
/// the first list of 100,000 resources queues every one of them at once.
fn sparse(len: usize, capacity: usize) -> bool {
    capacity > 64 && len * 4 < capacity
}

/// Why a reconciliation is asked for.
#[derive(Debug)]
pub(crate) enum Trigger<K> {
    /// Of this resource, now.
    One(K),
    /// Of every resource, now.
    All,
    /// The cache holds the first complete list: reconciliations may start (one asked for before
    /// would find its resource missing).
    Ready,
}

/// Runs reconciliations as `triggers` ask, until `shutdown` resolves or the triggers end, then
/// waits for those running. At most `concurrency` at once (0: no limit). `all` lists every
/// resource, for [`Trigger::All`]; `reconcile` reconciles one and says when to again.
pub(crate) async fn drive<K, F>(
    triggers: impl Stream<Item = Trigger<K>>,
    all: impl Fn() -> Vec<K>,
    concurrency: u16,
    mut reconcile: impl FnMut(K) -> F,
    shutdown: impl Future<Output = ()>,
) where
    K: Clone + Eq + Hash + Ord,
    F: Future<Output = Action>,
{
    let limit = match concurrency {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let mut queue: Queue<K> = Queue::default();
    let mut running = FuturesUnordered::new();
    let mut triggers = pin!(triggers);
    let mut shutdown = pin!(shutdown);
    let mut ready = false;
    loop {
        if ready {
            let now = Instant::now();
            while queue.running() < limit
                && let Some(key) = queue.start(now)
            {
                let reconciliation = reconcile(key.clone());
                running.push(async move { (key, reconciliation.await) });
            }
        }
        let wake = ready
            .then(|| queue.next_due())
            .flatten()
            .filter(|_| queue.running() < limit);
        tokio::select! {
            () = &mut shutdown => break,
            Some((key, action)) = running.next() => queue.finish(&key, action, Instant::now()),
            trigger = triggers.next() => match trigger {
                Some(Trigger::One(key)) => queue.schedule(key, Instant::now()),
                Some(Trigger::All) => {
                    let now = Instant::now();
                    for key in all() {
                        queue.schedule(key, now);
                    }
                }
                Some(Trigger::Ready) => ready = true,
                None => break,
            },
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)),
                if wake.is_some() => {}
        }
    }
    // Those running are let finish, as kube-runtime's graceful shutdown does.
    while running.next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn the_earliest_time_asked_wins_and_a_resource_runs_once() {
        let t = Instant::now();
        let mut q = Queue::default();
        q.schedule("a", at(t, 10));
        q.schedule("a", at(t, 5));
        q.schedule("a", at(t, 20));
        q.schedule("b", at(t, 7));
        assert_eq!(q.waiting(), 2);
        assert_eq!(q.next_due(), Some(at(t, 5)));
        assert_eq!(q.start(at(t, 4)), None, "nothing is due yet");
        assert_eq!(q.start(at(t, 8)), Some("a"));
        assert_eq!(q.start(at(t, 8)), Some("b"));
        assert_eq!(q.start(at(t, 100)), None, "each ran once");
        assert_eq!(q.running(), 2);
    }

    #[test]
    fn a_resource_asked_for_while_it_runs_runs_again_after() {
        let t = Instant::now();
        let mut q = Queue::default();
        q.schedule("a", t);
        assert_eq!(q.start(t), Some("a"));
        q.schedule("a", at(t, 1));
        q.schedule("b", at(t, 2));
        assert_eq!(q.next_due(), Some(at(t, 2)), "a waits for its run to end");
        assert_eq!(q.start(at(t, 3)), Some("b"), "never two runs of a at once");
        q.finish(&"a", Action::await_change(), at(t, 4));
        assert_eq!(q.start(at(t, 4)), Some("a"));
    }

    #[test]
    fn a_requeue_counts_from_the_end_of_the_run_unless_asked_earlier() {
        let t = Instant::now();
        let mut q = Queue::default();
        q.schedule("a", t);
        q.start(t);
        q.finish(&"a", Action::requeue(Duration::from_secs(30)), at(t, 2));
        assert_eq!(q.next_due(), Some(at(t, 32)));
        q.schedule("a", at(t, 10));
        assert_eq!(q.next_due(), Some(at(t, 10)));
        q.start(at(t, 10));
        q.finish(&"a", Action::await_change(), at(t, 11));
        assert_eq!(q.next_due(), None, "awaiting a change: nothing is due");
    }

    #[test]
    fn a_burst_gives_its_capacity_back() {
        let t = Instant::now();
        let mut q = Queue::default();
        for i in 0..100_000 {
            q.schedule(i, t);
        }
        let burst = q.due.capacity();
        while let Some(i) = q.start(t) {
            q.finish(&i, Action::await_change(), t);
        }
        assert!(q.due.capacity() <= 64, "{} of {burst}", q.due.capacity());
        assert!(q.running.capacity() <= 64);
    }

    /// Reconciliations the driver started and ended, in order, by a stand-in that takes 1 s.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Log {
        fn reconcile(&self, key: &'static str) -> impl Future<Output = Action> + use<> {
            let log = self.clone();
            async move {
                log.say(format!("start {key}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                log.say(format!("end {key}"));
                if key == "requeued" {
                    Action::requeue(Duration::from_secs(10))
                } else {
                    Action::await_change()
                }
            }
        }

        fn say(&self, line: String) {
            self.0.lock().unwrap().push(line);
        }

        fn lines(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_waits_for_the_cache_limits_concurrency_and_finishes_on_shutdown() {
        let log = Log::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = tokio::spawn({
            let log = log.clone();
            async move {
                drive(rx, || vec!["a", "b"], 1, |key| log.reconcile(key), async {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        tx.unbounded_send(Trigger::One("a")).unwrap();
        tx.unbounded_send(Trigger::One("requeued")).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            log.lines().is_empty(),
            "nothing runs before the cache is ready"
        );
        tx.unbounded_send(Trigger::Ready).unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            log.lines(),
            ["start a", "end a", "start requeued", "end requeued"],
            "one at a time"
        );
        tx.unbounded_send(Trigger::All).unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(
            log.lines()[4..],
            [
                "start a",
                "end a",
                "start b",
                "end b",
                "start requeued",
                "end requeued"
            ],
            "every resource, and the requeue 10 s after the end of its run"
        );
        tx.unbounded_send(Trigger::One("b")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.send(()).unwrap();
        driver.await.unwrap();
        assert_eq!(
            log.lines()[10..],
            ["start b", "end b"],
            "what runs at shutdown finishes"
        );
    }
}
