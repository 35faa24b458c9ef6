//! The server-side fence of leader election: a `ValidatingAdmissionPolicy` and its binding
//! that make the API server refuse writes by a replica that does not hold the Lease.
//!
//! A frozen or partitioned leader can resume and send a write after a successor took over;
//! the client-side guard stops what it can, and this policy stops the rest inside the API
//! server, which compares the caller's pod (from its pod-bound service account token) with the
//! Lease's `holderIdentity` at the moment it handles the write. Only the operator's own
//! service account is checked, only on the kinds it writes, never on Leases or Events.
//!
//! What it needs: the replica identity in the Lease is the pod name (the generated Deployment
//! passes `metadata.name` as `BONNY_POD_NAME`), and the replica authenticates with the token
//! its pod gets by default. A replica of the operator's service account with a token bound to
//! no pod (a legacy secret token) or under an identity that is not its pod's name has every
//! fenced write refused: turn the fence off with [`Options::fence`](super::Options::fence)
//! there. The operator checks this at startup with one `SelfSubjectReview` and names the
//! problem in a warning ([`check_identity`](crate::leader::check_identity)). Credentials that
//! are not the operator's service account (a person's kubeconfig) are not fenced at all.
//!
//! What a refusal looks like: `403 Forbidden`, message `ValidatingAdmissionPolicy
//! '<name>-leader-fence' with binding '<name>-leader-fence' denied request: this replica
//! does not hold the lease <lease>` ([`FENCE_REFUSAL`](crate::leader::FENCE_REFUSAL)).
//! Without the Lease: `422 Invalid`, "no params found for policy binding" (see [`Fence`]).
//! Right after a takeover the API server may still see the old holder for a moment (it reads
//! the Lease from its own cache), so a new leader's first writes can be refused; the client
//! guard retries those briefly, recognising them by that text.
//!
//! What it does not cover: CEL has no clock, so a holder whose lease ran out can still
//! write until a successor has written the Lease (the client guard covers that time); with
//! several API servers each checks against its own cache; writes by other users (people,
//! other controllers) and to Leases and Events are never checked.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ParamKind, ParamRef,
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};

use super::Rule;

/// The `extra` key under which a pod-bound service account token names its pod.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// Annotation that says what the objects do, for whoever finds them in a cluster.
const DESCRIPTION: &str = "bonny.dev/description";
/// Verbs that change state, as RBAC spells them.
const WRITE_VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];
/// Never fenced: the elector must write its Lease to take over, and Events are diagnostics.
const NEVER_FENCED: &[(&str, &str)] = &[
    ("coordination.k8s.io", "leases"),
    ("", "events"),
    ("events.k8s.io", "events"),
];

/// The fence's objects, in apply order.
///
/// The Lease comes first, without a holder: the API server looks the binding's parameter up
/// before it evaluates the policy's match conditions, so while the Lease is missing,
/// `parameterNotFoundAction: Deny` refuses writes to the fenced kinds by *everyone* (with
/// code 422, "no params found"), not only by the operator. With the Lease in place, only the
/// operator's service account is checked. An empty Lease is safe to apply again (it sets no
/// field the elector writes); the first replica takes it over once a lease duration has
/// passed without a holder.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    /// The operator's Lease, without a holder: the policy's parameter exists from the start.
    pub lease: Lease,
    /// Refuses the operator's writes unless the caller's pod holds the Lease.
    pub policy: ValidatingAdmissionPolicy,
    /// Binds the policy to the operator's Lease (its parameter).
    pub binding: ValidatingAdmissionPolicyBinding,
}

/// Where the operator runs and which Lease it campaigns for.
struct Target<'a> {
    /// The operator's name: also its service account's name and the policy's prefix.
    name: &'a str,
    /// The namespace of its service account.
    namespace: &'a str,
    /// The Lease's name.
    lease_name: &'a str,
    /// The Lease's namespace.
    lease_namespace: &'a str,
}

/// The fence of operator `name` deployed with `options`: the Lease its replicas will campaign
/// for there, and the kinds its RBAC `rules` let it write.
///
/// `election` was resolved where the manifests are generated, usually outside a pod: a Lease
/// namespace it took from no setting (`default`) becomes the Deployment's namespace, as the
/// deployed replicas will resolve it from their pod's, and a default Lease name follows.
pub(crate) fn for_operator(
    name: &str,
    election: &crate::leader::Election,
    options: &super::Options,
    rules: &[Rule],
) -> Fence {
    use crate::leader::default_lease_name;
    let configured_namespace = election.lease_namespace();
    let lease_namespace = if configured_namespace == "default" {
        options.namespace.clone()
    } else {
        configured_namespace.to_owned()
    };
    let lease_name = if election.lease_name() == default_lease_name(configured_namespace, name) {
        default_lease_name(&lease_namespace, name)
    } else {
        election.lease_name().to_owned()
    };
    let target = Target {
        name,
        namespace: &options.namespace,
        lease_name: &lease_name,
        lease_namespace: &lease_namespace,
    };
    fence(&target, &super::merge_rules(rules.iter().cloned()))
}

/// The fence for the operator at `target` whose RBAC `rules` say what it writes.
fn fence(target: &Target<'_>, rules: &[Rule]) -> Fence {
    let name = format!("{}-leader-fence", target.name);
    let meta = |description: &str| {
        let mut meta = super::deployment::meta(target.name, None);
        meta.name = Some(name.clone());
        meta.annotations = Some(BTreeMap::from([(
            DESCRIPTION.to_owned(),
            description.to_owned(),
        )]));
        meta
    };
    let username = format!("system:serviceaccount:{}:{}", target.namespace, target.name);
    let operations = || Some(["CREATE", "UPDATE", "DELETE"].map(String::from).to_vec());
    let resource_rules = fenced_resources(rules)
        .into_iter()
        .map(|(group, resources)| NamedRuleWithOperations {
            api_groups: Some(vec![group]),
            api_versions: Some(vec!["*".to_owned()]),
            resources: Some(resources.into_iter().collect()),
            // A PATCH reaches admission as an UPDATE.
            operations: operations(),
            ..NamedRuleWithOperations::default()
        })
        .collect();
    let exclude_resource_rules = NEVER_FENCED
        .iter()
        .map(|(group, resource)| NamedRuleWithOperations {
            api_groups: Some(vec![(*group).to_owned()]),
            api_versions: Some(vec!["*".to_owned()]),
            resources: Some(vec![(*resource).to_owned()]),
            operations: Some(vec!["*".to_owned()]),
            ..NamedRuleWithOperations::default()
        })
        .collect();
    let policy = ValidatingAdmissionPolicy {
        metadata: meta(&format!(
            "Leader fence of {}: the API server refuses create, update, patch and delete by \
             {username} on the kinds it manages unless the caller's pod \
             (its token's pod-name) is the holder of Lease {}/{}. A replica that lost the \
             lease cannot land a late write. Needs the replica identity to be the pod name; \
             delete these two objects (or generate without the fence) to run the operator \
             outside a pod.",
            target.name, target.lease_namespace, target.lease_name
        )),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            param_kind: Some(ParamKind {
                api_version: Some("coordination.k8s.io/v1".to_owned()),
                kind: Some("Lease".to_owned()),
            }),
            match_constraints: Some(MatchResources {
                resource_rules: Some(resource_rules),
                exclude_resource_rules: Some(exclude_resource_rules),
                ..MatchResources::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "operator-service-account".to_owned(),
                expression: format!("request.userInfo.username == '{username}'"),
            }]),
            validations: Some(vec![Validation {
                expression: format!(
                    "has(params.spec.holderIdentity) && has(request.userInfo.extra) && \
                     '{POD_NAME_EXTRA}' in request.userInfo.extra && \
                     request.userInfo.extra['{POD_NAME_EXTRA}'].exists(pod, \
                     pod == params.spec.holderIdentity)"
                ),
                message: Some(format!(
                    "{} {}",
                    crate::leader::FENCE_REFUSAL,
                    target.lease_name
                )),
                reason: Some("Forbidden".to_owned()),
                ..Validation::default()
            }]),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        ..ValidatingAdmissionPolicy::default()
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: meta(&format!(
            "Binds the leader fence of {} to its Lease {}/{}; while the Lease is missing, \
             the operator's writes are refused.",
            target.name, target.lease_namespace, target.lease_name
        )),
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: name.clone(),
            validation_actions: vec!["Deny".to_owned()],
            param_ref: Some(ParamRef {
                name: Some(target.lease_name.to_owned()),
                namespace: Some(target.lease_namespace.to_owned()),
                parameter_not_found_action: Some("Deny".to_owned()),
                ..ParamRef::default()
            }),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        },
    };
    let lease = Lease {
        metadata: {
            let mut meta = meta(&format!(
                "Leader election Lease of {}, created empty with the leader fence so that the \
                 fence's parameter exists before the first replica runs (without it, the fence \
                 refuses writes to the fenced kinds by every user). The replicas fill it in.",
                target.name
            ));
            meta.name = Some(target.lease_name.to_owned());
            meta.namespace = Some(target.lease_namespace.to_owned());
            meta
        },
        spec: Some(LeaseSpec::default()),
    };
    Fence {
        lease,
        policy,
        binding,
    }
}

/// The resources the operator may write, by API group: every resource of a rule with a write
/// verb (its own resources with their subresources, owned kinds, declared write rules),
/// without Leases and Events.
fn fenced_resources(rules: &[Rule]) -> BTreeMap<String, BTreeSet<String>> {
    let mut fenced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in rules {
        if !rule
            .verbs
            .iter()
            .any(|verb| WRITE_VERBS.contains(&verb.as_str()))
        {
            continue;
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let plural = resource.split('/').next().unwrap_or(resource);
                if NEVER_FENCED.contains(&(group.as_str(), plural)) {
                    continue;
                }
                fenced
                    .entry(group.clone())
                    .or_default()
                    .insert(resource.clone());
            }
        }
    }
    fenced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            name: "widget-operator",
            namespace: "ops",
            lease_name: "ops-widget-operator",
            lease_namespace: "ops",
        }
    }

    fn rules() -> Vec<Rule> {
        vec![
            Rule::new(
                "example.com",
                ["widgets"],
                ["get", "list", "watch", "patch"],
            ),
            Rule::new("example.com", ["widgets/status"], ["patch", "update"]),
            Rule::new("example.com", ["widgets/finalizers"], ["update"]),
            Rule::new("", ["configmaps"], ["get", "create", "delete"]),
            Rule::new("", ["secrets"], ["get", "list", "watch"]),
            Rule::new("events.k8s.io", ["events"], ["create", "patch"]),
            Rule::new("coordination.k8s.io", ["leases"], ["get", "update"]),
            Rule::new("", ["events"], ["create"]),
        ]
    }

    #[test]
    fn the_lease_is_the_one_the_deployed_replicas_resolve() {
        use crate::leader::{Defaults, LeaderElection, default_lease_name};
        let options = super::super::Options::new("img:1").namespace("ops");
        let defaulted = LeaderElection::new()
            .validate(&Defaults::new("op"))
            .expect("valid");
        let param = for_operator("op", &defaulted, &options, &rules())
            .binding
            .spec
            .param_ref;
        let param = param.expect("param ref");
        assert_eq!(param.namespace.as_deref(), Some("ops"));
        assert_eq!(param.name, Some(default_lease_name("ops", "op")));

        let configured = LeaderElection::new()
            .lease_namespace("elections")
            .lease_name("op-leader")
            .validate(&Defaults::new("op"))
            .expect("valid");
        let fence = for_operator("op", &configured, &options, &rules());
        let param = fence.binding.spec.param_ref.expect("param ref");
        assert_eq!(
            (param.namespace.as_deref(), param.name.as_deref()),
            (Some("elections"), Some("op-leader"))
        );
        assert_eq!(fence.lease.metadata.namespace.as_deref(), Some("elections"));
    }

    #[test]
    fn fences_what_the_operator_writes_and_never_leases_or_events() {
        let fenced = fenced_resources(&rules());
        let expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::from([
            ("".to_owned(), BTreeSet::from(["configmaps".to_owned()])),
            (
                "example.com".to_owned(),
                ["widgets", "widgets/finalizers", "widgets/status"]
                    .map(String::from)
                    .into(),
            ),
        ]);
        assert_eq!(fenced, expected);
    }

    #[test]
    fn policy_checks_the_service_account_and_the_lease_holder() {
        let fence = fence(&target(), &rules());
        let spec = fence.policy.spec.expect("spec");
        assert_eq!(
            fence.policy.metadata.name.as_deref(),
            Some("widget-operator-leader-fence")
        );
        assert_eq!(
            spec.match_conditions.expect("conditions")[0].expression,
            "request.userInfo.username == 'system:serviceaccount:ops:widget-operator'"
        );
        let validation = &spec.validations.expect("validations")[0];
        assert_eq!(
            validation.message.as_deref(),
            Some("this replica does not hold the lease ops-widget-operator")
        );
        assert!(validation.expression.contains("params.spec.holderIdentity"));
        let constraints = spec.match_constraints.expect("constraints");
        for rule in constraints.resource_rules.expect("rules") {
            assert_eq!(
                rule.operations.expect("operations"),
                ["CREATE", "UPDATE", "DELETE"]
            );
        }
        let excluded: Vec<_> = constraints
            .exclude_resource_rules
            .expect("exclusions")
            .into_iter()
            .flat_map(|r| r.resources.unwrap_or_default())
            .collect();
        assert_eq!(excluded, ["leases", "events", "events"]);
        let param = spec.param_kind.expect("param kind");
        assert_eq!(param.kind.as_deref(), Some("Lease"));

        assert_eq!(
            (
                fence.lease.metadata.name.as_deref(),
                fence.lease.metadata.namespace.as_deref()
            ),
            (Some("ops-widget-operator"), Some("ops"))
        );
        assert_eq!(fence.lease.spec, Some(LeaseSpec::default()), "no holder");

        let binding = fence.binding.spec;
        assert_eq!(binding.policy_name, "widget-operator-leader-fence");
        assert_eq!(binding.validation_actions, ["Deny"]);
        let param_ref = binding.param_ref.expect("param ref");
        assert_eq!(
            (
                param_ref.name.as_deref(),
                param_ref.namespace.as_deref(),
                param_ref.parameter_not_found_action.as_deref()
            ),
            (Some("ops-widget-operator"), Some("ops"), Some("Deny"))
        );
    }
}
