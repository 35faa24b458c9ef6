//! Checks of values that were read: non-empty names, RBAC verbs, finalizer names, durations.
//! The rules themselves live in `bonny_rules`, shared with the runtime.

use bonny_rules::{
    dns,
    duration::{self, DurationError},
    verbs::{self, KNOWN_VERBS},
};
use syn::{Error, LitStr};

use super::errors::Errors;
use crate::suggest;

/// A string that is not empty.
pub(super) fn non_empty(lit: LitStr) -> syn::Result<LitStr> {
    if lit.value().is_empty() {
        return Err(Error::new_spanned(lit, "expected a non-empty string"));
    }
    Ok(lit)
}

/// Verbs RBAC knows; one error per unknown verb, with a suggestion when one is close.
pub(super) fn known_verbs(verbs: Vec<LitStr>) -> syn::Result<Vec<LitStr>> {
    let mut errors = Errors::default();
    for verb in &verbs {
        let value = verb.value();
        if !verbs::is_known(&value) {
            let hint = suggest::closest(&value, KNOWN_VERBS)
                .map(|known| format!(" (did you mean `{known}`?)"))
                .unwrap_or_default();
            errors.push(Error::new_spanned(
                verb,
                format!(
                    "unknown RBAC verb `{value}`{hint}; expected one of: {}",
                    KNOWN_VERBS.join(", ")
                ),
            ));
        }
    }
    errors.finish()?;
    Ok(verbs)
}

/// A finalizer must be a domain-qualified name such as `example.com/cleanup`: Kubernetes warns
/// about unqualified ones, and the domain keeps two operators from sharing one by accident.
pub(super) fn qualified_name(lit: LitStr) -> syn::Result<LitStr> {
    let value = lit.value();
    let problem = match value.split_once('/') {
        None => Some("it has no `/`".to_owned()),
        Some(("", _)) => Some("the domain before `/` is empty".to_owned()),
        Some((_, "")) => Some("the name after `/` is empty".to_owned()),
        Some((domain, _)) if !dns::is_subdomain(domain) => Some(format!(
            "`{domain}` is not a DNS domain (lowercase letters, digits, `-` and `.`)"
        )),
        Some((_, name)) if !dns::is_qualified_name_part(name) => Some(format!(
            "`{name}` is not a valid name (at most {} letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit)",
            dns::QUALIFIED_NAME_MAX
        )),
        Some(_) => None,
    };
    match problem {
        None => Ok(lit),
        Some(problem) => Err(Error::new_spanned(
            lit,
            format!(
                "invalid finalizer `{value}`: {problem}; use a domain you own, a `/` and a name, e.g. `example.com/cleanup`"
            ),
        )),
    }
}

/// The milliseconds of a duration literal, in the grammar of `bonny_rules::duration`.
pub(super) fn millis(lit: &LitStr) -> syn::Result<u64> {
    duration::parse_millis(&lit.value()).map_err(|invalid: DurationError| {
        Error::new_spanned(
            lit,
            format!("invalid duration \"{}\": {invalid}", lit.value()),
        )
    })
}

#[cfg(test)]
mod tests {
    use bonny_rules::duration::parse_millis;
    use quote::quote;

    use crate::attrs::tests::{errors, parse};

    #[test]
    fn finalizer_must_be_qualified() {
        for (finalizer, problem) in [
            ("cleanup", "it has no `/`"),
            ("/cleanup", "the domain before `/` is empty"),
            ("example.com/", "the name after `/` is empty"),
            (
                "Example.com/cleanup",
                "`Example.com` is not a DNS domain (lowercase letters, digits, `-` and `.`)",
            ),
            (
                "example..com/cleanup",
                "`example..com` is not a DNS domain (lowercase letters, digits, `-` and `.`)",
            ),
            (
                "example.com/-cleanup",
                "`-cleanup` is not a valid name (at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit)",
            ),
            (
                "example.com/a/b",
                "`a/b` is not a valid name (at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit)",
            ),
        ] {
            assert_eq!(
                errors(quote!(resource = Widget, finalizer = #finalizer)),
                [format!(
                    "invalid finalizer `{finalizer}`: {problem}; use a domain you own, a `/` and a name, e.g. `example.com/cleanup`"
                )]
            );
        }
        for finalizer in [
            "example.com/cleanup",
            "widgets.example.com/Clean_up.v2",
            "a/b",
        ] {
            let attrs = parse(quote!(resource = Widget, finalizer = #finalizer));
            assert_eq!(
                attrs.finalizer.map(|lit| lit.value()).as_deref(),
                Some(finalizer)
            );
        }
    }

    /// The macro accepts a duration exactly when the shared grammar does, with its value.
    #[test]
    fn durations_follow_the_shared_grammar() {
        for text in [
            "0s",
            "1ms",
            "5m",
            "5 m",
            " 5m",
            "1.5s",
            "3d",
            "18446744073709551615h",
        ] {
            let macro_side = crate::attrs::ControllerAttrs::parse(
                quote!(resource = Widget, requeue_after = #text),
            )
            .map(|attrs| attrs.requeue_after);
            assert_eq!(
                macro_side.ok().flatten(),
                parse_millis(text).ok(),
                "{text:?}"
            );
        }
    }
}
