//! Validating and defaulting hooks over the author's typed functions.

use std::{marker::PhantomData, sync::Arc};

use kube::{
    Resource,
    core::{
        Status,
        admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Verdict,
    hook::{Hook, HookKind, Route, admission_failure, request_uid, serialize},
};

/// What a typed hook needs of its resource.
pub trait Admitted:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Admitted for K where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

pub(crate) type ValidateFn<K> = Arc<dyn Fn(&AdmissionRequest<K>) -> Verdict + Send + Sync>;
pub(crate) type DefaultFn<K> = Arc<dyn Fn(&mut K) + Send + Sync>;

fn route_for<K: Admitted>(kind: HookKind, operations: Vec<&'static str>) -> Route {
    Route::new(
        kind,
        &K::group(&()),
        &K::version(&()),
        &K::plural(&()),
        operations,
    )
}

/// Decode a review of `K`, naming the field that does not fit.
fn decode<K: Admitted>(body: &[u8]) -> Result<AdmissionRequest<K>, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let review: AdmissionReview<K> = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        format!(
            "the admission review does not decode as {} at {}: {}",
            K::kind(&()),
            err.path(),
            err.inner()
        )
    })?;
    review
        .try_into()
        .map_err(|_| "the admission review has no request".to_owned())
}

/// Runs the author's validator on create, update and delete.
pub(crate) struct Validator<K: Admitted> {
    route: Route,
    validate: ValidateFn<K>,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Admitted> Validator<K> {
    pub(crate) fn new(validate: ValidateFn<K>) -> Self {
        Self {
            route: route_for::<K>(HookKind::Validating, vec!["CREATE", "UPDATE", "DELETE"]),
            validate,
            _kind: PhantomData,
        }
    }
}

/// The validator's answer to one request, as a response.
pub(crate) fn validate<K: Admitted>(
    request: &AdmissionRequest<K>,
    validate: &dyn Fn(&AdmissionRequest<K>) -> Verdict,
) -> AdmissionResponse {
    let verdict = validate(request);
    let mut response = AdmissionResponse::from(request);
    if let Some(message) = verdict.denial {
        response = response.deny(message);
        response.result = Status::failure(&response.result.message, "Forbidden").with_code(403);
    }
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    response
}

impl<K: Admitted> Hook for Validator<K> {
    fn route(&self) -> &Route {
        &self.route
    }

    fn handle(&self, body: &[u8]) -> Vec<u8> {
        match decode::<K>(body) {
            Ok(request) => serialize(&validate(&request, &*self.validate).into_review()),
            Err(message) => admission_failure(request_uid(body), 400, &message),
        }
    }

    fn failure(&self, body: &[u8], code: u16, message: &str) -> Vec<u8> {
        admission_failure(request_uid(body), code, message)
    }
}

/// Runs the author's defaulter on create and update and answers with the JSON patch.
pub(crate) struct Defaulter<K: Admitted> {
    route: Route,
    default: DefaultFn<K>,
}

impl<K: Admitted> Defaulter<K> {
    pub(crate) fn new(default: DefaultFn<K>) -> Self {
        Self {
            route: route_for::<K>(HookKind::Mutating, vec!["CREATE", "UPDATE"]),
            default,
        }
    }
}

/// The defaulter's change to the request's object, as a response with a JSON patch.
///
/// The patch is the difference between the typed object before and after the defaulter, so it
/// touches only what the defaulter changed (fields the type does not know are never removed).
pub(crate) fn default<K: Admitted>(
    request: &AdmissionRequest<K>,
    default: &dyn Fn(&mut K),
) -> Result<AdmissionResponse, String> {
    let response = AdmissionResponse::from(request);
    let Some(object) = request.object.as_ref() else {
        return Ok(response);
    };
    if request.operation == Operation::Delete {
        return Ok(response);
    }
    let encode = |object: &K| {
        serde_json::to_value(object)
            .map_err(|err| format!("cannot serialize the {}: {err}", K::kind(&())))
    };
    let before = encode(object)?;
    let mut changed = object.clone();
    default(&mut changed);
    let after = encode(&changed)?;
    let patch = json_patch::diff(&before, &after);
    if patch.0.is_empty() {
        return Ok(response);
    }
    response
        .with_patch(patch)
        .map_err(|err| format!("cannot serialize the patch: {err}"))
}

impl<K: Admitted> Hook for Defaulter<K> {
    fn route(&self) -> &Route {
        &self.route
    }

    fn handle(&self, body: &[u8]) -> Vec<u8> {
        let response = decode::<K>(body).and_then(|request| default(&request, &*self.default));
        match response {
            Ok(response) => serialize(&response.into_review()),
            Err(message) => admission_failure(request_uid(body), 400, &message),
        }
    }

    fn failure(&self, body: &[u8], code: u16, message: &str) -> Vec<u8> {
        admission_failure(request_uid(body), code, message)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    fn review(object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": object,
            }
        }))
        .unwrap()
    }

    fn response(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(body).unwrap()["response"].clone()
    }

    #[test]
    fn a_denial_carries_the_message_and_the_warnings() {
        let validator = Validator::<ConfigMap>::new(Arc::new(|_: &AdmissionRequest<ConfigMap>| {
            Verdict::deny("no thanks").warn("careful")
        }));
        let body =
            review(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}));
        let out = response(&validator.handle(&body));
        assert_eq!(out["uid"], "u-1");
        assert_eq!(out["allowed"], false);
        assert_eq!(out["status"]["message"], "no thanks");
        assert_eq!(out["status"]["code"], 403);
        assert_eq!(out["warnings"], json!(["careful"]));
    }

    #[test]
    fn the_defaulter_patches_only_what_it_changed() {
        let defaulter = Defaulter::<ConfigMap>::new(Arc::new(|cm: &mut ConfigMap| {
            cm.data
                .get_or_insert_with(Default::default)
                .entry("color".into())
                .or_insert_with(|| "grey".into());
        }));
        let body = review(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a"}, "data": {"size": "3"}
        }));
        let out = response(&defaulter.handle(&body));
        assert_eq!(out["allowed"], true);
        assert_eq!(out["patchType"], "JSONPatch");
        // kube serializes the patch bytes as a JSON array of numbers, which the API server
        // decodes into its byte slice as well as base64.
        let patch: Vec<u8> = serde_json::from_value(out["patch"].clone()).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&patch).unwrap(),
            json!([{"op": "add", "path": "/data/color", "value": "grey"}])
        );
    }

    #[test]
    fn an_object_that_does_not_decode_is_refused_naming_the_field() {
        let validator = Validator::<ConfigMap>::new(Arc::new(|_: &AdmissionRequest<ConfigMap>| {
            Verdict::allow()
        }));
        let body = review(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"size": 3}}));
        let out = response(&validator.handle(&body));
        assert_eq!(out["allowed"], false);
        assert_eq!(out["uid"], "u-1");
        let message = out["status"]["message"].as_str().unwrap();
        assert!(message.contains("request.object.data.size"), "{message}");
    }
}
