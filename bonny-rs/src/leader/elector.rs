//! The elector's public face: built from a validated [`Election`], driven by
//! [`Elector::run`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::campaign::Campaign;
use super::store::KubeLeases;
use super::{Election, Error, Gate, LeaderStatus};

/// Runs the Lease election for one operator replica and gates its controllers.
///
/// Built from an [`Election`] (a [`LeaderElection`](super::LeaderElection) that passed
/// [`validate`](super::LeaderElection::validate)) and a [`kube::Client`]; driven by
/// [`run`](Self::run). See the [module docs](super) for the guarantees.
pub struct Elector {
    campaign: Campaign<KubeLeases>,
}

impl Elector {
    /// An elector for `election`, reading and writing its Lease through `client`.
    pub fn new(election: Election, client: kube::Client) -> Self {
        let store = KubeLeases::new(client, election.lease_namespace(), election.lease_name());
        Self {
            campaign: Campaign::new(election, store),
        }
    }

    /// A shareable view of the election state, for metrics and health checks.
    pub fn status(&self) -> LeaderStatus {
        self.campaign.status()
    }

    /// The identity this replica writes into the Lease.
    pub fn identity(&self) -> &str {
        &self.campaign.ballot().identity
    }

    /// The name of the Lease.
    pub fn lease_name(&self) -> &str {
        &self.campaign.ballot().lease_name
    }

    /// The namespace of the Lease.
    pub fn lease_namespace(&self) -> &str {
        &self.campaign.ballot().lease_namespace
    }

    /// How long the leader may go without a successful renewal before it stops its
    /// controllers.
    pub fn renew_deadline(&self) -> Duration {
        self.campaign.renew_deadline()
    }

    /// How long a standby waits after the last change it saw before taking the Lease.
    pub fn lease_duration(&self) -> Duration {
        self.campaign.ballot().lease_duration
    }

    /// How long closing the gate may take without a standby starting its controllers first:
    /// a leader closes once `renew_deadline` passed since its last renewal, and no standby
    /// takes over before `lease_duration` passed since seeing it. The half of that margin
    /// leaves room for clocks running at different rates and for the close itself.
    pub fn close_budget(&self) -> Duration {
        self.lease_duration().saturating_sub(self.renew_deadline()) / 2
    }

    /// Stands for election until `shutdown` is cancelled, opening `gate` while leading.
    ///
    /// The gate is opened only after a successful write of the Lease and closed (awaited)
    /// before `renew_deadline` has passed without a successful renewal, when another holder
    /// is observed, and on shutdown. On shutdown while leading the Lease is then released
    /// (when `release_on_shutdown`). API errors and timeouts are logged and retried.
    ///
    /// # Errors
    /// [`Error::LeadershipLost`] when leadership is lost and `exit_on_loss` is set, after the
    /// gate was closed. Otherwise returns `Ok(())` once `shutdown` is cancelled.
    pub async fn run<G: Gate>(
        self,
        gate: &mut G,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        self.campaign.run(gate, shutdown).await
    }
}
