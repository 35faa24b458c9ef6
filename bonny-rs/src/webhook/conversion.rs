//! Conversion between the versions of a multi-version CRD through the hub (storage) version,
//! with the author's `From` impls.

use std::sync::Arc;

use kube::core::{
    Status,
    conversion::{ConversionRequest, ConversionResponse, ConversionReview},
};
use serde_json::Value;

use super::{
    admission::Admitted,
    hook::{Hook, HookKind, Route, request_uid, serialize},
};

type ToHub<H> = Arc<dyn Fn(Value) -> Result<H, String> + Send + Sync>;
type FromHub<H> = Arc<dyn Fn(H) -> Result<Value, String> + Send + Sync>;

struct Spoke<H> {
    api_version: String,
    to_hub: ToHub<H>,
    from_hub: FromHub<H>,
}

/// How the versions of one custom resource convert: every version to and from the hub `H`
/// (the storage version), with `From` impls the author writes.
///
/// ```
/// # use bonny::webhook::Conversion;
/// # mod v1 {
/// # use kube::CustomResource;
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
/// #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
/// pub struct WidgetSpec { pub replicas: u32 }
/// # }
/// # mod v1beta1 {
/// # use kube::CustomResource;
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
/// #[kube(group = "example.com", version = "v1beta1", kind = "Widget", namespaced)]
/// pub struct WidgetSpec { pub size: String }
/// # }
/// impl From<v1beta1::Widget> for v1::Widget {
///     fn from(old: v1beta1::Widget) -> Self {
///         let replicas = old.spec.size.parse().unwrap_or(1);
///         Self { metadata: old.metadata, spec: v1::WidgetSpec { replicas } }
///     }
/// }
/// impl From<v1::Widget> for v1beta1::Widget {
///     fn from(new: v1::Widget) -> Self {
///         let size = new.spec.replicas.to_string();
///         Self { metadata: new.metadata, spec: v1beta1::WidgetSpec { size } }
///     }
/// }
/// let conversion = Conversion::<v1::Widget>::hub().spoke::<v1beta1::Widget>();
/// ```
#[must_use]
pub struct Conversion<H> {
    spokes: Vec<Spoke<H>>,
}

impl<H> std::fmt::Debug for Conversion<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversion")
            .field(
                "spokes",
                &self
                    .spokes
                    .iter()
                    .map(|s| s.api_version.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn decode<T: Admitted>(object: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(object).map_err(|err| {
        format!(
            "the object does not decode as {} {} at {}: {}",
            T::api_version(&()),
            T::kind(&()),
            err.path(),
            err.inner()
        )
    })
}

fn encode<T: Admitted>(object: &T) -> Result<Value, String> {
    let mut value = serde_json::to_value(object)
        .map_err(|err| format!("cannot serialize {}: {err}", T::api_version(&())))?;
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(T::api_version(&()).into()),
        );
        map.insert("kind".into(), Value::String(T::kind(&()).into()));
    }
    Ok(value)
}

impl<H: Admitted> Conversion<H> {
    /// Conversion through the hub `H`, the version the CRD stores.
    pub fn hub() -> Self {
        Self { spokes: Vec::new() }
    }

    /// Another served version `S`, converted to and from the hub by `From`.
    pub fn spoke<S>(mut self) -> Self
    where
        S: Admitted + From<H>,
        H: From<S>,
    {
        self.spokes.push(Spoke {
            api_version: S::api_version(&()).into_owned(),
            to_hub: Arc::new(|object| decode::<S>(object).map(H::from)),
            from_hub: Arc::new(|hub| encode(&S::from(hub))),
        });
        self
    }

    /// The `apiVersion`s this conversion knows, hub first.
    pub fn versions(&self) -> Vec<String> {
        std::iter::once(H::api_version(&()).into_owned())
            .chain(self.spokes.iter().map(|s| s.api_version.clone()))
            .collect()
    }

    /// Convert one object to `desired` (an `apiVersion`, e.g. `example.com/v1`), as the API
    /// server asks: through the hub, unless it already is in the desired version.
    ///
    /// # Errors
    /// When the object's or the desired version is not declared, or the object does not decode
    /// (the message names the field).
    pub fn convert(&self, object: Value, desired: &str) -> Result<Value, String> {
        let hub_version = H::api_version(&());
        let from = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or("the object has no apiVersion")?
            .to_owned();
        if from == desired {
            return Ok(object);
        }
        let spoke = |version: &str| {
            self.spokes
                .iter()
                .find(|s| s.api_version == version)
                .ok_or_else(|| {
                    format!(
                        "no conversion declared for {version}; declared are {}",
                        self.versions().join(", ")
                    )
                })
        };
        let hub: H = if from == hub_version {
            decode(object)?
        } else {
            (spoke(&from)?.to_hub)(object)?
        };
        if desired == hub_version {
            encode(&hub)
        } else {
            (spoke(desired)?.from_hub)(hub)
        }
    }
}

/// The conversion webhook of one CRD.
pub(crate) struct Converter<H: Admitted> {
    route: Route,
    conversion: Conversion<H>,
}

impl<H: Admitted> Converter<H> {
    pub(crate) fn new(conversion: Conversion<H>) -> Self {
        Self {
            route: Route::new(
                HookKind::Conversion,
                &H::group(&()),
                &H::version(&()),
                &H::plural(&()),
                Vec::new(),
            ),
            conversion,
        }
    }
}

fn failed(uid: String, message: &str) -> Vec<u8> {
    let mut response = ConversionResponse::invalid(Status::failure(message, "ConversionFailed"));
    response.uid = uid;
    serialize(&response.into_review())
}

impl<H: Admitted> Hook for Converter<H> {
    fn route(&self) -> &Route {
        &self.route
    }

    fn handle(&self, body: &[u8]) -> Vec<u8> {
        let review: ConversionReview = match serde_json::from_slice(body) {
            Ok(review) => review,
            Err(err) => {
                return failed(
                    request_uid(body),
                    &format!("the conversion review does not decode: {err}"),
                );
            }
        };
        let request = match ConversionRequest::from_review(review) {
            Ok(request) => request,
            Err(_) => return failed(String::new(), "the conversion review has no request"),
        };
        let desired = request.desired_api_version.clone();
        let objects = request.objects.clone();
        let response = ConversionResponse::for_request(request);
        let converted: Result<Vec<Value>, String> = objects
            .into_iter()
            .map(|object| self.conversion.convert(object, &desired))
            .collect();
        let response = match converted {
            Ok(objects) => response.success(objects),
            Err(message) => response.failure(Status::failure(&message, "ConversionFailed")),
        };
        serialize(&response.into_review())
    }

    fn failure(&self, body: &[u8], _code: u16, message: &str) -> Vec<u8> {
        failed(request_uid(body), message)
    }
}
