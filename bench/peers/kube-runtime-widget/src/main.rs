//! The plain kube-runtime peer of the bonny-rs benchmark: the Widget controller of the bonny-rs
//! end-to-end tests (`tests/src/widget.rs`) written the way a typical kube-runtime author would.
//!
//! `Controller::new(widgets).owns(configmaps)`, the finalizer through
//! `kube::runtime::finalizer`, a server-side apply of the ConfigMap `<name>-data` and a merge
//! patch of the status on every reconcile, a `Resized` event when the size changes. It reads
//! `KUBECONFIG` and watches all namespaces.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::ConfigMap,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, CustomResource, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event as Note, EventType, Recorder, Reporter},
        finalizer::{Event, finalizer},
        watcher,
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const FINALIZER: &str = "e2e.bonny.dev/cleanup";
const MANAGER: &str = "kube-runtime-widget";

/// The spec (the same resource as `bonny_e2e::widget::Widget`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "e2e.bonny.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    /// Size.
    pub size: u32,
}

/// The status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    /// The size last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the widget has no namespace")]
    NoNamespace,
}

struct Context {
    client: Client,
    recorder: Recorder,
}

async fn reconcile(widget: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = widget.namespace().ok_or(Error::NoNamespace)?;
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&widgets, FINALIZER, widget, |event| async {
        match event {
            Event::Apply(widget) => apply(&widget, &widgets, &ctx).await,
            // Nothing outside the cluster to clean up; the ConfigMap goes with its owner.
            Event::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(widget: &Widget, widgets: &Api<Widget>, ctx: &Context) -> Result<Action, Error> {
    let name = widget.name_any();
    let namespace = widget.namespace().ok_or(Error::NoNamespace)?;
    let size = widget.spec.size;

    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{name}-data")),
            namespace: Some(namespace.clone()),
            owner_references: widget.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some([("size".to_owned(), size.to_string())].into()),
        ..ConfigMap::default()
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    configmaps
        .patch(
            &format!("{name}-data"),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await?;

    let mut status = widget.status.clone().unwrap_or_default();
    if status.size != Some(size) {
        ctx.recorder
            .publish(
                &Note {
                    type_: EventType::Normal,
                    reason: "Resized".into(),
                    note: Some(format!("size is now {size}")),
                    action: "Reconcile".into(),
                    secondary: None,
                },
                &widget.object_ref(&()),
            )
            .await?;
    }
    status.size = Some(size);
    set_ready(&mut status.conditions, widget.meta().generation);
    widgets
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Sets `Ready=True`, moving `lastTransitionTime` only when the status flips (otherwise every
/// status patch would change the object and trigger another reconcile).
fn set_ready(conditions: &mut Vec<Condition>, generation: Option<i64>) {
    let ready = Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "Reconciled".into(),
        message: "the ConfigMap holds the size".into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    };
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(existing) if existing.status == ready.status => {
            *existing = Condition {
                last_transition_time: existing.last_transition_time.clone(),
                ..ready
            }
        }
        Some(existing) => *existing = ready,
        None => conditions.push(ready),
    }
}

fn error_policy(_widget: Arc<Widget>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(1))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let client = Client::try_default().await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    let context = Arc::new(Context {
        client: client.clone(),
        recorder,
    });
    tracing::info!("starting");
    Controller::new(
        Api::<Widget>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ConfigMap>::all(client), watcher::Config::default())
    .shutdown_on_signal()
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "reconcile error");
        }
    })
    .await;
    Ok(())
}
