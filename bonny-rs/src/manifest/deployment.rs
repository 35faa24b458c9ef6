//! Options for generated manifests, and the ServiceAccount, bindings and Deployment built from
//! them.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
            ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SecurityContext, ServiceAccount,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{Rule, merge_rules};

/// Choices the registrations cannot make: where and what to deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Options {
    pub(crate) image: String,
    pub(crate) namespace: String,
    pub(crate) replicas: Option<i32>,
    pub(crate) metrics_port: u16,
    pub(crate) fence: bool,
    pub(crate) webhook_url: Option<String>,
}

impl Options {
    /// Manifests for the operator image `image`, deployed to the `default` namespace.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            namespace: "default".to_owned(),
            replicas: None,
            metrics_port: 8080,
            fence: true,
            webhook_url: None,
        }
    }

    /// The namespace the operator runs in.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Replica count (default: 2 with leader election, else 1).
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// With leader election, whether to include the leader fence (default on): an admission
    /// policy that makes the API server refuse the operator's writes from any replica but the
    /// Lease holder. Turn it off to run replicas outside pods (see [`super::fence`]).
    pub fn fence(mut self, on: bool) -> Self {
        self.fence = on;
        self
    }

    /// Have the API server call the webhooks at this base URL (`https://host:port`) instead of
    /// through their Service: for an operator running outside the cluster, as in tests. No
    /// Service is generated then.
    pub fn webhook_url(mut self, base: impl Into<String>) -> Self {
        self.webhook_url = Some(base.into());
        self
    }

    /// Port of `/metrics`, `/healthz` and `/readyz` (default 8080).
    pub fn metrics_port(mut self, port: u16) -> Self {
        self.metrics_port = port;
        self
    }
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), name.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "bonny-rs".to_owned(),
        ),
    ])
}

pub(crate) fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(name)),
        ..ObjectMeta::default()
    }
}

pub(crate) fn service_account(name: &str, options: &Options) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, Some(&options.namespace)),
        ..ServiceAccount::default()
    }
}

pub(crate) fn cluster_role(name: &str, rules: Vec<Rule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None),
        rules: Some(merge_rules(rules).iter().map(Into::into).collect()),
        ..ClusterRole::default()
    }
}

fn subjects(name: &str, options: &Options) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(options.namespace.clone()),
        ..Subject::default()
    }]
}

fn role_ref(name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: "ClusterRole".to_owned(),
        name: name.to_owned(),
    }
}

pub(crate) fn cluster_role_binding(name: &str, options: &Options) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: role_ref(name),
        subjects: Some(subjects(name, options)),
    }
}

pub(crate) fn role_binding(name: &str, namespace: &str, options: &Options) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(namespace)),
        role_ref: role_ref(name),
        subjects: Some(subjects(name, options)),
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn probe(path: &str, port: u16) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

pub(crate) fn deployment(
    name: &str,
    options: &Options,
    leader_election: bool,
    watch_namespaces: Option<&[String]>,
) -> Deployment {
    let mut env = vec![
        value_env("BONNY_OPERATOR_NAME", name),
        field_env("BONNY_POD_NAME", "metadata.name"),
        field_env("BONNY_POD_NAMESPACE", "metadata.namespace"),
        value_env(
            "BONNY_HTTP_ADDR",
            &format!("0.0.0.0:{}", options.metrics_port),
        ),
    ];
    if let Some(namespaces) = watch_namespaces {
        env.push(value_env("BONNY_WATCH_NAMESPACES", &namespaces.join(",")));
    }
    let container = Container {
        name: "operator".to_owned(),
        image: Some(options.image.clone()),
        args: Some(vec!["run".to_owned()]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: i32::from(options.metrics_port),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", options.metrics_port)),
        readiness_probe: Some(probe("/readyz", options.metrics_port)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".to_owned())),
                ("memory".to_owned(), Quantity("64Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("256Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: meta(name, Some(&options.namespace)),
        spec: DeploymentSpec {
            replicas: Some(
                options
                    .replicas
                    .unwrap_or(if leader_election { 2 } else { 1 }),
            ),
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.to_owned()),
                    termination_grace_period_seconds: Some(45),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}
