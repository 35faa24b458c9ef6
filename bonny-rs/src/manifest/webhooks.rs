//! The webhook manifests: the Service in front of the webhook server, the validating and
//! mutating configurations, the CRDs' `conversion: Webhook` stanza, and the RBAC the
//! certificate handling needs.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        admissionregistration::v1::{
            MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
            ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        apps::v1::Deployment,
        core::v1::{ContainerPort, Service, ServicePort, ServiceSpec},
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        self as crd, CustomResourceConversion, CustomResourceDefinition, WebhookConversion,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
        util::intstr::IntOrString,
    },
};

use super::{Options, Rule, deployment::meta};
use crate::webhook::{HookKind, Route, Webhooks, secret_name, service_name};

/// The manifests of an operator's webhooks.
#[derive(Clone, Debug, Default)]
pub struct WebhookManifests {
    /// The Service the API server calls (absent when [`Options::webhook_url`] is set).
    pub service: Option<Service>,
    /// The validators, one configuration named after the operator.
    pub validating: Option<ValidatingWebhookConfiguration>,
    /// The defaulters, one configuration named after the operator.
    pub mutating: Option<MutatingWebhookConfiguration>,
    /// Reading and writing the self-managed certificate Secret, in the operator's namespace.
    pub role: Role,
    /// Binds [`WebhookManifests::role`] to the operator's ServiceAccount.
    pub role_binding: RoleBinding,
}

/// The label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn client_config(name: &str, options: &Options, path: &str) -> WebhookClientConfig {
    match &options.webhook_url {
        Some(base) => WebhookClientConfig {
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            ..WebhookClientConfig::default()
        },
        None => WebhookClientConfig {
            service: Some(ServiceReference {
                name: service_name(name),
                namespace: options.namespace.clone(),
                path: Some(path.to_owned()),
                port: Some(443),
            }),
            ..WebhookClientConfig::default()
        },
    }
}

/// Never send the operator's own namespace to its webhooks: a broken webhook must not stop
/// the operator from being repaired.
fn namespace_selector(options: &Options) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.to_owned(),
            operator: "NotIn".to_owned(),
            values: Some(vec![options.namespace.clone()]),
        }]),
        ..LabelSelector::default()
    }
}

fn rule(route: &Route) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![route.group.clone()]),
        api_versions: Some(vec![route.version.clone()]),
        resources: Some(vec![route.plural.clone()]),
        operations: Some(route.operations.iter().map(|o| (*o).to_owned()).collect()),
        scope: Some("*".to_owned()),
    }
}

/// The webhook manifests, and the changes they make to the CRDs and the Deployment.
pub(crate) fn build(
    name: &str,
    webhooks: &Webhooks,
    options: &Options,
    crds: &mut [CustomResourceDefinition],
    deployment: &mut Deployment,
) -> WebhookManifests {
    let routes: Vec<&Route> = webhooks.routes().collect();
    let policy = webhooks.policy().as_str().to_owned();
    let timeout = webhooks.timeout_seconds();
    let versions = vec!["v1".to_owned()];
    let validating: Vec<ValidatingWebhook> = routes
        .iter()
        .filter(|r| r.kind == HookKind::Validating)
        .map(|route| ValidatingWebhook {
            name: route.name.clone(),
            admission_review_versions: versions.clone(),
            client_config: client_config(name, options, &route.path),
            failure_policy: Some(policy.clone()),
            match_policy: Some("Equivalent".to_owned()),
            namespace_selector: Some(namespace_selector(options)),
            rules: Some(vec![rule(route)]),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(timeout),
            ..ValidatingWebhook::default()
        })
        .collect();
    let mutating: Vec<MutatingWebhook> = routes
        .iter()
        .filter(|r| r.kind == HookKind::Mutating)
        .map(|route| MutatingWebhook {
            name: route.name.clone(),
            admission_review_versions: versions.clone(),
            client_config: client_config(name, options, &route.path),
            failure_policy: Some(policy.clone()),
            match_policy: Some("Equivalent".to_owned()),
            namespace_selector: Some(namespace_selector(options)),
            rules: Some(vec![rule(route)]),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(timeout),
            reinvocation_policy: Some("IfNeeded".to_owned()),
            ..MutatingWebhook::default()
        })
        .collect();
    for route in routes.iter().filter(|r| r.kind == HookKind::Conversion) {
        let crd_name = route.crd_name();
        if let Some(crd) = crds
            .iter_mut()
            .find(|crd| crd.metadata.name.as_deref() == Some(crd_name.as_str()))
        {
            let config = client_config(name, options, &route.path);
            crd.spec.conversion = Some(CustomResourceConversion {
                strategy: "Webhook".to_owned(),
                webhook: Some(WebhookConversion {
                    client_config: Some(crd::WebhookClientConfig {
                        ca_bundle: None,
                        url: config.url,
                        service: config.service.map(|s| crd::ServiceReference {
                            name: s.name,
                            namespace: s.namespace,
                            path: s.path,
                            port: s.port,
                        }),
                    }),
                    conversion_review_versions: versions.clone(),
                }),
            });
        }
    }
    let selector = deployment
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default();
    if let Some(container) = deployment
        .spec
        .template
        .spec
        .as_mut()
        .and_then(|pod| pod.containers.first_mut())
    {
        container
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                name: Some("webhooks".to_owned()),
                container_port: i32::from(webhooks.port_number()),
                ..ContainerPort::default()
            });
    }
    let service = options.webhook_url.is_none().then(|| Service {
        metadata: meta(&service_name(name), Some(&options.namespace)),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("webhooks".to_owned()),
                port: 443,
                target_port: Some(IntOrString::String("webhooks".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    });
    let role_name = secret_name(name);
    WebhookManifests {
        service,
        validating: (!validating.is_empty()).then(|| ValidatingWebhookConfiguration {
            metadata: meta(name, None),
            webhooks: Some(validating),
        }),
        mutating: (!mutating.is_empty()).then(|| MutatingWebhookConfiguration {
            metadata: meta(name, None),
            webhooks: Some(mutating),
        }),
        role: Role {
            metadata: meta(&role_name, Some(&options.namespace)),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".to_owned()]),
                verbs: vec!["create".to_owned(), "get".to_owned(), "update".to_owned()],
                ..PolicyRule::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta(&role_name, Some(&options.namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Role".to_owned(),
                name: role_name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: name.to_owned(),
                namespace: Some(options.namespace.clone()),
                ..Subject::default()
            }]),
        },
    }
}

/// The cluster-wide rules for writing the CA bundle: the operator's webhook configurations and
/// the CRDs it converts.
pub(crate) fn rules(webhooks: &Webhooks) -> Vec<Rule> {
    let mut rules = Vec::new();
    let kinds: BTreeMap<HookKind, &str> = BTreeMap::from([
        (HookKind::Validating, "validatingwebhookconfigurations"),
        (HookKind::Mutating, "mutatingwebhookconfigurations"),
        (HookKind::Conversion, "customresourcedefinitions"),
    ]);
    for (kind, resource) in kinds {
        if webhooks.routes().any(|r| r.kind == kind) {
            let group = if kind == HookKind::Conversion {
                "apiextensions.k8s.io"
            } else {
                "admissionregistration.k8s.io"
            };
            rules.push(Rule::new(group, [resource], ["get", "update"]));
        }
    }
    rules
}
