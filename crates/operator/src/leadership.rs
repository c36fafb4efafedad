//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so that with several
//! replicas exactly one polls the cloud and writes status; the others wait, ready to take over.

use std::pin::pin;
use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long before its Lease expires a leader that could not renew it stops working, so that it
/// is idle before another replica may take over (that replica waits for the expiry by its own
/// clock; this leaves a second for the two clocks to disagree).
const STEP_DOWN_BEFORE_EXPIRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub(crate) struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique among the replicas (the pod name).
    pub identity: String,
    /// How long a lease holds without renewal: the longest a dead leader blocks a takeover.
    pub duration: Duration,
    /// How long before expiry the leader renews.
    pub renew_before: Duration,
}

/// This replica's place in the election, kept current by a background task.
pub(crate) struct Leadership {
    leading: watch::Receiver<bool>,
    leave: oneshot::Sender<()>,
    tracker: JoinHandle<()>,
}

impl Leadership {
    /// Joins the election (creating the Lease if needed).
    pub(crate) async fn join(
        client: kube::Client,
        settings: &LeaseSettings,
    ) -> Result<Self, LeaseManagerError> {
        let campaign = Campaign::start(&client, settings).await?;
        let (sender, leading) = watch::channel(false);
        let (leave, left) = oneshot::channel();
        let tracker = tokio::spawn(track(campaign, client, settings.clone(), sender, left));
        Ok(Leadership {
            leading,
            leave,
            tracker,
        })
    }

    /// Resolves once this replica leads.
    pub(crate) async fn acquired(&mut self) {
        // An error means the election task is gone; treat it as never leading.
        if self.leading.wait_for(|leading| *leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when this replica stops leading: the lease was taken over, it could not be
    /// renewed before it expired, or the election task ended.
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut leading = self.leading.clone();
        async move {
            let _ = leading.wait_for(|leading| !*leading).await;
        }
    }

    /// Leaves the election, releasing the Lease if this replica holds it, so that another
    /// replica takes over at once instead of after the lease duration.
    pub(crate) async fn release(self) {
        let _ = self.leave.send(());
        if let Err(error) = self.tracker.await {
            tracing::warn!(%error, "the leader election task failed");
        }
    }
}

/// One kube-lease-manager at work: whether it holds the Lease, and its task.
struct Campaign {
    granted: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Campaign {
    async fn start(
        client: &kube::Client,
        settings: &LeaseSettings,
    ) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_field_manager(format!("compshare-operator/{}", settings.identity))
            .with_duration(settings.duration.as_secs().max(1))
            .with_grace(settings.renew_before.as_secs().max(1))
            .build()
            .await?;
        let (granted, task) = manager.watch().await;
        Ok(Campaign { granted, task })
    }

    fn holds(&self) -> bool {
        *self.granted.borrow()
    }

    /// Ends the campaign, releasing the Lease if it holds it (the manager does so once the last
    /// receiver of its channel is gone).
    async fn end(self) {
        drop(self.granted);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
            Err(error) => tracing::warn!(%error, "the leader election task failed"),
        }
    }
}

/// Keeps `leading` true only while the lease manager holds the Lease *and* the Lease, as last
/// seen, has not expired. kube-lease-manager goes on reporting leadership while it cannot reach
/// the apiserver to renew, so a leader cut off for longer than the lease duration would otherwise
/// keep polling the cloud after another replica took over. Watching the Lease (rather than
/// reading it on a timer) costs nothing between renewals, and it shows a waiting replica the
/// moment a leader releases the Lease: a waiting kube-lease-manager looks again only when the
/// lease it saw would have expired, so this replica then starts a new one, which takes the
/// free Lease at once (the cost of a needless restart is one read of the Lease).
async fn track(
    mut campaign: Campaign,
    client: kube::Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    mut left: oneshot::Receiver<()>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
    // Not the watcher's default backoff, which grows to 30 s and would hold back leading again
    // after an outage by as much: watching one small object may retry often.
    let reconnect = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times();
    let mut lease_events =
        pin!(watcher(leases, config).backoff(watcher::ExponentialBackoff::from(reconnect)));
    let mut lease = LeaseView::new(&settings.identity);
    // Said once per failure, not on every retry (an outage would fill the log); a replica that
    // is not allowed to watch its Lease would otherwise wait to lead in silence.
    let mut watch_failing = false;
    loop {
        let now = SystemTime::now();
        let held = campaign.holds() && lease.held_at(now);
        leading.send_if_modified(|leading| std::mem::replace(leading, held) != held);
        let expires_in = lease.held_for(now);
        let mut freed = false;
        tokio::select! {
            _ = &mut left => {
                campaign.end().await;
                leading.send_replace(false);
                return;
            }
            changed = campaign.granted.changed() => {
                if changed.is_err() {
                    leading.send_replace(false);
                    return;
                }
            }
            event = lease_events.next() => match event {
                Some(Ok(event)) => {
                    watch_failing = false;
                    freed = lease.apply(event);
                }
                Some(Err(error)) if !watch_failing => {
                    watch_failing = true;
                    tracing::warn!(%error, lease = %settings.name, "cannot watch the leader Lease; retrying");
                }
                Some(Err(error)) => tracing::debug!(%error, "watching the leader Lease"),
                None => return,
            },
            () = tokio::time::sleep(expires_in.unwrap_or_default()), if expires_in.is_some() => {}
        }
        if freed && !campaign.holds() {
            match Campaign::start(&client, &settings).await {
                Ok(fresh) => {
                    tracing::debug!("the Lease is free; campaigning afresh to take it");
                    // Not `end`: a waiting manager has nothing to release, and its idea of the
                    // Lease is stale.
                    std::mem::replace(&mut campaign, fresh).task.abort();
                }
                Err(error) => {
                    tracing::warn!(%error, "could not campaign afresh; waiting for the lease to expire")
                }
            }
        }
    }
}

/// What this replica knows of the Lease, from its watch.
#[derive(Debug)]
struct LeaseView<'a> {
    identity: &'a str,
    seen: Sight,
    /// Gathered during a (re-)list, which replaces `seen` only once complete so that it cannot
    /// interrupt leadership.
    listed: Sight,
}

/// One look at the Lease.
#[derive(Debug, Default)]
struct Sight {
    /// Until when this replica may act as the holder; `None` when it does not hold the Lease.
    valid_until: Option<SystemTime>,
    holder: Holder,
}

/// Who holds the Lease, as far as the watch has shown.
#[derive(Debug, Default, PartialEq)]
enum Holder {
    /// Not seen yet, or deleted.
    #[default]
    Unknown,
    Free,
    Replica(String),
}

impl<'a> LeaseView<'a> {
    fn new(identity: &'a str) -> Self {
        LeaseView {
            identity,
            seen: Sight::default(),
            listed: Sight::default(),
        }
    }

    /// Takes in a watch event; true when it shows the Lease free where this replica's lease
    /// manager may still believe it held: freed by another replica, or free when first seen
    /// (the manager reads the Lease before the watch starts, so a release in between is seen
    /// only this way).
    fn apply(&mut self, event: watcher::Event<Lease>) -> bool {
        let seen = match event {
            watcher::Event::Apply(lease) => Sight::of(&lease, self.identity),
            watcher::Event::Delete(_) => Sight::default(),
            watcher::Event::Init => {
                self.listed = Sight::default();
                return false;
            }
            watcher::Event::InitApply(lease) => {
                self.listed = Sight::of(&lease, self.identity);
                return false;
            }
            watcher::Event::InitDone => std::mem::take(&mut self.listed),
        };
        let before = std::mem::replace(&mut self.seen, seen).holder;
        self.seen.holder == Holder::Free
            && match before {
                Holder::Unknown => true,
                Holder::Free => false,
                Holder::Replica(holder) => holder != self.identity,
            }
    }

    fn held_at(&self, now: SystemTime) -> bool {
        self.seen.valid_until.is_some_and(|until| now < until)
    }

    /// How much longer this replica holds the Lease as last seen, if it does.
    fn held_for(&self, now: SystemTime) -> Option<Duration> {
        self.seen.valid_until?.duration_since(now).ok()
    }
}

impl Sight {
    fn of(lease: &Lease, identity: &str) -> Self {
        Sight {
            valid_until: held_until(lease, identity),
            holder: Holder::of(lease),
        }
    }
}

impl Holder {
    fn of(lease: &Lease) -> Self {
        match lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.as_deref())
        {
            None | Some("") => Holder::Free,
            Some(holder) => Holder::Replica(holder.to_owned()),
        }
    }
}

/// Until when `identity` may act as the holder of `lease`, if it holds it.
fn held_until(lease: &Lease, identity: &str) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = SystemTime::from(spec.renew_time.as_ref()?.0);
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    (renewed + duration).checked_sub(STEP_DOWN_BEFORE_EXPIRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: jiff::Timestamp, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_holder_acts_until_a_second_before_its_lease_expires() {
        let renewed = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let until = held_until(&lease("a", renewed, 15), "a").unwrap();
        assert_eq!(
            until.duration_since(SystemTime::from(renewed)).unwrap(),
            Duration::from_secs(14)
        );
    }

    #[test]
    fn a_relist_does_not_interrupt_leading_until_it_is_complete() {
        let now = jiff::Timestamp::now();
        let mut view = LeaseView::new("a");
        view.apply(watcher::Event::Apply(lease("a", now, 15)));
        let later = SystemTime::from(now) + Duration::from_secs(5);
        assert!(view.held_at(later));
        assert_eq!(view.held_for(later), Some(Duration::from_secs(9)));
        view.apply(watcher::Event::Init);
        assert!(view.held_at(later));
        view.apply(watcher::Event::InitApply(lease("b", now, 15)));
        assert!(view.held_at(later), "not before the list is complete");
        view.apply(watcher::Event::InitDone);
        assert!(!view.held_at(later));
        assert_eq!(view.held_for(later), None);
    }

    #[test]
    fn a_lease_stops_being_held_when_it_expires_or_goes() {
        let now = jiff::Timestamp::now();
        let mut view = LeaseView::new("a");
        view.apply(watcher::Event::Apply(lease("a", now, 15)));
        assert!(!view.held_at(SystemTime::from(now) + Duration::from_secs(14)));
        view.apply(watcher::Event::Delete(lease("a", now, 15)));
        assert!(!view.held_at(SystemTime::from(now)));
    }

    fn free(now: jiff::Timestamp) -> Lease {
        let mut free = lease("", now, 15);
        free.spec.as_mut().unwrap().holder_identity = None;
        free
    }

    #[test]
    fn a_lease_freed_by_another_holder_calls_for_a_fresh_campaign() {
        let now = jiff::Timestamp::now();
        let mut view = LeaseView::new("a");
        assert!(!view.apply(watcher::Event::Apply(lease("b", now, 15))));
        assert!(view.apply(watcher::Event::Apply(free(now))), "b freed it");
        assert!(!view.apply(watcher::Event::Apply(free(now))), "still free");
        assert!(!view.apply(watcher::Event::Apply(lease("a", now, 15))));
        assert!(
            !view.apply(watcher::Event::Apply(free(now))),
            "this replica freed it"
        );
    }

    /// The lease manager read the Lease before the watch began: if it was freed in between, the
    /// watch's first sight of it is the only sign.
    #[test]
    fn a_lease_free_when_first_seen_calls_for_a_fresh_campaign() {
        let now = jiff::Timestamp::now();
        let mut listed = LeaseView::new("a");
        assert!(!listed.apply(watcher::Event::Init));
        assert!(!listed.apply(watcher::Event::InitApply(free(now))));
        assert!(
            listed.apply(watcher::Event::InitDone),
            "free on the first list"
        );
        assert!(!listed.apply(watcher::Event::Init));
        assert!(!listed.apply(watcher::Event::InitApply(free(now))));
        assert!(
            !listed.apply(watcher::Event::InitDone),
            "still free on a re-list"
        );

        let mut deleted = LeaseView::new("a");
        deleted.apply(watcher::Event::Apply(lease("b", now, 15)));
        assert!(!deleted.apply(watcher::Event::Delete(lease("b", now, 15))));
        assert!(
            deleted.apply(watcher::Event::Apply(free(now))),
            "created anew"
        );
    }

    #[test]
    fn a_relist_that_finds_the_lease_freed_calls_for_a_fresh_campaign() {
        let now = jiff::Timestamp::now();
        let mut view = LeaseView::new("a");
        view.apply(watcher::Event::Apply(lease("b", now, 15)));
        view.apply(watcher::Event::Init);
        assert!(!view.apply(watcher::Event::InitApply(free(now))));
        assert!(view.apply(watcher::Event::InitDone));
    }

    #[test]
    fn another_holder_or_an_incomplete_lease_is_not_held() {
        let renewed = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(held_until(&lease("b", renewed, 15), "a"), None);
        let mut unrenewed = lease("a", renewed, 15);
        unrenewed.spec.as_mut().unwrap().renew_time = None;
        assert_eq!(held_until(&unrenewed, "a"), None);
        assert_eq!(held_until(&Lease::default(), "a"), None);
    }
}
