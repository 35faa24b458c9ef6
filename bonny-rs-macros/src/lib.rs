//! The `#[controller(...)]` attribute of [bonny-rs](https://docs.rs/bonny-rs), used as
//! `bonny::controller`.
//!
//! Put it on a struct (unit or with fields). The struct is kept as written, and an
//! implementation of `bonny::controller::Controller` is added whose `config()` chains the
//! `bonny::controller::Config` builder calls the keys ask for. Everything the attribute does can
//! be written by hand with that builder; the attribute checks the values at compile time.
//!
//! ```ignore
//! use bonny::prelude::*;
//! use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
//!
//! #[bonny::controller(
//!     resource = Widget,
//!     finalizer = "example.com/cleanup",
//!     owns = [ConfigMap, Deployment],
//!     rbac(group = "", resources = ["secrets"], verbs = ["get", "list", "watch"]),
//!     requeue_after = "5m",
//!     backoff(base = "500ms", max = "2m"),
//!     concurrency = 4,
//!     steps = [SkipPaused],
//! )]
//! pub struct WidgetController;
//! ```
//!
//! expands (besides the struct) to
//!
//! ```ignore
//! impl ::bonny::controller::Controller for WidgetController {
//!     type Resource = Widget;
//!     fn config(&self) -> ::bonny::controller::Config<Widget> {
//!         ::bonny::controller::Config::new()
//!             .finalizer("example.com/cleanup")
//!             .owns::<ConfigMap>()
//!             .owns::<Deployment>()
//!             .rule(::bonny::manifest::Rule::new("", ["secrets"], ["get", "list", "watch"]))
//!             .requeue_after(::core::time::Duration::from_millis(300000))
//!             .backoff(::bonny::controller::Backoff::new(
//!                 ::core::time::Duration::from_millis(500),
//!                 ::core::time::Duration::from_millis(120000),
//!             ))
//!             .concurrency(4)
//!             .step(SkipPaused)
//!     }
//!     fn crd(&self) -> Result<Option<CustomResourceDefinition>, MergeError> {
//!         Ok(Some(<Widget as ::bonny::kube::CustomResourceExt>::crd()))
//!     }
//! }
//! ```
//!
//! The runnable examples are in the documentation of `bonny::controller`.
//!
//! # Keys
//!
//! Keys come in any order; each appears at most once, except `rbac`.
//!
//! | Key | Value | Emits |
//! |-----|-------|-------|
//! | `resource` (required) | a type: `resource = Widget` | `type Resource = Widget;` |
//! | `name` | a string: `name = "widgets"` | `.name("widgets")` |
//! | `finalizer` | a domain-qualified name: `finalizer = "example.com/cleanup"` | `.finalizer("example.com/cleanup")` |
//! | `owns` | types: `owns = [ConfigMap, Secret]` | `.owns::<ConfigMap>().owns::<Secret>()` |
//! | `rbac` (repeatable) | `rbac(group = "apps", resources = ["deployments"], verbs = ["get", "list"])`; `group = ""` is the core group | `.rule(Rule::new("apps", ["deployments"], ["get", "list"]))` |
//! | `requeue_after` | a duration: `requeue_after = "5m"` | `.requeue_after(Duration::from_millis(300000))` |
//! | `backoff` | `backoff(base = "1s", max = "5m")`, both required, `base <= max` | `.backoff(Backoff::new(..))` |
//! | `concurrency` | a whole number up to 65535 (0: no limit): `concurrency = 4` | `.concurrency(4)` |
//! | `steps` | expressions: `steps = [SkipPaused, MyStep::new(3)]` | `.step(SkipPaused).step(MyStep::new(3))` |
//! | `skip_observed_generation` | a flag, no value | `.skip_observed_generation()` |
//! | `crd` | `crd = false` for built-in kinds and resources defined elsewhere | `crd()` returns `Ok(None)` |
//! | `versions` | one type per version: `versions = [v1alpha1::Widget, v1::Widget]` | `crd()` merges their CRDs |
//! | `storage` | with `versions`, required there: `storage = "v1"` | the version the API server stores |
//! | `watches` | related kinds, each with `field = spec.source` (a `String`/`Option<String>` field of the resource naming the object in its namespace) or `map = my_fn` (`fn(&Secret) -> impl IntoIterator<Item = ObjectRef<Widget>>`), and optionally `filters = [..]`: `watches = [Secret(field = spec.source)]` | `.watches(Mapper::<Widget, Secret>::field("spec.source", ..))` |
//! | `filters` | filters on the resource's events: `filters = [generation_changed, labels_changed, annotations_changed, changed(my_fn)]` | `.filter(Filter::generation_changed())`.. |
//! | `prune` | `true` or `false`: `prune = true` | `.prune(true)`: descendants an earlier reconcile registered and this one did not are deleted (only those the SDK applied for the object) |
//! | `adopt` | owned types watched whole, not only the SDK's own (labelled) descendants: `adopt = [ConfigMap]` | `.adopt_existing::<ConfigMap>()` |
//! | `metadata` | owned or watched types cached as metadata only (each also in `owns`, `adopt` or `watches`): `metadata = [ConfigMap]` | `.owns_metadata::<ConfigMap>()` for an owned type, `Mapper::..(..).metadata_only()` for a watched one |
//!
//! Without `crd` or `versions`, `crd()` returns the resource's own CRD, so the resource must
//! derive `CustomResource`.
//!
//! Durations are a whole number and a unit, one of `ms`, `s`, `m` and `h`: `"500ms"`, `"30s"`,
//! `"5m"`, `"1h"`; zero is rejected. It is the grammar of `bonny_rules::duration`, which the
//! `BONNY_*` environment variables use too.
//!
//! # Checked at compile time
//!
//! - RBAC verbs are among those Kubernetes knows (`get`, `list`, `watch`, `create`, `update`,
//!   `patch`, `delete`, `deletecollection`, `bind`, `escalate`, `impersonate`, `use`,
//!   `approve`, `sign`, `*`: the list of `bonny_rules::verbs`, which the runtime checks too); a
//!   misspelt one gets a suggestion.
//! - The finalizer is a domain-qualified name; durations parse and are not zero.
//! - Unknown and repeated keys, values of the wrong kind, `versions` without `storage`.
//! - A `watches` field path exists on the resource and holds a name (`String` or
//!   `Option<String>`); a `map` function takes the related kind and yields references to the
//!   resource; a `changed(..)` filter compares two objects of its kind.
//!
//! Every mistake in one attribute is reported in the same compile, each at the token at fault.
//!
//! # Paths
//!
//! The generated code names the SDK as `::bonny`, so the crate must be a dependency under that
//! name (the default for `bonny-rs`).

mod attrs;
mod expand;
#[cfg(test)]
mod properties;
mod suggest;

use proc_macro::TokenStream;

/// Declare a controller: implements `bonny::controller::Controller` for the struct it is put on.
///
/// See the [crate documentation](crate) for the keys and what they expand to.
///
/// ```ignore
/// #[bonny::controller(resource = Widget, finalizer = "example.com/cleanup", owns = [ConfigMap])]
/// pub struct WidgetController;
/// ```
#[proc_macro_attribute]
pub fn controller(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::controller(args.into(), item.into()).into()
}
