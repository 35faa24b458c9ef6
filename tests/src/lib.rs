//! Fixtures shared by the end-to-end tests: a test resource and controller, polling with a
//! deadline, and the API server's request counters.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod census;
pub mod copier;
pub mod gated;
pub mod in_process;
pub mod ledger;
pub mod replica;
pub mod stored;
pub mod ticker;
pub mod widget;
pub mod witness;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client};

pub use bonny::testing::eventually;

/// Log to the test output, once per process.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,bonny=debug")),
        )
        .with_test_writer()
        .try_init();
}

/// The events about the object `name` in `namespace`.
pub async fn events_for(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Whether `events` hold one of this type and reason.
pub fn has_event(events: &[Event], type_: &str, reason: &str) -> bool {
    events
        .iter()
        .any(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
}
