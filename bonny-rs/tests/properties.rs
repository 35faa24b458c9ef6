//! Properties over generated input: the environment's durations follow the shared grammar,
//! and manifests render for any valid names, read back as YAML with every name intact.
//!
//! CI runs proptest's default of 256 cases for the durations and 64 for the manifests (each
//! renders and parses a whole set, about 80 ms in a debug build); by hand, run longer with
//! `PROPTEST_CASES=100000 cargo test --release -p bonny-rs --all-features --test properties`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bonny::{Operator, manifest::Options, operator::Settings, prelude::*};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::CustomResource;
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A test resource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    size: u32,
}

#[bonny::controller(resource = Widget, owns = [ConfigMap])]
struct WidgetController;

impl Reconcile<Widget> for WidgetController {
    async fn apply(&self, _axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

/// DNS-1123 labels, with the ones YAML would read as something other than a string if they
/// were written unquoted: booleans, nulls, numbers.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        1 => prop::sample::select(
            &["true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"][..]
        )
        .prop_map(str::to_owned),
        1 => "[0-9]{1,20}",
        1 => "[0-9]{1,3}e[0-9]{1,3}",
        1 => "0(x[0-9a-f]{1,6}|o[0-7]{1,6}|b[01]{1,6})",
        1 => "[0-9]{1,2}-[0-9]{1,2}-[0-9]{1,2}",
    ]
    .prop_filter("a DNS-1123 label", |label| {
        bonny_rules::dns::is_label(label)
    })
}

/// Container images: registry, path, tag or digest.
fn image() -> impl Strategy<Value = String> {
    "([a-z0-9]+(\\.[a-z0-9]+)*(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+){0,2}(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,20}|@sha256:[0-9a-f]{64})?"
}

fn string<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// 64 cases unless `PROPTEST_CASES` asks for another number.
fn manifest_cases() -> ProptestConfig {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default().cases
    } else {
        64
    };
    ProptestConfig { cases, ..config() }
}

/// proptest's defaults (`PROPTEST_CASES` included); failures found are kept as explicit
/// tests, not in files beside the source.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// `BONNY_*` durations are accepted exactly when the shared grammar accepts them, with the
    /// same value: the verdict the macro gives too.
    #[test]
    fn env_durations_get_the_shared_verdict(
        text in prop_oneof![any::<String>(), "[0-9 +.-]{0,22}(ms|s|m|h|min|d|M|S)?[0-9 ]{0,2}"],
    ) {
        let lookup = |var: &str| (var == "BONNY_SHUTDOWN_TIMEOUT").then(|| text.clone());
        let env = Settings::from_lookup(lookup).map(|settings| settings.shutdown_timeout);
        let grammar = bonny_rules::duration::parse(&text).ok();
        prop_assert_eq!(env.ok().flatten(), grammar);
    }
}

proptest! {
    #![proptest_config(manifest_cases())]

    /// Any valid names render; the YAML reads back with every name where it was put.
    #[test]
    fn manifests_keep_valid_names(
        name in label(),
        namespace in label(),
        watched in prop::collection::btree_set(label(), 0..4),
        image in image(),
        replicas in prop::option::of(0i32..10),
        leader_election in any::<bool>(),
    ) {
        let mut builder = Operator::builder()
            .name(name.clone())
            .controller(WidgetController)
            .leader_election(leader_election);
        for namespace in &watched {
            builder = builder.watch_namespace(namespace.clone());
        }
        let mut options = Options::new(image.clone()).namespace(namespace.clone());
        if let Some(replicas) = replicas {
            options = options.replicas(replicas);
        }
        let yaml = builder.build().unwrap().manifests(&options).unwrap().to_yaml().unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
            .map_err(|err| TestCaseError::fail(format!("{err}\n{yaml}")))?;

        let mut bound = BTreeSet::new();
        for doc in &docs {
            let kind = string(doc, "/kind").unwrap_or_default();
            if kind == "CustomResourceDefinition" {
                prop_assert_eq!(string(doc, "/metadata/name"), Some("widgets.example.com"));
                continue;
            }
            // The leader fence names its Lease after the election, its policy after the operator.
            let expected = match kind {
                "Lease" => bonny::leader::default_lease_name(&namespace, &name),
                "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => {
                    format!("{name}-leader-fence")
                }
                _ => name.clone(),
            };
            prop_assert_eq!(string(doc, "/metadata/name"), Some(expected.as_str()), "{}", yaml);
            prop_assert_eq!(
                string(doc, "/metadata/labels/app.kubernetes.io~1name"),
                Some(name.as_str()),
                "{}", yaml
            );
            match kind {
                "ServiceAccount" | "Deployment" => {
                    prop_assert_eq!(string(doc, "/metadata/namespace"), Some(namespace.as_str()));
                }
                "ClusterRoleBinding" | "RoleBinding" => {
                    prop_assert_eq!(string(doc, "/roleRef/name"), Some(name.as_str()));
                    prop_assert_eq!(string(doc, "/subjects/0/name"), Some(name.as_str()));
                    prop_assert_eq!(
                        string(doc, "/subjects/0/namespace"),
                        Some(namespace.as_str())
                    );
                    if kind == "RoleBinding" {
                        bound.insert(string(doc, "/metadata/namespace").unwrap().to_owned());
                    }
                }
                _ => {}
            }
            if kind == "Deployment" {
                let spec = "/spec/template/spec";
                prop_assert_eq!(
                    string(doc, &format!("{spec}/serviceAccountName")),
                    Some(name.as_str())
                );
                prop_assert_eq!(
                    string(doc, &format!("{spec}/containers/0/image")),
                    Some(image.as_str())
                );
                let env = doc.pointer(&format!("{spec}/containers/0/env")).unwrap();
                let var = |key: &str| {
                    env.as_array()
                        .unwrap()
                        .iter()
                        .find(|var| string(var, "/name") == Some(key))
                        .and_then(|var| string(var, "/value"))
                        .map(str::to_owned)
                };
                prop_assert_eq!(var("BONNY_OPERATOR_NAME"), Some(name.clone()));
                let list = watched.iter().cloned().collect::<Vec<_>>().join(",");
                prop_assert_eq!(var("BONNY_WATCH_NAMESPACES"), (!watched.is_empty()).then_some(list));
                let expected = replicas.unwrap_or(if leader_election { 2 } else { 1 });
                prop_assert_eq!(doc.pointer("/spec/replicas").and_then(Value::as_i64), Some(i64::from(expected)));
            }
        }
        let kinds: Vec<&str> = docs.iter().filter_map(|doc| string(doc, "/kind")).collect();
        prop_assert!(kinds.contains(&"Deployment") && kinds.contains(&"ClusterRole"), "{:?}", kinds);
        if !watched.is_empty() {
            let mut expected = watched.clone();
            expected.insert(namespace.clone());
            prop_assert_eq!(bound, expected);
        }
    }
}
