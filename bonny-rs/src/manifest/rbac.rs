//! RBAC for manifests: the declared rules merged into the ClusterRole's policy rules.

use std::collections::BTreeSet;

pub use crate::controller::{KNOWN_VERBS, Rule};

/// Merge rules into the fewest, sorted rules: verbs are united per group and resource, and
/// resources of one group with the same verbs share a rule. Deterministic for golden tests.
///
/// ```
/// use bonny::manifest::{Rule, merge_rules};
/// let merged = merge_rules([
///     Rule::new("", ["configmaps"], ["get", "list"]),
///     Rule::new("", ["configmaps"], ["watch", "get"]),
///     Rule::new("", ["secrets"], ["get", "list", "watch"]),
/// ]);
/// assert_eq!(merged, vec![Rule::new("", ["configmaps", "secrets"], ["get", "list", "watch"])]);
/// ```
pub fn merge_rules(rules: impl IntoIterator<Item = Rule>) -> Vec<Rule> {
    use std::collections::BTreeMap;
    let mut verbs_by_resource: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                verbs_by_resource
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    let mut resources_by_verbs: BTreeMap<(String, BTreeSet<String>), Vec<String>> = BTreeMap::new();
    for ((group, resource), verbs) in verbs_by_resource {
        let verbs = if verbs.contains("*") {
            BTreeSet::from(["*".to_owned()])
        } else {
            verbs
        };
        resources_by_verbs
            .entry((group, verbs))
            .or_default()
            .push(resource);
    }
    resources_by_verbs
        .into_iter()
        .map(|((group, verbs), resources)| Rule {
            api_groups: vec![group],
            resources,
            verbs: verbs.into_iter().collect(),
        })
        .collect()
}

impl From<&Rule> for k8s_openapi::api::rbac::v1::PolicyRule {
    fn from(rule: &Rule) -> Self {
        Self {
            api_groups: Some(rule.api_groups.clone()),
            resources: Some(rule.resources.clone()),
            verbs: rule.verbs.clone(),
            ..Self::default()
        }
    }
}
