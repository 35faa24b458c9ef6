//! Which namespaces the controllers watch.

/// Which namespaces the controllers watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (needs a ClusterRole).
    #[default]
    All,
    /// Only these (a Role in each is enough).
    List(Vec<String>),
}

impl Namespaces {
    /// One entry per watch of a namespaced kind: `None` for all namespaces. A cluster-scoped
    /// kind is watched once, cluster-wide, whatever namespaces are listed.
    pub(crate) fn scopes(&self, namespaced: bool) -> Vec<Option<String>> {
        match self {
            Self::List(namespaces) if namespaced => namespaces.iter().cloned().map(Some).collect(),
            _ => vec![None],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Namespaces;

    #[test]
    fn cluster_scoped_kinds_are_watched_once() {
        let listed = Namespaces::List(vec!["a".into(), "b".into()]);
        assert_eq!(
            listed.scopes(true),
            [Some("a".to_owned()), Some("b".to_owned())]
        );
        assert_eq!(listed.scopes(false), [None]);
        assert_eq!(Namespaces::All.scopes(true), [None]);
    }
}
