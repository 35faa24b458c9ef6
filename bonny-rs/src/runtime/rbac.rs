//! The SDK's own RBAC needs: what the runtime reads and writes for a controller, written once.
//! Preflight lists what the watches will list; the manifests grant all of it.

use kube::api::ApiResource;

use crate::controller::Rule;

/// The kinds one controller touches, as the SDK sees them.
#[derive(Clone, Debug)]
pub(crate) struct Kinds {
    /// The reconciled resource.
    pub(crate) resource: ApiResource,
    /// Whether the reconciled resource is namespaced.
    pub(crate) namespaced: bool,
    /// Whether the controller puts a finalizer on its objects.
    pub(crate) finalizer: bool,
    /// The owned kinds, watched and server-side applied.
    pub(crate) owned: Vec<ApiResource>,
    /// The related kinds, only watched.
    pub(crate) watched: Vec<ApiResource>,
}

/// One kind (or subresource) the SDK acts on, with the verbs it uses.
#[derive(Clone, Debug)]
pub(crate) struct Need {
    pub(crate) resource: ApiResource,
    subresource: Option<&'static str>,
    verbs: &'static [&'static str],
}

impl Need {
    /// Whether the SDK lists (and watches) this kind: startup checks it can.
    pub(crate) fn is_listed(&self) -> bool {
        self.subresource.is_none() && self.verbs.contains(&"list")
    }

    fn rule(&self) -> Rule {
        let resource = match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource.plural),
            None => self.resource.plural.clone(),
        };
        Rule::new(&self.resource.group, [resource], self.verbs.iter().copied())
    }
}

/// What the SDK does for one controller: watch and patch the resource, write its status,
/// manage its finalizer, watch and apply the owned kinds, watch the related kinds. In the order
/// preflight checks them.
pub(crate) fn needs(kinds: &Kinds) -> Vec<Need> {
    let mut needs = vec![
        Need {
            resource: kinds.resource.clone(),
            subresource: None,
            verbs: &["get", "list", "watch", "patch", "update"],
        },
        Need {
            resource: kinds.resource.clone(),
            subresource: Some("status"),
            verbs: &["get", "patch", "update"],
        },
    ];
    if kinds.finalizer {
        needs.push(Need {
            resource: kinds.resource.clone(),
            subresource: Some("finalizers"),
            verbs: &["update"],
        });
    }
    for owned in &kinds.owned {
        needs.push(Need {
            resource: owned.clone(),
            subresource: None,
            verbs: &[
                "get", "list", "watch", "create", "patch", "update", "delete",
            ],
        });
    }
    for watched in &kinds.watched {
        needs.push(Need {
            resource: watched.clone(),
            subresource: None,
            verbs: &["get", "list", "watch"],
        });
    }
    needs
}

/// Every rule the SDK itself needs for these controllers: their kinds, events, and the Lease
/// when leader election is on. The author's own rules come on top.
pub(crate) fn sdk_rules<'a>(
    controllers: impl IntoIterator<Item = &'a Kinds>,
    leader_election: bool,
) -> Vec<Rule> {
    let mut rules: Vec<Rule> = controllers
        .into_iter()
        .flat_map(|kinds| needs(kinds).iter().map(Need::rule).collect::<Vec<_>>())
        .collect();
    rules.push(Rule::new("events.k8s.io", ["events"], ["create", "patch"]));
    if leader_election {
        rules.push(Rule::new(
            "coordination.k8s.io",
            ["leases"],
            ["get", "list", "watch", "create", "update", "patch"],
        ));
    }
    rules
}

/// `plural.group` of a kind (`plural` for the core group), as errors name it.
pub(crate) fn resource_name(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::ApiResource;

    use super::*;

    fn widget() -> ApiResource {
        ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        }
    }

    #[test]
    fn preflight_lists_what_the_rules_let_the_watches_list() {
        let kinds = Kinds {
            resource: widget(),
            namespaced: true,
            finalizer: true,
            owned: vec![ApiResource::erase::<ConfigMap>(&())],
            watched: vec![ApiResource::erase::<Secret>(&())],
        };
        let listed: Vec<String> = needs(&kinds)
            .iter()
            .filter(|need| need.is_listed())
            .map(|need| resource_name(&need.resource))
            .collect();
        assert_eq!(listed, ["widgets.example.com", "configmaps", "secrets"]);
        let rules = sdk_rules([&kinds], true);
        assert_eq!(rules.len(), 7, "{rules:#?}");
        assert_eq!(
            rules[4],
            Rule::new("", ["secrets"], ["get", "list", "watch"])
        );
        assert_eq!(
            rules[2],
            Rule::new("example.com", ["widgets/finalizers"], ["update"])
        );
        assert!(rules.iter().any(|rule| rule.resources == ["leases"]));
        assert!(
            !sdk_rules([&kinds], false)
                .iter()
                .any(|rule| rule.resources == ["leases"])
        );
    }
}
