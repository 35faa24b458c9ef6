//! RBAC rules: what a controller declares it needs, and the ClusterRole built from them.

use std::collections::BTreeSet;

pub use bonny_rules::verbs::KNOWN_VERBS;

/// One RBAC policy rule: these verbs on these resources of these API groups.
///
/// ```
/// use bonny::manifest::Rule;
/// let rule = Rule::new("apps", ["deployments"], ["get", "list", "watch"]);
/// assert_eq!(rule.api_groups, ["apps"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// API groups; `""` is the core group.
    pub api_groups: Vec<String>,
    /// Resource plurals, optionally with a subresource (`widgets/status`).
    pub resources: Vec<String>,
    /// Verbs, from [`KNOWN_VERBS`].
    pub verbs: Vec<String>,
}

impl Rule {
    /// A rule for one API group.
    pub fn new<R, V>(group: &str, resources: R, verbs: V) -> Self
    where
        R: IntoIterator,
        R::Item: Into<String>,
        V: IntoIterator,
        V::Item: Into<String>,
    {
        Self {
            api_groups: vec![group.to_owned()],
            resources: resources.into_iter().map(Into::into).collect(),
            verbs: verbs.into_iter().map(Into::into).collect(),
        }
    }

    /// Verbs of this rule that RBAC does not know, so a typo is caught before deployment.
    pub fn unknown_verbs(&self) -> BTreeSet<&str> {
        self.verbs
            .iter()
            .map(String::as_str)
            .filter(|verb| !KNOWN_VERBS.contains(verb))
            .collect()
    }
}

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
