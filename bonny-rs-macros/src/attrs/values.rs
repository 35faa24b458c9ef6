//! Readers for the values after `key =`: types, strings, durations, lists, numbers, booleans.
//!
//! A reader returns `syn::Result<syn::Result<T>>` when the value could be read but may be
//! wrong: the outer error means the input cannot be read on (parsing stops), the inner one is a
//! wrong value (recorded, parsing goes on).

use syn::{
    Error, Expr, ExprLit, Lit, LitStr, Path, Token,
    meta::ParseNestedMeta,
    parse::{Parse, ParseStream},
    punctuated::Punctuated,
    token,
};

use super::{errors::Errors, validate};

/// The key name as written in examples: everything before ` =` or `(`.
pub(super) fn key_of(example: &str) -> &str {
    example.split([' ', '(']).next().unwrap_or(example)
}

/// `key = Type`.
pub(super) fn type_path(meta: &ParseNestedMeta, example: &str) -> syn::Result<Path> {
    let value = meta.value()?;
    value.parse().map_err(|error| {
        Error::new(
            error.span(),
            format!("`{}` expects a type, e.g. `{example}`", key_of(example)),
        )
    })
}

/// `key = "string"`.
pub(super) fn string(meta: &ParseNestedMeta, example: &str) -> syn::Result<syn::Result<LitStr>> {
    text(meta, "a string", example)
}

/// `key = "duration"`, in milliseconds, checked by [`validate::millis`].
pub(super) fn duration(meta: &ParseNestedMeta, example: &str) -> syn::Result<syn::Result<u64>> {
    let lit = text(
        meta,
        "a duration string (a whole number and a unit: ms, s, m or h)",
        example,
    )?;
    Ok(lit.and_then(|lit| validate::millis(&lit)))
}

/// `key = "string"`, the string described as `what` in the error.
fn text(meta: &ParseNestedMeta, what: &str, example: &str) -> syn::Result<syn::Result<LitStr>> {
    let value: Expr = meta.value()?.parse()?;
    Ok(match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        other => Err(Error::new_spanned(
            other,
            format!("`{}` expects {what}, e.g. `{example}`", key_of(example)),
        )),
    })
}

/// `[item, item, ..]` after `key =`.
pub(super) fn list<T: Parse>(input: ParseStream, example: &str) -> syn::Result<Vec<T>> {
    if !input.peek(token::Bracket) {
        return Err(input.error(format!(
            "`{}` expects a list in brackets, e.g. `{example}`",
            key_of(example)
        )));
    }
    let content;
    syn::bracketed!(content in input);
    Ok(Punctuated::<T, Token![,]>::parse_terminated(&content)?
        .into_iter()
        .collect())
}

/// A list that must hold at least one item; the error points at `key`.
pub(super) fn non_empty_list<T>(key: &Path, list: Vec<T>, example: &str) -> syn::Result<Vec<T>> {
    if list.is_empty() {
        return Err(Error::new_spanned(
            key,
            format!(
                "`{}` is empty: list at least one, e.g. `{example}`",
                key_of(example)
            ),
        ));
    }
    Ok(list)
}

/// Every item of `list` as a string literal; one error per item that is not one.
pub(super) fn strings(list: &[Expr]) -> syn::Result<Vec<LitStr>> {
    let mut errors = Errors::default();
    let strings: Vec<LitStr> = list
        .iter()
        .filter_map(|item| match item {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => Some(lit.clone()),
            other => {
                errors.push(Error::new_spanned(
                    other,
                    "expected a string, e.g. `\"get\"`",
                ));
                None
            }
        })
        .collect();
    errors.finish()?;
    Ok(strings)
}

/// `concurrency = 4`: a whole number that fits a `u16`.
pub(super) fn concurrency(value: &Expr) -> syn::Result<u16> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit.base10_parse().map_err(|_| {
            Error::new_spanned(lit, "`concurrency` is at most 65535 (0 means no limit)")
        }),
        other => Err(Error::new_spanned(
            other,
            "`concurrency` expects a whole number, e.g. `concurrency = 4` (0 means no limit)",
        )),
    }
}

/// `key = true` or `key = false`.
pub(super) fn boolean(value: &Expr, example: &str) -> syn::Result<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Ok(lit.value),
        other => Err(Error::new_spanned(
            other,
            format!(
                "`{}` expects `true` or `false`, e.g. `{example}`",
                key_of(example)
            ),
        )),
    }
}
