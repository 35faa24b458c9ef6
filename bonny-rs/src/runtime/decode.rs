//! Decoding watched objects one by one into the author's type, so that one object stored in a
//! shape the type does not accept (after a CRD schema change, or through a looser served
//! version) is skipped and named instead of failing the whole list. Pure.

use std::fmt;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use crate::controller::Object;

/// An object that does not decode into the controller's type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DecodeError {
    /// The object, for the event about it.
    pub(crate) object: Box<ObjectReference>,
    /// Where in the object decoding failed (`spec.size`); `.` for the object itself.
    pub(crate) path: String,
    /// What the decoder expected and found, without the object's content.
    pub(crate) message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.object.kind.as_deref().unwrap_or("object");
        let name = self.object.name.as_deref().unwrap_or("<unnamed>");
        match self.object.namespace.as_deref() {
            Some(namespace) => write!(f, "{kind} {namespace}/{name}")?,
            None => write!(f, "{kind} {name}")?,
        }
        write!(
            f,
            " does not match the controller's type at {}: {}; it is skipped until it is fixed",
            self.path, self.message
        )
    }
}

/// Longest decoder message kept: a message quoting a huge value must not flood logs or events.
const MAX_MESSAGE: usize = 300;

/// Decodes `object` (of kind `resource`) into `K`, naming the field that does not fit. The
/// object's content is moved, not copied.
pub(crate) fn decode<K: Object>(
    object: DynamicObject,
    resource: &ApiResource,
) -> Result<K, DecodeError> {
    let object_ref = reference(&object, resource);
    let fail = |path: String, message: String| DecodeError {
        object: Box::new(object_ref.clone()),
        path,
        message: shorten(message),
    };
    let DynamicObject { metadata, data, .. } = object;
    let metadata =
        serde_json::to_value(metadata).map_err(|err| fail(".".into(), err.to_string()))?;
    let mut value = match data {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => {
            return Err(fail(
                ".".into(),
                format!("expected an object, found {other}"),
            ));
        }
    };
    value.insert("metadata".into(), metadata);
    // Listed items may come without their type; the author's type may require it.
    value.insert(
        "apiVersion".into(),
        Value::String(resource.api_version.clone()),
    );
    value.insert("kind".into(), Value::String(resource.kind.clone()));
    serde_path_to_error::deserialize(Value::Object(value)).map_err(|err| {
        let path = err.path().to_string();
        fail(path, err.into_inner().to_string())
    })
}

/// A reference to `object` for events.
pub(crate) fn reference(object: &DynamicObject, resource: &ApiResource) -> ObjectReference {
    ObjectReference {
        api_version: Some(resource.api_version.clone()),
        kind: Some(resource.kind.clone()),
        name: object.metadata.name.clone(),
        namespace: object.metadata.namespace.clone(),
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn shorten(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_object_of_the_right_shape_decodes_even_without_its_type() {
        let resource = ApiResource::erase::<ConfigMap>(&());
        let object =
            dynamic(json!({"metadata": {"name": "a", "namespace": "n"}, "data": {"k": "v"}}));
        let decoded: ConfigMap = decode(object, &resource).unwrap();
        assert_eq!(decoded.data.unwrap()["k"], "v");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_with_its_path() {
        let resource = ApiResource::erase::<ConfigMap>(&());
        let object = dynamic(json!({
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": "5"},
            "data": {"k": 3},
        }));
        let err = decode::<ConfigMap>(object, &resource).unwrap_err();
        assert_eq!(err.path, "data.k");
        assert_eq!(err.object.name.as_deref(), Some("a"));
        assert_eq!(err.object.resource_version.as_deref(), Some("5"));
        let text = err.to_string();
        assert!(text.starts_with("ConfigMap n/a does not match"), "{text}");
        assert!(
            text.contains("data.k") && text.contains("expected"),
            "{text}"
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1000);
        assert!(shorten(long).chars().count() <= MAX_MESSAGE + 1);
    }
}
