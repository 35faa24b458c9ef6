//! `backoff(base = "..", max = "..")`: the delays between retries of a failed reconcile.

use syn::{Error, meta::ParseNestedMeta, token};

use super::{errors::Errors, keys, values};

/// The keys inside `backoff(...)`.
pub(super) const BACKOFF_KEYS: &[&str] = &["base", "max"];

const EXAMPLE: &str = "backoff(base = \"1s\", max = \"5m\")";

/// `backoff(base = .., max = ..)` in milliseconds, `base <= max`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BackoffAttr {
    pub(crate) base: u64,
    pub(crate) max: u64,
}

/// Read `backoff(..)`; `None` when it had errors (recorded in `errors`).
pub(super) fn parse(
    meta: &ParseNestedMeta,
    errors: &mut Errors,
) -> syn::Result<Option<BackoffAttr>> {
    if !meta.input.peek(token::Paren) {
        return Err(meta.error(format!(
            "`backoff` expects its settings in parentheses, e.g. `{EXAMPLE}`"
        )));
    }
    let mut seen = Vec::new();
    let (mut base, mut max) = (None, None);
    meta.parse_nested_meta(|inner| {
        let Some(key) = keys::nested_key(&inner, BACKOFF_KEYS, &mut seen, errors)? else {
            return Ok(());
        };
        if key == "base" {
            let value = errors.keep(values::duration(&inner, "base = \"1s\"")?);
            base = value.map(|millis| (millis, inner.path.clone()));
        } else {
            max = errors.keep(values::duration(&inner, "max = \"5m\"")?);
        }
        Ok(())
    })?;

    for key in BACKOFF_KEYS {
        if !seen.contains(key) {
            errors.push(meta.error(format!(
                "`backoff(..)` is missing `{key}`: give both the first delay and the longest, e.g. `{EXAMPLE}`"
            )));
        }
    }
    let (Some((base, base_key)), Some(max)) = (base, max) else {
        return Ok(None);
    };
    if base > max {
        errors.push(Error::new_spanned(
            base_key,
            "the backoff `base` is longer than its `max`: `base` is the first delay, `max` the longest",
        ));
        return Ok(None);
    }
    Ok(Some(BackoffAttr { base, max }))
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
    use crate::attrs::tests::{errors, parse};

    #[test]
    fn base_and_max_in_milliseconds() {
        let attrs = parse(quote!(
            resource = Widget,
            backoff(max = "2m", base = "500ms")
        ));
        assert_eq!(
            attrs.backoff,
            Some(BackoffAttr {
                base: 500,
                max: 120_000
            })
        );
    }

    #[test]
    fn both_are_needed_and_base_is_not_longer() {
        assert_eq!(
            errors(quote!(resource = Widget, backoff(base = "1s"))),
            [
                "`backoff(..)` is missing `max`: give both the first delay and the longest, e.g. `backoff(base = \"1s\", max = \"5m\")`"
            ]
        );
        assert_eq!(
            errors(quote!(resource = Widget, backoff(base = "1h", max = "1m"))),
            [
                "the backoff `base` is longer than its `max`: `base` is the first delay, `max` the longest"
            ]
        );
        assert_eq!(
            errors(quote!(resource = Widget, backoff = "1s")),
            [
                "`backoff` expects its settings in parentheses, e.g. `backoff(base = \"1s\", max = \"5m\")`"
            ]
        );
    }
}
