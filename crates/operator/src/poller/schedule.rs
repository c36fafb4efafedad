//! When to call the API, and for which instances: the batching that makes N instances cost ⌈N/100⌉
//! calls per poll interval while spreading those calls over the interval.
//!
//! Members with the same poll interval form a cohort. A cohort of `n` members makes
//! `k = ⌈n/page⌉` calls per interval, one every `interval / k` (its slots), each for the `⌈n/k⌉`
//! members polled longest ago; so every member is polled once per interval and the calls are spread
//! evenly instead of all at the same instant. Each cohort starts at a random phase and every slot
//! fires a little early by a random amount, so groups that start together drift apart.
//!
//! New members and refresh requests are urgent: they are collected for a short window and polled
//! together right away, outside the slots.
//!
//! Each member carries a value of its owner's beside its slot (a poll group: the resources naming
//! the instance), so that the owner keeps one table per member rather than two.
//!
//! This module is pure (time and randomness are passed in) so the arithmetic is unit-tested.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(crate) struct ScheduleConfig {
    /// Most members per call (the API's limit is 100 ids).
    pub page_size: usize,
    /// How long urgent requests wait for company before they are polled.
    pub urgent_window: Duration,
    /// Upper bound of the random advance of each slot.
    pub max_jitter: Duration,
}

#[derive(Debug)]
pub(super) struct Schedule<K, V> {
    config: ScheduleConfig,
    members: HashMap<K, Slot<V>>,
    cohorts: BTreeMap<Duration, Cohort<K>>,
    urgent: VecDeque<K>,
    urgent_since: Option<Instant>,
    next_rank: u64,
}

#[derive(Debug)]
struct Slot<V> {
    interval: Duration,
    /// Position in the cohort's least-recently-polled order.
    rank: u64,
    urgent: bool,
    value: V,
}

#[derive(Debug)]
struct Cohort<K> {
    /// Members by rank: the first are those polled longest ago.
    order: BTreeMap<u64, K>,
    /// The slot on the even grid; `fire_at` is the same slot advanced by jitter.
    nominal: Instant,
    fire_at: Instant,
}

/// Members to poll in one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Page<K> {
    pub keys: Vec<K>,
    /// Taken from the urgent queue (first observations, refresh requests) rather than a slot.
    pub urgent: bool,
}

impl<K: Clone + Eq + Hash, V> Schedule<K, V> {
    pub(super) fn new(config: ScheduleConfig) -> Self {
        Schedule {
            config,
            members: HashMap::new(),
            cohorts: BTreeMap::new(),
            urgent: VecDeque::new(),
            urgent_since: None,
            next_rank: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.members.len()
    }

    /// Adds a member (replacing one with the same key), queued for an urgent first poll.
    pub(super) fn insert(
        &mut self,
        key: K,
        value: V,
        interval: Duration,
        now: Instant,
        rng: &mut impl Rng,
    ) {
        self.remove(&key);
        let rank = self.join_cohort(key.clone(), interval, now, rng);
        self.members.insert(
            key.clone(),
            Slot {
                interval,
                rank,
                urgent: false,
                value,
            },
        );
        self.mark_urgent(&key, now);
    }

    /// Moves a member to the cohort of `interval`; whether it moved (not urgent: its
    /// observation is current, only its pace changes).
    pub(super) fn set_interval<Q>(
        &mut self,
        key: &Q,
        interval: Duration,
        now: Instant,
        rng: &mut impl Rng,
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some((key, slot)) = self.members.get_key_value(key) else {
            return false;
        };
        if slot.interval == interval {
            return false;
        }
        let (key, old_interval, old_rank) = (key.clone(), slot.interval, slot.rank);
        self.leave_cohort(old_interval, old_rank);
        let rank = self.join_cohort(key.clone(), interval, now, rng);
        let slot = self.members.get_mut::<K>(&key).expect("member exists");
        slot.interval = interval;
        slot.rank = rank;
        true
    }

    /// A member's value.
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.members.get(key).map(|slot| &slot.value)
    }

    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.members.get_mut(key).map(|slot| &mut slot.value)
    }

    /// Every member with its value, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.members.iter().map(|(key, slot)| (key, &slot.value))
    }

    /// Removes a member; its value, if it was one.
    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.members.remove(key)?;
        self.leave_cohort(slot.interval, slot.rank);
        // A stale entry in `urgent` is skipped when taken: removing from the middle of the queue
        // would cost O(n) per removal.
        Some(slot.value)
    }

    /// Queues a member for an urgent poll.
    pub(super) fn mark_urgent<Q>(&mut self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some((key, slot)) = self.members.get_key_value(key) else {
            return;
        };
        if slot.urgent {
            return;
        }
        let key = key.clone();
        if let Some(slot) = self.members.get_mut(key.borrow()) {
            slot.urgent = true;
        }
        self.urgent.push_back(key);
        self.urgent_since.get_or_insert(now);
    }

    /// The next instant at which [`Schedule::take_due`] will have something, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let slots = self.cohorts.values().map(|c| c.fire_at);
        self.urgent_due().into_iter().chain(slots).min()
    }

    /// Urgent members wait for the window to close, unless they already fill a page.
    fn urgent_due(&self) -> Option<Instant> {
        self.urgent_since.map(|since| {
            if self.urgent.len() >= self.config.page_size {
                since
            } else {
                since + self.config.urgent_window
            }
        })
    }

    /// The members to poll now, if a call is due: urgent members first, then the page of the
    /// cohort whose slot came first.
    pub(super) fn take_due(&mut self, now: Instant, rng: &mut impl Rng) -> Option<Page<K>> {
        if self.urgent_due().is_some_and(|due| due <= now)
            && let Some(keys) = self.take_urgent()
        {
            return Some(Page { keys, urgent: true });
        }
        let (&interval, cohort) = self
            .cohorts
            .iter_mut()
            .filter(|(_, c)| c.fire_at <= now)
            .min_by_key(|(_, c)| c.fire_at)?;
        let n = cohort.order.len();
        let calls_per_interval = n.div_ceil(self.config.page_size);
        let page_size = n.div_ceil(calls_per_interval);
        let page: Vec<K> = cohort.order.values().take(page_size).cloned().collect();

        // Late slots (backoff, a slow answer) are not made up in a burst beyond catching up once.
        let spacing = interval / calls_per_interval as u32;
        cohort.nominal = (cohort.nominal + spacing).max(now);
        cohort.fire_at = cohort.nominal - jitter(spacing, self.config.max_jitter, rng);
        Some(Page {
            keys: page,
            urgent: false,
        })
    }

    fn take_urgent(&mut self) -> Option<Vec<K>> {
        let mut page = Vec::new();
        while page.len() < self.config.page_size {
            let Some(key) = self.urgent.pop_front() else {
                break;
            };
            if let Some(slot) = self.members.get_mut(&key).filter(|s| s.urgent) {
                slot.urgent = false;
                page.push(key);
            }
        }
        if self.urgent.is_empty() {
            self.urgent_since = None;
            // The first list of 100,000 resources queues every one of them: kept, that capacity
            // would be 3 MiB for good.
            self.urgent.shrink_to_fit();
        }
        (!page.is_empty()).then_some(page)
    }

    /// Records that `keys` were polled: they move to the back of their cohorts.
    pub(super) fn polled(&mut self, keys: &[K]) {
        for key in keys {
            let Some(slot) = self.members.get_mut(key) else {
                continue;
            };
            let cohort = self
                .cohorts
                .get_mut(&slot.interval)
                .expect("every member's cohort exists");
            cohort.order.remove(&slot.rank);
            slot.rank = self.next_rank;
            self.next_rank += 1;
            cohort.order.insert(slot.rank, key.clone());
        }
    }

    /// Records that `keys` were observed by other means (a listing of the whole group) at `now`:
    /// they move to the back of their cohorts, and a cohort all of whose members were among them
    /// holds its next slot until `hold` of its interval has passed, so that a listing at least
    /// that often replaces its calls. Returns when the last held cohort fires, if one was held.
    pub(super) fn covered(&mut self, keys: &[K], now: Instant, hold: f64) -> Option<Instant> {
        self.polled(keys);
        let keys: std::collections::HashSet<&K> = keys.iter().collect();
        let mut until = None;
        for (interval, cohort) in &mut self.cohorts {
            if cohort.order.values().all(|k| keys.contains(k)) {
                cohort.nominal = now + interval.mul_f64(hold);
                cohort.fire_at = cohort.nominal;
                until = until.max(Some(cohort.fire_at));
            }
        }
        until
    }

    /// Whether `key` waits for an urgent poll.
    pub(super) fn is_urgent<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.members.get(key).is_some_and(|s| s.urgent)
    }

    /// Puts a page back at the front of the urgent queue (a retryable failure of an urgent call:
    /// the first observation is still owed).
    pub(super) fn requeue_urgent(&mut self, keys: &[K], now: Instant) {
        for key in keys.iter().rev() {
            if let Some(slot) = self.members.get_mut(key).filter(|s| !s.urgent) {
                slot.urgent = true;
                self.urgent.push_front(key.clone());
            }
        }
        if !self.urgent.is_empty() {
            self.urgent_since.get_or_insert(now);
        }
    }

    fn join_cohort(&mut self, key: K, interval: Duration, now: Instant, rng: &mut impl Rng) -> u64 {
        let rank = self.next_rank;
        self.next_rank += 1;
        let max_jitter = self.config.max_jitter;
        let cohort = self.cohorts.entry(interval).or_insert_with(|| {
            // A random phase within the second half of the interval: new members are polled
            // urgently anyway, and groups created together do not fire together.
            let nominal = now + interval.mul_f64(rng.random_range(0.5..1.0));
            Cohort {
                order: BTreeMap::new(),
                nominal,
                fire_at: nominal - jitter(interval, max_jitter, rng),
            }
        });
        cohort.order.insert(rank, key);
        rank
    }

    fn leave_cohort(&mut self, interval: Duration, rank: u64) {
        if let Some(cohort) = self.cohorts.get_mut(&interval) {
            cohort.order.remove(&rank);
            if cohort.order.is_empty() {
                self.cohorts.remove(&interval);
            }
        }
    }
}

/// A random advance of up to a tenth of the spacing, bounded by `max`: enough to keep groups from
/// firing in lockstep, never enough to poll much more often than asked.
fn jitter(spacing: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let bound = (spacing / 10).min(max);
    if bound.is_zero() {
        return Duration::ZERO;
    }
    bound.mul_f64(rng.random_range(0.0..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashMap;

    const MINUTE: Duration = Duration::from_secs(60);

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            page_size: 100,
            urgent_window: Duration::from_millis(200),
            max_jitter: Duration::from_secs(2),
        }
    }

    struct Run {
        schedule: Schedule<u32, ()>,
        rng: StdRng,
        now: Instant,
        calls: Vec<(Instant, Vec<u32>)>,
    }

    impl Run {
        fn new(members: u32, interval: Duration) -> Run {
            let mut run = Run {
                schedule: Schedule::new(config()),
                rng: StdRng::seed_from_u64(7),
                now: Instant::now(),
                calls: Vec::new(),
            };
            for k in 0..members {
                run.schedule.insert(k, (), interval, run.now, &mut run.rng);
            }
            run
        }

        /// Advances time, making every due call (each answered at once).
        fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while let Some(due) = self.schedule.next_due().filter(|d| *d <= end) {
                self.now = self.now.max(due);
                let page = self
                    .schedule
                    .take_due(self.now, &mut self.rng)
                    .expect("a due call")
                    .keys;
                self.schedule.polled(&page);
                self.calls.push((self.now, page));
            }
            self.now = end;
        }

        fn calls_between(&self, from: Instant, to: Instant) -> usize {
            self.calls
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .count()
        }
    }

    #[test]
    fn n_members_cost_ceil_n_over_100_calls_per_interval() {
        for n in [1, 99, 100, 101, 250, 1000, 10_000] {
            let mut run = Run::new(n, MINUTE);
            run.advance(MINUTE * 3); // first polls and settling
            let start = run.now;
            run.advance(MINUTE * 10);
            let calls = run.calls_between(start, run.now);
            let expected = (n as usize).div_ceil(100) * 10;
            // The window may catch one slot more or less at each edge.
            assert!(
                calls.abs_diff(expected) <= 1,
                "n={n}: {calls} calls in 10 intervals, expected {expected}"
            );
            assert!(run.calls.iter().all(|(_, page)| page.len() <= 100));
        }
    }

    #[test]
    fn every_member_is_polled_at_least_once_per_interval() {
        let mut run = Run::new(1234, MINUTE);
        run.advance(MINUTE * 12);
        let mut last: HashMap<u32, Instant> = HashMap::new();
        let settle = run.calls[0].0 + MINUTE * 2;
        for (t, page) in &run.calls {
            for k in page {
                if let Some(prev) = last.insert(*k, *t)
                    && *t > settle
                {
                    let age = *t - prev;
                    assert!(
                        age <= MINUTE + Duration::from_secs(2),
                        "member {k}: {age:?}"
                    );
                }
            }
        }
        assert_eq!(last.len(), 1234);
    }

    #[test]
    fn calls_are_spread_over_the_interval() {
        let mut run = Run::new(1000, MINUTE);
        run.advance(MINUTE * 3);
        let start = run.calls.len();
        run.advance(MINUTE);
        let times: Vec<Instant> = run.calls[start..].iter().map(|(t, _)| *t).collect();
        assert_eq!(times.len(), 10);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_secs(4), "calls {gap:?} apart");
        }
    }

    #[test]
    fn new_members_are_polled_together_after_the_urgent_window() {
        let mut run = Run::new(150, MINUTE);
        run.advance(Duration::from_millis(199));
        // A full page goes at once; the rest waits for company until the window closes.
        let sizes: Vec<usize> = run.calls.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(sizes, [100]);
        run.advance(Duration::from_millis(1));
        let sizes: Vec<usize> = run.calls.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(sizes, [100, 50]);
    }

    #[test]
    fn a_lone_new_member_waits_for_the_window_only() {
        let mut run = Run::new(1, MINUTE);
        run.advance(Duration::from_millis(100));
        assert!(run.calls.is_empty());
        run.advance(Duration::from_millis(100));
        assert_eq!(run.calls.len(), 1);
    }

    #[test]
    fn refresh_of_one_member_is_one_small_call() {
        let mut run = Run::new(500, MINUTE);
        run.advance(MINUTE * 2);
        let before = run.calls.len();
        let now = run.now;
        run.schedule.mark_urgent(&42, now);
        run.advance(Duration::from_millis(250));
        assert_eq!(run.calls.len(), before + 1);
        assert_eq!(run.calls.last().unwrap().1, vec![42]);
    }

    #[test]
    fn intervals_form_separate_cohorts_and_moves_are_not_urgent() {
        let mut run = Run::new(0, MINUTE);
        let now = run.now;
        for k in 0..10 {
            let interval = if k < 5 { MINUTE } else { MINUTE * 10 };
            run.schedule.insert(k, (), interval, now, &mut run.rng);
            assert!(run.schedule.is_urgent(&k), "a new member is polled at once");
        }
        run.advance(MINUTE * 21);
        let polls_of = |k: u32, run: &Run| run.calls.iter().filter(|(_, p)| p.contains(&k)).count();
        assert!(
            polls_of(0, &run) >= 20,
            "1-minute member polled every minute"
        );
        assert!(polls_of(9, &run) <= 4, "10-minute member polled rarely");

        let now = run.now;
        assert!(run.schedule.set_interval(&9, MINUTE, now, &mut run.rng));
        assert!(!run.schedule.set_interval(&9, MINUTE, now, &mut run.rng));
        assert!(!run.schedule.is_urgent(&9), "a move is not urgent");
        assert_eq!(run.schedule.cohorts.len(), 2);
    }

    #[test]
    fn removed_members_are_never_polled_again() {
        let mut run = Run::new(300, MINUTE);
        for k in 0..300 {
            if k % 2 == 0 {
                assert_eq!(run.schedule.remove(&k), Some(()));
            }
        }
        run.advance(MINUTE * 3);
        assert!(run.calls.iter().all(|(_, p)| p.iter().all(|k| k % 2 == 1)));
        assert_eq!(run.schedule.len(), 150);
        for k in 0..300 {
            run.schedule.remove(&k);
        }
        assert_eq!(run.schedule.len(), 0);
        assert_eq!(run.schedule.next_due(), None);
    }

    #[test]
    fn requeued_urgent_members_are_retried_first() {
        let mut run = Run::new(3, MINUTE);
        let now = run.now + Duration::from_secs(1);
        let page = run.schedule.take_due(now, &mut run.rng).unwrap();
        assert!(page.urgent);
        assert_eq!(page.keys.len(), 3);
        run.schedule.requeue_urgent(&page.keys, now);
        let again = run
            .schedule
            .take_due(now + Duration::from_secs(1), &mut run.rng);
        assert_eq!(again, Some(page));
    }

    #[test]
    fn a_late_group_catches_up_without_bursting_forever() {
        let mut run = Run::new(1000, MINUTE);
        run.advance(MINUTE * 2);
        // Nothing is called for five minutes (say, a long backoff), then time resumes.
        let stalled_until = run.now + MINUTE * 5;
        let mut caught_up = 0;
        while let Some(page) = run.schedule.take_due(stalled_until, &mut run.rng) {
            run.schedule.polled(&page.keys);
            caught_up += 1;
            assert!(caught_up <= 60, "catch-up never ends");
        }
        run.now = stalled_until;
        let start = run.now + MINUTE;
        run.advance(MINUTE * 6);
        assert!(run.calls_between(start, run.now).abs_diff(50) <= 1);
    }
}
