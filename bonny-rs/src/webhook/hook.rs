//! The seam between the server and the declarations: a hook turns a request body into a
//! response body, and knows where it is served and what it admits.

use kube::core::{Status, admission::AdmissionResponse};
use serde::Deserialize;

/// Which kind of webhook a hook is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HookKind {
    /// A `ValidatingWebhookConfiguration` entry.
    Validating,
    /// A `MutatingWebhookConfiguration` entry.
    Mutating,
    /// A CRD's `conversion: Webhook`.
    Conversion,
}

impl HookKind {
    /// The author's role, as messages name it.
    pub(crate) fn role(self) -> &'static str {
        match self {
            Self::Validating => "validator",
            Self::Mutating => "defaulter",
            Self::Conversion => "conversion",
        }
    }
}

/// Where a hook is served and what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) kind: HookKind,
    /// The webhook's name in its configuration (a DNS subdomain of at least three labels).
    pub(crate) name: String,
    /// The URL path on the webhook server.
    pub(crate) path: String,
    pub(crate) group: String,
    /// The version the hook admits (the hub, for a conversion).
    pub(crate) version: String,
    pub(crate) plural: String,
    /// The operations admitted (empty for a conversion).
    pub(crate) operations: Vec<&'static str>,
}

impl Route {
    pub(crate) fn new(
        kind: HookKind,
        group: &str,
        version: &str,
        plural: &str,
        operations: Vec<&'static str>,
    ) -> Self {
        let (prefix, path) = match kind {
            HookKind::Validating => ("validate", format!("/validate/{group}/{version}/{plural}")),
            HookKind::Mutating => ("default", format!("/mutate/{group}/{version}/{plural}")),
            HookKind::Conversion => ("convert", format!("/convert/{group}/{plural}")),
        };
        // A core-group kind has no group: keep the name a three-label subdomain anyway.
        let domain = if group.is_empty() {
            "core.bonny.dev"
        } else {
            group
        };
        Self {
            kind,
            name: format!("{prefix}.{plural}.{domain}"),
            path,
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            operations,
        }
    }

    /// The CRD this route's resource is defined by.
    pub(crate) fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

/// A declared webhook, as the server calls it. `handle` runs the author's code and may panic;
/// the server catches that and answers with [`Hook::failure`].
pub(crate) trait Hook: Send + Sync + 'static {
    fn route(&self) -> &Route;
    /// The response body for a request body; always a well-formed review.
    fn handle(&self, body: &[u8]) -> Vec<u8>;
    /// A well-formed failure review for this request (a panic, a timeout): `code` and
    /// `message` reach the client.
    fn failure(&self, body: &[u8], code: u16, message: &str) -> Vec<u8>;
}

/// Just the request's `uid`, read from a body that may not decode otherwise.
#[derive(Deserialize)]
struct UidOnly {
    request: Option<UidRequest>,
}

#[derive(Deserialize)]
struct UidRequest {
    #[serde(default)]
    uid: String,
}

pub(crate) fn request_uid(body: &[u8]) -> String {
    serde_json::from_slice::<UidOnly>(body)
        .ok()
        .and_then(|review| review.request)
        .map(|request| request.uid)
        .unwrap_or_default()
}

/// An admission review refusing the request with this code and message.
pub(crate) fn admission_failure(uid: String, code: u16, message: &str) -> Vec<u8> {
    let mut response = AdmissionResponse::invalid(message);
    response.uid = uid;
    response.result = Status::failure(message, reason(code)).with_code(code);
    serialize(&response.into_review())
}

pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        403 => "Forbidden",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// Serialize a review; our own types always serialize, so a failure is reported in-band.
pub(crate) fn serialize(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|err| {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"","allowed":false,"status":{{"message":"cannot serialize the response: {}","code":500}}}}}}"#,
            err.to_string().replace('"', "'")
        )
        .into_bytes()
    })
}
