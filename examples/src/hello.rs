//! Hello world: a `Greeting` yields a ConfigMap holding the greeting, and a status saying so.
//!
//! ```yaml
//! apiVersion: hello.bonny.dev/v1
//! kind: Greeting
//! metadata: { name: world }
//! spec: { salutation: Hello, name: World }
//! ```

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{CustomResource, api::ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who to greet, and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hello.bonny.dev",
    version = "v1",
    kind = "Greeting",
    namespaced,
    status = "GreetingStatus",
    shortname = "greet",
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#
)]
pub struct GreetingSpec {
    /// How to greet, e.g. `Hello`.
    pub salutation: String,
    /// Whom to greet.
    pub name: String,
}

/// What the operator did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GreetingStatus {
    /// The greeting written to the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The replica that wrote it (the leader at the time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeted_by: Option<String>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Writes each greeting into a ConfigMap named after the Greeting.
#[bonny::controller(resource = Greeting, owns = [ConfigMap])]
#[derive(Clone, Debug, Default)]
pub struct GreetingController;

impl Reconcile<Greeting> for GreetingController {
    async fn apply(&self, axn: &mut Axn<Greeting>) -> Result<Action, ReconcileError> {
        let greeting = axn.object().clone();
        if greeting.spec.name.trim().is_empty() {
            return Err(ReconcileError::invalid_spec(
                "spec.name is empty: say whom to greet",
            ));
        }
        let message = format!("{}, {}!", greeting.spec.salutation, greeting.spec.name);
        axn.register_descendant(ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-greeting", axn.name())),
                ..ObjectMeta::default()
            },
            data: Some([("message".to_owned(), message.clone())].into()),
            ..ConfigMap::default()
        })?;
        let mut status = greeting.status.clone().unwrap_or_default();
        if status.message.as_deref() != Some(message.as_str()) {
            axn.normal_event("Greeted", message.clone());
            status.message = Some(message);
            status.greeted_by = std::env::var("BONNY_POD_NAME").ok();
        }
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Greeted",
            "the ConfigMap holds the greeting",
            greeting.metadata.generation,
        );
        axn.set_status(&status)?;
        Ok(Action::await_change())
    }
}

/// The hello-world operator: one controller, leader election on.
///
/// # Errors
/// When the environment holds an invalid setting.
pub fn operator() -> Result<bonny::Operator, bonny::Error> {
    bonny::Operator::builder()
        .name("hello-operator")
        .controller(GreetingController)
        .leader_election(true)
        .build()
}
