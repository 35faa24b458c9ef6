//! The API server's `apiserver_request_total`, and the driver's own requests, so that what a
//! peer cost can be told apart from what the driver asked.

use std::{
    collections::BTreeMap,
    ops::Sub,
    sync::{Arc, Mutex},
};

/// Resources the API server's own loops write (Leases of its identity, the `kubernetes`
/// Service's endpoints, flow-control configuration, ...): not a peer's doing.
const APISERVER_SELF: &[&str] = &[
    "leases",
    "endpoints",
    "endpointslices",
    "services",
    "namespaces",
    "flowschemas",
    "prioritylevelconfigurations",
    "apiservices",
    "clusterroles",
    "clusterrolebindings",
    "roles",
    "rolebindings",
    "priorityclasses",
    "customresourcedefinitions",
];

/// What a peer writes when it reconciles: its resource, its children and its events.
pub const PEER_RESOURCES: &[&str] = &["widgets", "configmaps", "events"];

/// Request counts by `(verb, resource)`; `resource` is empty for non-resource URLs
/// (`/metrics`, discovery).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    by_verb_resource: BTreeMap<(String, String), u64>,
    /// Answers with code 409 (conflicts), by `(verb, resource)`.
    conflicts: BTreeMap<(String, String), u64>,
}

impl Counts {
    /// Parses the Prometheus text of the API server's `/metrics` (with
    /// [`bonny::testing::RequestCounts`], the SDK's one parser of it).
    pub fn parse(text: &str) -> Self {
        let mut counts = Counts::default();
        for sample in bonny::testing::RequestCounts::parse(text).samples() {
            let key = (sample.verb.clone(), sample.resource.clone());
            if sample.code == "409" {
                *counts.conflicts.entry(key.clone()).or_insert(0) += sample.count;
            }
            *counts.by_verb_resource.entry(key).or_insert(0) += sample.count;
        }
        counts
    }

    fn add(&mut self, verb: &str, resource: &str, count: u64) {
        *self
            .by_verb_resource
            .entry((verb.to_owned(), resource.to_owned()))
            .or_insert(0) += count;
    }

    /// Without the API server's own traffic and without non-resource requests (only the
    /// driver's `/metrics` scrapes show up there, and the API server counts each one a little
    /// after answering it, so they cannot be subtracted exactly).
    pub fn without_apiserver_self(&self) -> Counts {
        let keep = |((_, resource), _): &(&(String, String), &u64)| {
            !resource.is_empty() && !APISERVER_SELF.contains(&resource.as_str())
        };
        Counts {
            by_verb_resource: self
                .by_verb_resource
                .iter()
                .filter(keep)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            conflicts: self
                .conflicts
                .iter()
                .filter(keep)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_verb_resource.values().sum()
    }

    /// Writes (create, update, patch, apply, delete) to the resources a peer reconciles.
    pub fn peer_writes(&self) -> u64 {
        self.by_verb_resource
            .iter()
            .filter(|((verb, resource), _)| {
                !matches!(verb.as_str(), "GET" | "LIST" | "WATCH")
                    && PEER_RESOURCES.contains(&resource.as_str())
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// Answers with code 409.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.values().sum()
    }

    /// `VERB resource=count` pairs, for a breakdown.
    pub fn describe(&self) -> String {
        self.by_verb_resource
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|((verb, resource), count)| {
                let resource = if resource.is_empty() {
                    "(non-resource)"
                } else {
                    resource
                };
                format!("{verb} {resource}={count}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Sub for &Counts {
    type Output = Counts;

    /// The difference of two snapshots (saturating: a counter never goes down).
    fn sub(self, earlier: &Counts) -> Counts {
        let diff = |now: &BTreeMap<(String, String), u64>,
                    before: &BTreeMap<(String, String), u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Counts {
            by_verb_resource: diff(&self.by_verb_resource, &earlier.by_verb_resource),
            conflicts: diff(&self.conflicts, &earlier.conflicts),
        }
    }
}

/// The requests the driver itself sent, by `(verb, resource)`.
#[derive(Clone, Debug, Default)]
pub struct Ledger(Arc<Mutex<Counts>>);

impl Ledger {
    /// Notes `count` requests.
    pub fn record(&self, verb: &str, resource: &str, count: u64) {
        if let Ok(mut counts) = self.0.lock() {
            counts.add(verb, resource, count);
        }
    }

    /// What was recorded so far.
    pub fn snapshot(&self) -> Counts {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// A point in time: the API server's counters and the driver's ledger.
#[derive(Clone, Debug)]
pub struct Mark {
    server: Counts,
    driver: Counts,
}

impl Mark {
    /// Marks now: reads `/metrics` and the ledger.
    pub async fn take(
        env: &bonny::testing::TestEnv,
        ledger: &Ledger,
    ) -> Result<Mark, bonny::testing::Error> {
        // A read: after a dropped connection (a loaded API server) it is simply sent again.
        let mut attempt = 1;
        let text = loop {
            match env.apiserver_metrics().await {
                Ok(text) => break text,
                Err(err) if attempt < 5 => {
                    eprintln!("  metrics scrape failed ({err}); retrying");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let driver = ledger.snapshot();
        ledger.record("GET", "", 1);
        Ok(Mark {
            server: Counts::parse(&text),
            driver,
        })
    }

    /// What the peer sent between `earlier` and this mark: the API server's count less the
    /// driver's own requests and the API server's own traffic.
    pub fn peer_since(&self, earlier: &Mark) -> Counts {
        let server = &self.server - &earlier.server;
        let driver = &self.driver - &earlier.driver;
        let mut peer = Counts::default();
        for ((verb, resource), count) in &server.by_verb_resource {
            let own = driver
                .by_verb_resource
                .get(&(verb.clone(), resource.clone()))
                .copied()
                .unwrap_or(0);
            peer.add(verb, resource, count.saturating_sub(own));
        }
        peer.conflicts = server.conflicts;
        peer.without_apiserver_self()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"apiserver_request_total{code="200",component="apiserver",group="",resource="configmaps",scope="namespace",subresource="",verb="PATCH",version="v1"} 3
apiserver_request_total{code="409",component="apiserver",group="",resource="configmaps",scope="namespace",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",group="",resource="configmaps",scope="namespace",subresource="",verb="LIST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="PUT",version="v1"} 1e+01
"#;

    #[test]
    fn parses_writes_conflicts_and_drops_apiserver_self_traffic() {
        let counts = Counts::parse(TEXT);
        assert_eq!(counts.total(), 22);
        assert_eq!(counts.peer_writes(), 5);
        assert_eq!(counts.conflicts(), 2);
        assert_eq!(counts.without_apiserver_self().total(), 12);
    }

    #[test]
    fn differences_subtract_per_key() {
        let later = Counts::parse(TEXT);
        let mut earlier = Counts::default();
        earlier.add("LIST", "configmaps", 4);
        assert_eq!((&later - &earlier).total(), 18);
    }
}
