//! Tests of the whole parser; the nested attributes have their own next to their code.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

use super::{ControllerAttrs, MISSING_RESOURCE, backoff::BackoffAttr, keys::KEYS};

/// The attributes of `args`, which must parse.
pub(super) fn parse(args: TokenStream) -> ControllerAttrs {
    match ControllerAttrs::parse(args) {
        Ok(attrs) => attrs,
        Err(error) => panic!("unexpected error: {error}"),
    }
}

/// The messages of `args`, which must not parse.
pub(super) fn errors(args: TokenStream) -> Vec<String> {
    match ControllerAttrs::parse(args) {
        Ok(_) => panic!("expected errors"),
        Err(error) => error.into_iter().map(|error| error.to_string()).collect(),
    }
}

pub(super) fn text(tokens: impl ToTokens) -> String {
    tokens.to_token_stream().to_string()
}

#[test]
fn every_key() {
    let attrs = parse(quote! {
        resource = v1::Widget,
        name = "widgets",
        finalizer = "example.com/cleanup",
        owns = [ConfigMap, apps::Deployment],
        rbac(group = "", resources = ["secrets"], verbs = ["get", "list"]),
        rbac(verbs = ["*"], group = "apps", resources = ["deployments", "deployments/scale"]),
        requeue_after = "5m",
        backoff(base = "500ms", max = "2m"),
        concurrency = 4,
        steps = [SkipPaused, MyStep::new(3)],
        skip_observed_generation,
        versions = [v1alpha1::Widget, v1::Widget],
        storage = "v1",
        prune = true,
    });
    assert_eq!(text(&attrs.resource), "v1 :: Widget");
    assert_eq!(
        attrs.name.map(|name| name.value()).as_deref(),
        Some("widgets")
    );
    assert_eq!(
        attrs.finalizer.map(|name| name.value()).as_deref(),
        Some("example.com/cleanup")
    );
    assert_eq!(
        attrs.owns.iter().map(text).collect::<Vec<_>>(),
        ["ConfigMap", "apps :: Deployment"]
    );
    assert_eq!(attrs.rules.len(), 2);
    assert_eq!(attrs.requeue_after, Some(300_000));
    assert_eq!(
        attrs.backoff,
        Some(BackoffAttr {
            base: 500,
            max: 120_000
        })
    );
    assert_eq!(attrs.concurrency, Some(4));
    assert_eq!(
        attrs.steps.iter().map(text).collect::<Vec<_>>(),
        ["SkipPaused", "MyStep :: new (3)"]
    );
    assert!(attrs.skip_observed_generation);
    assert!(matches!(attrs.crd, super::CrdSource::Merged { .. }));
    assert_eq!(attrs.prune, Some(true));
}

#[test]
fn only_resource() {
    let attrs = parse(quote!(resource = Widget));
    assert!(attrs.name.is_none() && attrs.finalizer.is_none() && attrs.backoff.is_none());
    assert!(attrs.owns.is_empty() && attrs.rules.is_empty() && attrs.steps.is_empty());
    assert!(attrs.requeue_after.is_none() && attrs.concurrency.is_none());
    assert!(!attrs.skip_observed_generation);
    assert!(matches!(attrs.crd, super::CrdSource::Derived));
    assert!(attrs.prune.is_none());
}

#[test]
fn missing_resource() {
    assert_eq!(errors(quote!()), [MISSING_RESOURCE]);
    assert_eq!(
        errors(quote!(finalizer = "example.com/cleanup")),
        [MISSING_RESOURCE]
    );
}

#[test]
fn duplicate_and_unknown_keys() {
    let names = KEYS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        errors(quote! {
            resource = Widget,
            finalizer = "example.com/a",
            finalizer = "example.com/b",
            finalzer = "example.com/c",
            colour = blue,
            skip_observed_generation,
            skip_observed_generation,
        }),
        [
            "duplicate `finalizer`".to_owned(),
            format!("unknown key `finalzer` (did you mean `finalizer`?); expected one of: {names}"),
            format!("unknown key `colour`; expected one of: {names}"),
            "duplicate `skip_observed_generation`".to_owned(),
        ]
    );
}

#[test]
fn every_wrong_value_is_reported_at_once() {
    assert_eq!(
        errors(quote! {
            resource = Widget,
            finalizer = 3,
            requeue_after = 5,
            name = widgets,
            concurrency = "4",
            crd = "no",
            skip_observed_generation = true,
            prune = "yes",
        }),
        [
            "`finalizer` expects a string, e.g. `finalizer = \"example.com/cleanup\"`",
            "`requeue_after` expects a duration string (a whole number and a unit: ms, s, m or h), e.g. `requeue_after = \"5m\"`",
            "`name` expects a string, e.g. `name = \"widgets\"`",
            "`concurrency` expects a whole number, e.g. `concurrency = 4` (0 means no limit)",
            "`crd` expects `true` or `false`, e.g. `crd = false`",
            "`skip_observed_generation` is a flag: write it alone, without a value",
            "`prune` expects `true` or `false`, e.g. `prune = true`",
        ]
    );
}

#[test]
fn values_out_of_range() {
    assert_eq!(
        errors(quote!(resource = Widget, concurrency = 70000)),
        ["`concurrency` is at most 65535 (0 means no limit)"]
    );
    assert_eq!(
        errors(quote!(
            resource = Widget,
            requeue_after = "5 minutes",
            backoff(base = "0s", max = "1h")
        )),
        [
            "invalid duration \"5 minutes\": expected a whole number followed by a unit (ms, s, m or h), e.g. \"500ms\", \"30s\", \"5m\" or \"1h\"",
            "invalid duration \"0s\": the duration must be longer than zero",
        ]
    );
}

#[test]
fn unreadable_input_stops_after_reporting_earlier_mistakes() {
    assert_eq!(
        errors(quote!(
            finalizer = 3,
            resource = "Widget",
            name = "never read"
        )),
        [
            "`finalizer` expects a string, e.g. `finalizer = \"example.com/cleanup\"`",
            "`resource` expects a type, e.g. `resource = Widget`",
        ]
    );
    assert_eq!(
        errors(quote!(resource = Widget, owns = ConfigMap)),
        ["`owns` expects a list in brackets, e.g. `owns = [ConfigMap, Secret]`"]
    );
}
