//! The API server's audit log: the policy the environment runs with, and the parsed records
//! tests read back as a witness of who wrote what, when.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use super::Error;

/// Every request at `Metadata` level (who, what, result; no bodies), one record per request:
/// only the stage after the response was sent is kept.
pub(crate) const POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
";

/// The `extra` key under which a pod-bound service account token names its pod.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// The authenticated user of an audited request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AuditUser {
    /// User name, e.g. `admin` or `system:serviceaccount:<namespace>:<name>`.
    #[serde(default)]
    pub username: String,
    /// Groups, e.g. `system:authenticated`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes, e.g. [`POD_NAME_EXTRA`] for a token bound to a pod.
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One request as the API server's audit log recorded it once the response was complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Unique per request.
    pub audit_id: String,
    /// Who sent it.
    pub user: AuditUser,
    /// The Kubernetes verb, lower case: `get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`.
    pub verb: String,
    /// Path and query.
    pub request_uri: String,
    /// API group of the object; empty for the core group and non-resource URLs.
    pub api_group: String,
    /// Plural resource; empty for non-resource URLs.
    pub resource: String,
    /// Subresource (`status`, `token`); empty for the resource itself.
    pub subresource: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name; empty for a list or watch of a collection.
    pub name: String,
    /// The HTTP status code of the response.
    pub code: Option<u16>,
    /// The failure message of a refused request (e.g. the admission policy's message).
    pub message: Option<String>,
    /// Annotations the API server added (authorization decision, admission policy verdicts).
    pub annotations: BTreeMap<String, String>,
    /// When the API server received the request.
    pub request_received: Timestamp,
    /// When the response was complete.
    pub completed: Timestamp,
}

impl AuditRecord {
    /// The pod the client's token is bound to, if any.
    pub fn pod_name(&self) -> Option<&str> {
        self.user
            .extra
            .get(POD_NAME_EXTRA)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Whether the verb can change state (create, update, patch, delete, deletecollection).
    pub fn is_write(&self) -> bool {
        !matches!(self.verb.as_str(), "get" | "list" | "watch")
    }

    /// Whether the API server answered with a 2xx code.
    pub fn succeeded(&self) -> bool {
        self.code.is_some_and(|code| (200..300).contains(&code))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    #[serde(default, rename = "auditID")]
    audit_id: String,
    stage: String,
    #[serde(default)]
    user: AuditUser,
    #[serde(default)]
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    object_ref: RawObjectRef,
    response_status: Option<RawStatus>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    request_received_timestamp: Timestamp,
    stage_timestamp: Timestamp,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObjectRef {
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RawStatus {
    code: Option<u16>,
    message: Option<String>,
}

/// Parses the JSON lines of an audit log, keeping `ResponseComplete` records. A last line
/// without its newline is one the API server is still writing and is left for the next read.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Vec<AuditRecord>, Error> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut records = Vec::new();
    for (index, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: RawEvent = serde_json::from_str(line).map_err(|e| Error::AuditLog {
            path: path.to_owned(),
            line: index + 1,
            reason: e.to_string(),
        })?;
        if event.stage != "ResponseComplete" {
            continue;
        }
        let status = event.response_status;
        records.push(AuditRecord {
            audit_id: event.audit_id,
            user: event.user,
            verb: event.verb,
            request_uri: event.request_uri,
            api_group: event.object_ref.api_group,
            resource: event.object_ref.resource,
            subresource: event.object_ref.subresource,
            namespace: event.object_ref.namespace,
            name: event.object_ref.name,
            code: status.as_ref().and_then(|s| s.code),
            message: status.and_then(|s| s.message),
            annotations: event.annotations,
            request_received: event.request_received_timestamp,
            completed: event.stage_timestamp,
        });
    }
    Ok(records)
}

/// Reads and parses the audit log at `path`; a log not written yet has no records.
pub(crate) fn read(path: &Path) -> Result<Vec<AuditRecord>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(
            format!("read the audit log {}", path.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/configmaps?fieldManager=x","verb":"create","user":{"username":"system:serviceaccount:ns:op","uid":"u","groups":["system:serviceaccounts","system:serviceaccounts:ns","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=1"],"authentication.kubernetes.io/pod-name":["op-0"],"authentication.kubernetes.io/pod-uid":["p"]}},"sourceIPs":["127.0.0.1"],"userAgent":"test","objectRef":{"resource":"configmaps","namespace":"ns","name":"c","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"2026-12-01T20:46:05.123456Z","stageTimestamp":"2026-12-01T20:46:05.130001Z","annotations":{"authorization.k8s.io/decision":"allow"}}"#,
        "\n",
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"Panic","requestURI":"/x","verb":"get","user":{"username":"admin"},"requestReceivedTimestamp":"2026-12-01T20:46:05.123456Z","stageTimestamp":"2026-12-01T20:46:05.130001Z"}"#,
        "\n",
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseComplete","requestURI":"/apis/example.com/v1/namespaces/ns/widgets/w/status","verb":"patch","user":{"username":"admin","groups":["system:masters"]},"objectRef":{"resource":"widgets","namespace":"ns","name":"w","apiGroup":"example.com","apiVersion":"v1","subresource":"status"},"responseStatus":{"metadata":{},"status":"Failure","message":"this replica does not hold the lease l","reason":"Forbidden","code":403},"requestReceivedTimestamp":"2026-12-01T20:46:06Z","stageTimestamp":"2026-12-01T20:46:06.5Z"}"#,
        "\n",
        r#"{"kind":"Event","auditID":"a4","stage":"ResponseComp"#,
    );

    #[test]
    fn parses_complete_records_only() {
        let records = parse(LOG, Path::new("audit.log")).expect("parses");
        let ids: Vec<&str> = records.iter().map(|r| r.audit_id.as_str()).collect();
        assert_eq!(ids, ["a1", "a3"]);

        let create = &records[0];
        assert_eq!(create.user.username, "system:serviceaccount:ns:op");
        assert_eq!(create.user.groups.len(), 3);
        assert_eq!(create.pod_name(), Some("op-0"));
        assert_eq!(
            (
                create.verb.as_str(),
                create.resource.as_str(),
                create.name.as_str()
            ),
            ("create", "configmaps", "c")
        );
        assert_eq!(
            (create.namespace.as_str(), create.api_group.as_str()),
            ("ns", "")
        );
        assert_eq!(create.code, Some(201));
        assert!(create.is_write() && create.succeeded());
        assert_eq!(
            create
                .completed
                .duration_since(create.request_received)
                .as_micros(),
            6545
        );
        assert_eq!(create.annotations["authorization.k8s.io/decision"], "allow");

        let refused = &records[1];
        assert_eq!(refused.pod_name(), None);
        assert_eq!(
            (refused.api_group.as_str(), refused.subresource.as_str()),
            ("example.com", "status")
        );
        assert_eq!(refused.code, Some(403));
        assert!(!refused.succeeded());
        assert_eq!(
            refused.message.as_deref(),
            Some("this replica does not hold the lease l")
        );
    }

    #[test]
    fn a_malformed_line_is_named() {
        let text = "{\"stage\":\"ResponseComplete\"}\n";
        match parse(text, Path::new("audit.log")) {
            Err(Error::AuditLog { line: 1, .. }) => {}
            other => panic!("expected an AuditLog error, got {other:?}"),
        }
    }
}
