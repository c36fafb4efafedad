//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so that with several
//! replicas exactly one polls the cloud and writes status; the others wait, ready to take over.

use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
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
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Joins the election (creating the Lease if needed).
    pub async fn join(
        client: kube::Client,
        settings: &LeaseSettings,
    ) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_field_manager(format!("compshare-operator/{}", settings.identity))
            .with_duration(settings.duration.as_secs().max(1))
            .with_grace(settings.renew_before.as_secs().max(1))
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Leadership { leading, task })
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) {
        // An error means the election task is gone; treat it as never leading.
        if self.leading.wait_for(|leading| *leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when this replica stops leading (lease taken over, or the election task ended).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut leading = self.leading.clone();
        async move {
            let _ = leading.wait_for(|leading| !*leading).await;
        }
    }

    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Leaves the election, releasing the Lease if this replica holds it, so that another
    /// replica takes over at once instead of after the lease duration.
    pub async fn release(self) {
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
            Err(error) => tracing::warn!(%error, "the leader election task failed"),
        }
    }
}
