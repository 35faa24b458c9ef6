//! RBAC rules: what a controller declares its own code needs.

use std::collections::BTreeSet;

pub use bonny_rules::verbs::KNOWN_VERBS;

/// One RBAC policy rule: these verbs on these resources of these API groups.
///
/// ```
/// use bonny::controller::Rule;
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
            .filter(|verb| !bonny_rules::verbs::is_known(verb))
            .collect()
    }
}
