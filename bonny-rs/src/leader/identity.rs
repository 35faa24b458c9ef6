//! Whether a replica's identity is the pod its credentials are bound to.
//!
//! The leader fence (see `bonny::manifest::Fence`) admits a write by the operator's service
//! account only when the caller's token names, as its pod, the holder of the Lease. A replica
//! whose identity is not that pod name holds the Lease in vain: every write it makes is
//! refused. The API server says who a client is (a `SelfSubjectReview`, which every
//! authenticated user may create), so the operator can tell at startup.

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, UserInfo};
use kube::{Api, Client, api::PostParams};

/// The key of a bound token's pod name in the user's extra fields.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// The prefix of service-account usernames, the only callers the fence applies to.
const SERVICE_ACCOUNT: &str = "system:serviceaccount:";

/// What the API server says of a replica's credentials, against its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityCheck {
    /// The credentials are bound to the pod the identity names: the fence admits this
    /// replica's writes while it holds the Lease.
    Bound,
    /// The credentials are bound to another pod: a fence refuses every write.
    OtherPod {
        /// The pod the token is bound to.
        pod: String,
    },
    /// A service account's credentials bound to no pod (a legacy secret token): a fence
    /// refuses every write.
    NoPod {
        /// The service account's username.
        username: String,
    },
    /// Not a service account (a person's or an admin's credentials): no fence applies.
    NotFenced,
}

impl IdentityCheck {
    /// What is wrong and how to fix it, when a fence would refuse this replica's writes.
    pub fn problem(&self, identity: &str) -> Option<String> {
        match self {
            Self::Bound | Self::NotFenced => None,
            Self::OtherPod { pod } => Some(format!(
                "the leader identity {identity:?} is not the pod {pod:?} this replica's token is \
                 bound to, so a leader fence refuses every write it makes; leave the identity \
                 unset (it defaults to BONNY_POD_NAME, the pod name) or generate the manifests \
                 without the fence (manifest::Options::fence(false))"
            )),
            Self::NoPod { username } => Some(format!(
                "the service account {username:?} authenticates with a token bound to no pod, so \
                 a leader fence refuses every write this replica makes; use the pod's projected \
                 token (the default in a pod) or generate the manifests without the fence \
                 (manifest::Options::fence(false))"
            )),
        }
    }
}

/// Asks the API server who `client` is and compares its pod with `identity`.
///
/// # Errors
/// When the review cannot be created (an API server before Kubernetes 1.28, or no access).
pub async fn check_identity(client: &Client, identity: &str) -> Result<IdentityCheck, kube::Error> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review
        .status
        .and_then(|status| status.user_info)
        .unwrap_or_default();
    Ok(verdict(identity, &user))
}

/// The check of `identity` against what the API server says of the user.
fn verdict(identity: &str, user: &UserInfo) -> IdentityCheck {
    let username = user.username.as_deref().unwrap_or_default();
    if !username.starts_with(SERVICE_ACCOUNT) {
        return IdentityCheck::NotFenced;
    }
    let pods = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .map(Vec::as_slice)
        .unwrap_or_default();
    match pods {
        [] => IdentityCheck::NoPod {
            username: username.to_owned(),
        },
        pods if pods.iter().any(|pod| pod == identity) => IdentityCheck::Bound,
        [pod, ..] => IdentityCheck::OtherPod { pod: pod.clone() },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn user(username: &str, pod: Option<&str>) -> UserInfo {
        UserInfo {
            username: Some(username.to_owned()),
            extra: pod
                .map(|pod| BTreeMap::from([(POD_NAME_EXTRA.to_owned(), vec![pod.to_owned()])])),
            ..UserInfo::default()
        }
    }

    #[test]
    fn a_token_bound_to_the_identitys_pod_passes() {
        let user = user("system:serviceaccount:ops:op", Some("op-0"));
        assert_eq!(verdict("op-0", &user), IdentityCheck::Bound);
        assert_eq!(verdict("op-0", &user).problem("op-0"), None);
    }

    #[test]
    fn a_token_bound_to_another_pod_names_both() {
        let check = verdict(
            "custom",
            &user("system:serviceaccount:ops:op", Some("op-0")),
        );
        assert_eq!(check, IdentityCheck::OtherPod { pod: "op-0".into() });
        let problem = check.problem("custom").unwrap();
        assert!(
            problem.contains("\"custom\"") && problem.contains("\"op-0\""),
            "{problem}"
        );
        assert!(problem.contains("fence(false)"), "{problem}");
    }

    #[test]
    fn a_service_account_token_without_a_pod_is_named() {
        let check = verdict("op-0", &user("system:serviceaccount:ops:op", None));
        assert!(matches!(check, IdentityCheck::NoPod { .. }));
        assert!(check.problem("op-0").unwrap().contains("bound to no pod"));
    }

    #[test]
    fn people_and_admins_are_not_fenced() {
        assert_eq!(
            verdict("me", &user("kubernetes-admin", None)),
            IdentityCheck::NotFenced
        );
        assert_eq!(
            verdict("me", &UserInfo::default()),
            IdentityCheck::NotFenced
        );
    }
}
