//! The key table of `#[controller(...)]`, and the handling of keys shared by the top level and
//! the nested attributes: unknown keys (with a suggestion), repeated keys, skipping the value of
//! a rejected key.

use proc_macro2::TokenTree;
use syn::{Error, Path, meta::ParseNestedMeta};

use super::errors::Errors;
use crate::suggest;

/// A key of `#[controller(...)]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Resource,
    Name,
    Finalizer,
    Owns,
    Rbac,
    RequeueAfter,
    Backoff,
    Concurrency,
    Steps,
    SkipObservedGeneration,
    Crd,
    Versions,
    Storage,
    Watches,
    Filters,
    Prune,
    Adopt,
    Metadata,
}

/// Every key with its spelling, in the order of the documentation.
pub(super) const KEYS: &[(&str, Key)] = &[
    ("resource", Key::Resource),
    ("name", Key::Name),
    ("finalizer", Key::Finalizer),
    ("owns", Key::Owns),
    ("rbac", Key::Rbac),
    ("requeue_after", Key::RequeueAfter),
    ("backoff", Key::Backoff),
    ("concurrency", Key::Concurrency),
    ("steps", Key::Steps),
    ("skip_observed_generation", Key::SkipObservedGeneration),
    ("crd", Key::Crd),
    ("versions", Key::Versions),
    ("storage", Key::Storage),
    ("watches", Key::Watches),
    ("filters", Key::Filters),
    ("prune", Key::Prune),
    ("adopt", Key::Adopt),
    ("metadata", Key::Metadata),
];

impl Key {
    /// Whether the key may appear more than once.
    pub(super) fn repeatable(self) -> bool {
        self == Key::Rbac
    }
}

/// The key `meta` starts with and its spelling, or `None` (error recorded, value skipped) for
/// an unknown or repeated one.
pub(super) fn top_level_key(
    meta: &ParseNestedMeta,
    seen: &mut Vec<Key>,
    errors: &mut Errors,
) -> syn::Result<Option<(&'static str, Key)>> {
    let Some((name, key)) = KEYS
        .iter()
        .copied()
        .find(|(name, _)| meta.path.is_ident(name))
    else {
        let names: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
        errors.push(unknown_key(&meta.path, &names));
        skip_value(meta)?;
        return Ok(None);
    };
    if !key.repeatable() && seen.contains(&key) {
        errors.push(duplicate(&meta.path, name));
        skip_value(meta)?;
        return Ok(None);
    }
    seen.push(key);
    Ok(Some((name, key)))
}

/// The key of a nested `key = value`, or `None` (error recorded, value skipped) for an unknown
/// or repeated one.
pub(super) fn nested_key<'k>(
    meta: &ParseNestedMeta,
    keys: &[&'k str],
    seen: &mut Vec<&'k str>,
    errors: &mut Errors,
) -> syn::Result<Option<&'k str>> {
    let Some(key) = keys.iter().copied().find(|key| meta.path.is_ident(key)) else {
        errors.push(unknown_key(&meta.path, keys));
        skip_value(meta)?;
        return Ok(None);
    };
    if seen.contains(&key) {
        errors.push(duplicate(&meta.path, key));
        skip_value(meta)?;
        return Ok(None);
    }
    seen.push(key);
    Ok(Some(key))
}

fn duplicate(path: &Path, key: &str) -> Error {
    Error::new_spanned(path, format!("duplicate `{key}`"))
}

fn unknown_key(path: &Path, keys: &[&str]) -> Error {
    let name = quote::ToTokens::to_token_stream(path)
        .to_string()
        .replace(' ', "");
    let hint = suggest::closest(&name, keys)
        .map(|key| format!(" (did you mean `{key}`?)"))
        .unwrap_or_default();
    Error::new_spanned(
        path,
        format!(
            "unknown key `{name}`{hint}; expected one of: {}",
            keys.join(", ")
        ),
    )
}

/// Step over whatever follows a key that is being rejected, up to the next `,`.
pub(super) fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    meta.input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            if matches!(&tree, TokenTree::Punct(punct) if punct.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}
