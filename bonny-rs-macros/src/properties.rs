//! Properties of the whole macro over generated input: any token stream gets errors or an
//! expansion, never a panic (a panic in a proc-macro is an ICE-like "proc macro panicked" with
//! no hint), and the expansion is always valid Rust.
//!
//! CI runs proptest's default of 256 cases per property; by hand, run longer with
//! `PROPTEST_CASES=100000 cargo test --release -p bonny-rs-macros properties`.

use bonny_rules::duration::parse_millis;
use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use proptest::prelude::*;
use quote::quote;

use crate::{attrs::ControllerAttrs, expand};

/// Words the parser reacts to, and a few it must reject.
const WORDS: &[&str] = &[
    "resource",
    "name",
    "finalizer",
    "owns",
    "rbac",
    "requeue_after",
    "backoff",
    "concurrency",
    "steps",
    "skip_observed_generation",
    "crd",
    "versions",
    "storage",
    "watches",
    "filters",
    "field",
    "map",
    "generation_changed",
    "changed",
    "prune",
    "adopt",
    "metadata",
    "group",
    "resources",
    "verbs",
    "base",
    "max",
    "Widget",
    "v1",
    "ConfigMap",
    "true",
    "false",
    "self",
    "crate",
    "fn",
    "_",
];

fn ident() -> impl Strategy<Value = TokenTree> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[a-zA-Z][a-zA-Z0-9_]{0,8}",
    ]
    .prop_map(|word| TokenTree::Ident(Ident::new(&word, Span::call_site())))
}

fn literal() -> impl Strategy<Value = TokenTree> {
    prop_oneof![
        any::<String>().prop_map(|text| Literal::string(&text)),
        "[0-9 .+-]{0,4}(ms|s|m|h|d)?".prop_map(|text| Literal::string(&text)),
        "[a-z0-9.-]{0,12}/?[a-zA-Z0-9_.-]{0,12}".prop_map(|text| Literal::string(&text)),
        prop::sample::select(bonny_rules::verbs::KNOWN_VERBS).prop_map(Literal::string),
        any::<u64>().prop_map(Literal::u64_unsuffixed),
        any::<i64>().prop_map(Literal::i64_unsuffixed),
        any::<u8>().prop_map(Literal::u8_suffixed),
        (prop::num::f64::NORMAL | prop::num::f64::ZERO).prop_map(Literal::f64_unsuffixed),
        any::<char>().prop_map(Literal::character),
        any::<Vec<u8>>().prop_map(|bytes| Literal::byte_string(&bytes)),
    ]
    .prop_map(TokenTree::Literal)
}

fn punct() -> impl Strategy<Value = TokenTree> {
    (
        prop::sample::select(
            &[
                '=', ',', ':', '#', '-', '.', '/', '*', '!', '&', '<', '>', '\'',
            ][..],
        ),
        any::<bool>(),
    )
        .prop_map(|(c, joint)| {
            let spacing = if joint {
                Spacing::Joint
            } else {
                Spacing::Alone
            };
            TokenTree::Punct(Punct::new(c, spacing))
        })
}

/// Any token tree: identifiers, literals, punctuation, and groups of them.
fn tree() -> impl Strategy<Value = TokenTree> {
    let leaf = prop_oneof![4 => ident(), 3 => punct(), 2 => literal()];
    leaf.prop_recursive(4, 64, 8, |inner| {
        (
            prop::sample::select(
                &[
                    Delimiter::Parenthesis,
                    Delimiter::Bracket,
                    Delimiter::Brace,
                    Delimiter::None,
                ][..],
            ),
            prop::collection::vec(inner, 0..8),
        )
            .prop_map(|(delimiter, trees)| {
                TokenTree::Group(Group::new(delimiter, trees.into_iter().collect()))
            })
    })
}

fn stream() -> impl Strategy<Value = TokenStream> {
    prop::collection::vec(tree(), 0..16).prop_map(|trees| trees.into_iter().collect())
}

/// Streams shaped like the attribute, `key = value` or `key(..)` joined by commas, so that
/// the generated input gets past the first key.
fn shaped_stream() -> impl Strategy<Value = TokenStream> {
    let entry = (ident(), prop::option::of(punct()), stream()).prop_map(|(key, eq, value)| {
        let mut tokens: TokenStream = std::iter::once(key).collect();
        tokens.extend(eq);
        tokens.extend(value);
        tokens
    });
    let nested = (ident(), stream()).prop_map(|(key, inner)| {
        let group = TokenTree::Group(Group::new(Delimiter::Parenthesis, inner));
        [key, group].into_iter().collect::<TokenStream>()
    });
    prop::collection::vec(prop_oneof![entry, nested], 0..8).prop_map(|entries| {
        let mut tokens = TokenStream::new();
        for entry in entries {
            tokens.extend(entry);
            tokens.extend(quote!(,));
        }
        tokens
    })
}

/// What the macro does with `args`: no panic (proptest reports one as a failure), and output
/// that parses as Rust items, whether it holds the implementation or `compile_error!`s.
fn expands_to_items(args: TokenStream) -> Result<(), TestCaseError> {
    let _ = ControllerAttrs::parse(args.clone());
    let output = expand::controller(
        args,
        quote!(
            pub struct WidgetController;
        ),
    );
    prop_assert!(
        syn::parse2::<syn::File>(output.clone()).is_ok(),
        "not Rust: {output}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Failures found are kept as explicit tests, not in files beside the source.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_tokens_never_panic(args in stream()) {
        expands_to_items(args)?;
    }

    #[test]
    fn attribute_shaped_tokens_never_panic(args in shaped_stream()) {
        expands_to_items(args)?;
    }

    /// `requeue_after` and `backoff(base)` accept exactly what the shared grammar accepts,
    /// with the same value: the verdict the environment parser gives too.
    #[test]
    fn durations_get_the_shared_verdict(
        text in prop_oneof![any::<String>(), "[0-9 +.-]{0,22}(ms|s|m|h|min|d|M|S)?[0-9 ]{0,2}"],
    ) {
        let grammar = parse_millis(&text).ok();
        let requeue = ControllerAttrs::parse(quote!(resource = Widget, requeue_after = #text))
            .ok()
            .and_then(|attrs| attrs.requeue_after);
        prop_assert_eq!(requeue, grammar);
        let base = ControllerAttrs::parse(
            quote!(resource = Widget, backoff(base = #text, max = "18446744073709551615ms")),
        )
        .ok()
        .and_then(|attrs| attrs.backoff)
        .map(|backoff| backoff.base);
        prop_assert_eq!(base, grammar);
    }
}
