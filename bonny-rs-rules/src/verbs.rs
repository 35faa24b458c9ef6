//! The RBAC verbs the Kubernetes authorizer understands.

/// Every verb the Kubernetes RBAC authorizer understands, `*` (all verbs) last.
///
/// The built-in API verbs first, then the special ones some resources check (`bind` and
/// `escalate` on roles, `impersonate` on users, `use` on policies, `approve` and `sign` on
/// certificate signing requests).
pub const KNOWN_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "bind",
    "escalate",
    "impersonate",
    "use",
    "approve",
    "sign",
    "*",
];

/// Whether RBAC knows `verb` (exactly: verbs are lowercase).
///
/// ```
/// assert!(bonny_rules::verbs::is_known("list"));
/// assert!(!bonny_rules::verbs::is_known("List"));
/// ```
pub fn is_known(verb: &str) -> bool {
    KNOWN_VERBS.contains(&verb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_lowercase_and_unique() {
        for (i, verb) in KNOWN_VERBS.iter().enumerate() {
            assert!(is_known(verb));
            assert_eq!(verb.to_lowercase(), *verb);
            assert!(!KNOWN_VERBS[i + 1..].contains(verb), "{verb} twice");
        }
        assert!(!is_known("lsit") && !is_known("") && !is_known("GET"));
    }
}
