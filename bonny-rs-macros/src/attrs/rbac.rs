//! `rbac(group = "..", resources = [..], verbs = [..])`: one RBAC rule the controller needs.

use syn::{Expr, LitStr, meta::ParseNestedMeta, token};

use super::{errors::Errors, keys, validate, values};

/// The keys inside `rbac(...)`.
pub(super) const RBAC_KEYS: &[&str] = &["group", "resources", "verbs"];

const EXAMPLE: &str =
    "rbac(group = \"apps\", resources = [\"deployments\"], verbs = [\"get\", \"list\", \"watch\"])";

/// One `rbac(..)`, every part present and every verb known.
pub(crate) struct RbacRule {
    pub(crate) group: LitStr,
    pub(crate) resources: Vec<LitStr>,
    pub(crate) verbs: Vec<LitStr>,
}

/// Read `rbac(..)`; `None` when it had errors (recorded in `errors`).
pub(super) fn parse(meta: &ParseNestedMeta, errors: &mut Errors) -> syn::Result<Option<RbacRule>> {
    if !meta.input.peek(token::Paren) {
        return Err(meta.error(format!(
            "`rbac` expects a rule in parentheses, e.g. `{EXAMPLE}`"
        )));
    }
    let mut seen = Vec::new();
    let (mut group, mut resources, mut verbs) = (None, None, None);
    meta.parse_nested_meta(|inner| {
        let Some(key) = keys::nested_key(&inner, RBAC_KEYS, &mut seen, errors)? else {
            return Ok(());
        };
        match key {
            "group" => group = errors.keep(values::string(&inner, "group = \"apps\"")?),
            "resources" => {
                const EXAMPLE: &str = "resources = [\"deployments\"]";
                let list: Vec<Expr> = values::list(inner.value()?, EXAMPLE)?;
                let list = values::non_empty_list(&inner.path, list, EXAMPLE);
                resources = errors.keep(list.and_then(|list| values::strings(&list)));
            }
            _ /* verbs */ => {
                const EXAMPLE: &str = "verbs = [\"get\", \"list\"]";
                let list: Vec<Expr> = values::list(inner.value()?, EXAMPLE)?;
                let list = values::non_empty_list(&inner.path, list, EXAMPLE);
                verbs = errors.keep(
                    list.and_then(|list| values::strings(&list))
                        .and_then(validate::known_verbs),
                );
            }
        }
        Ok(())
    })?;

    let missing = |key: &str, hint: &str| {
        meta.error(format!(
            "`rbac(..)` is missing `{key}`: {hint}, e.g. `{EXAMPLE}`"
        ))
    };
    if !seen.contains(&"group") {
        errors.push(missing(
            "group",
            "name the API group, `\"\"` for the core group",
        ));
    }
    if !seen.contains(&"resources") {
        errors.push(missing("resources", "list the resource plurals"));
    }
    if !seen.contains(&"verbs") {
        errors.push(missing("verbs", "list the allowed verbs"));
    }
    Ok(match (group, resources, verbs) {
        (Some(group), Some(resources), Some(verbs)) => Some(RbacRule {
            group,
            resources,
            verbs,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use bonny_rules::verbs::KNOWN_VERBS;
    use quote::quote;
    use syn::LitStr;

    use crate::attrs::tests::{errors, parse};

    #[test]
    fn rules_keep_their_order_and_parts() {
        let attrs = parse(quote! {
            resource = Widget,
            rbac(group = "", resources = ["secrets"], verbs = ["get", "list"]),
            rbac(verbs = ["*"], group = "apps", resources = ["deployments", "deployments/scale"]),
        });
        let rules: Vec<_> = attrs
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.group.value(),
                    rule.resources.iter().map(LitStr::value).collect::<Vec<_>>(),
                    rule.verbs.iter().map(LitStr::value).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            rules,
            [
                (
                    "".to_owned(),
                    vec!["secrets".to_owned()],
                    vec!["get".to_owned(), "list".to_owned()]
                ),
                (
                    "apps".to_owned(),
                    vec!["deployments".to_owned(), "deployments/scale".to_owned()],
                    vec!["*".to_owned()]
                ),
            ]
        );
    }

    /// Every verb of the shared list is accepted, so the macro and the runtime agree.
    #[test]
    fn every_known_verb_is_accepted() {
        let verbs: Vec<LitStr> = KNOWN_VERBS
            .iter()
            .map(|verb| LitStr::new(verb, proc_macro2::Span::call_site()))
            .collect();
        let attrs = parse(quote!(
            resource = Widget,
            rbac(group = "", resources = ["pods"], verbs = [#(#verbs),*])
        ));
        let accepted: Vec<String> = attrs.rules[0].verbs.iter().map(LitStr::value).collect();
        assert_eq!(accepted, KNOWN_VERBS);
    }

    #[test]
    fn unknown_verb_is_named_with_a_suggestion() {
        let errors = errors(quote! {
            resource = Widget,
            rbac(group = "", resources = ["pods"], verbs = ["get", "lsit", "frobnicate"]),
        });
        let known = KNOWN_VERBS.join(", ");
        assert_eq!(
            errors,
            [
                format!(
                    "unknown RBAC verb `lsit` (did you mean `list`?); expected one of: {known}"
                ),
                format!("unknown RBAC verb `frobnicate`; expected one of: {known}"),
            ]
        );
    }

    #[test]
    fn every_part_is_needed() {
        assert_eq!(
            errors(quote!(
                resource = Widget,
                rbac(resources = ["pods"], verbs = [], colour = "red")
            )),
            [
                "`verbs` is empty: list at least one, e.g. `verbs = [\"get\", \"list\"]`",
                "unknown key `colour`; expected one of: group, resources, verbs",
                "`rbac(..)` is missing `group`: name the API group, `\"\"` for the core group, e.g. `rbac(group = \"apps\", resources = [\"deployments\"], verbs = [\"get\", \"list\", \"watch\"])`",
            ]
        );
        assert_eq!(
            errors(quote!(
                resource = Widget,
                rbac(group = "", resources = [pods], verbs = ["get"])
            )),
            ["expected a string, e.g. `\"get\"`"]
        );
        assert_eq!(
            errors(quote!(resource = Widget, rbac = "get")),
            [
                "`rbac` expects a rule in parentheses, e.g. `rbac(group = \"apps\", resources = [\"deployments\"], verbs = [\"get\", \"list\", \"watch\"])`"
            ]
        );
    }
}
