//! `watches = [Kind(field = spec.source), Kind(map = my_fn, filters = [..])]` and
//! `filters = [generation_changed, changed(my_fn)]`.

use syn::{
    Error, Expr, ExprField, ExprPath, Member, Path, Token, parenthesized,
    parse::{Parse, ParseStream},
    punctuated::Punctuated,
};

use super::values;

const WATCHES: &str = "watches = [Secret(field = spec.source)]";
const FILTERS: &str = "filters = [generation_changed, labels_changed, changed(my_fn)]";
const FILTER_NAMES: &str = "`generation_changed`, `labels_changed`, `annotations_changed` or `changed(fn(&old, &new) -> bool)`";

/// One watched (related) kind.
pub(crate) struct WatchAttr {
    /// The related kind.
    pub(crate) kind: Path,
    pub(crate) mapper: MapperAttr,
    pub(crate) filters: Vec<FilterAttr>,
}

/// How a related object names primaries.
pub(crate) enum MapperAttr {
    /// `field = spec.source`: the field path, as written and as its segments.
    Field { path: Expr, segments: Vec<Member> },
    /// `map = my_fn`: a function (or closure) from the related object to primary references.
    Function(Expr),
}

/// One event filter.
pub(crate) enum FilterAttr {
    Generation,
    Labels,
    Annotations,
    Changed(Expr),
}

impl Parse for WatchAttr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let kind: Path = input.parse()?;
        if !input.peek(syn::token::Paren) {
            return Err(Error::new_spanned(
                &kind,
                format!(
                    "say how a {} names the objects to reconcile: `{}(field = spec.source)` or `{}(map = my_fn)`",
                    quote::ToTokens::to_token_stream(&kind)
                        .to_string()
                        .replace(' ', ""),
                    quote::ToTokens::to_token_stream(&kind)
                        .to_string()
                        .replace(' ', ""),
                    quote::ToTokens::to_token_stream(&kind)
                        .to_string()
                        .replace(' ', ""),
                ),
            ));
        }
        let content;
        parenthesized!(content in input);
        let mut mapper = None;
        let mut filters = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        while !content.is_empty() {
            let key: syn::Ident = content.parse()?;
            let name = key.to_string();
            if seen.contains(&name) {
                return Err(Error::new_spanned(&key, format!("duplicate `{name}`")));
            }
            seen.push(name.clone());
            content.parse::<Token![=]>()?;
            match name.as_str() {
                "field" | "map" if mapper.is_some() => {
                    return Err(Error::new_spanned(
                        &key,
                        "give one of `field = ..` and `map = ..`, not both",
                    ));
                }
                "field" => {
                    let path: Expr = content.parse()?;
                    let segments = field_path(&path)?;
                    mapper = Some(MapperAttr::Field { path, segments });
                }
                "map" => mapper = Some(MapperAttr::Function(content.parse()?)),
                "filters" => filters = filter_list(&content)?,
                other => {
                    return Err(Error::new_spanned(
                        &key,
                        format!(
                            "unknown key `{other}` in a watch; expected one of: field, map, filters"
                        ),
                    ));
                }
            }
            if !content.is_empty() {
                content.parse::<Token![,]>()?;
            }
        }
        let mapper = mapper.ok_or_else(|| {
            Error::new_spanned(
                &kind,
                "a watch needs `field = spec.source` (primaries whose field names the object) or `map = my_fn` (a function to primary references)",
            )
        })?;
        Ok(Self {
            kind,
            mapper,
            filters,
        })
    }
}

/// `spec.source` as its segments: field names joined by dots, nothing else.
fn field_path(path: &Expr) -> syn::Result<Vec<Member>> {
    let not_a_path = || {
        Error::new_spanned(
            path,
            "`field` expects a field path of the reconciled resource, names joined by dots, e.g. `field = spec.source`",
        )
    };
    let mut segments = Vec::new();
    let mut at = path;
    loop {
        match at {
            Expr::Field(ExprField { base, member, .. }) => {
                segments.push(member.clone());
                at = base;
            }
            Expr::Path(ExprPath {
                path, qself: None, ..
            }) if path.get_ident().is_some() => {
                let ident = path.get_ident().ok_or_else(not_a_path)?;
                segments.push(Member::Named(ident.clone()));
                break;
            }
            _ => return Err(not_a_path()),
        }
    }
    segments.reverse();
    Ok(segments)
}

/// `[generation_changed, changed(my_fn)]`.
pub(super) fn filter_list(input: ParseStream) -> syn::Result<Vec<FilterAttr>> {
    let items: Vec<Expr> = values::list(input, FILTERS)?;
    items.iter().map(filter).collect()
}

fn filter(item: &Expr) -> syn::Result<FilterAttr> {
    let unknown = || {
        Error::new_spanned(
            item,
            format!("unknown filter; expected {FILTER_NAMES}, e.g. `{FILTERS}`"),
        )
    };
    match item {
        Expr::Path(ExprPath { path, .. }) => match path.get_ident().map(ToString::to_string) {
            Some(name) if name == "generation_changed" => Ok(FilterAttr::Generation),
            Some(name) if name == "labels_changed" => Ok(FilterAttr::Labels),
            Some(name) if name == "annotations_changed" => Ok(FilterAttr::Annotations),
            _ => Err(unknown()),
        },
        Expr::Call(call) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("changed")) => {
            let mut args = call.args.iter();
            match (args.next(), args.next()) {
                (Some(changed), None) => Ok(FilterAttr::Changed(changed.clone())),
                _ => Err(Error::new_spanned(
                    item,
                    "`changed(..)` takes one function of the old and the new object, e.g. `changed(spec_changed)`",
                )),
            }
        }
        _ => Err(unknown()),
    }
}

/// `[Kind(..), Kind(..)]` after `watches =`.
pub(super) fn watch_list(input: ParseStream) -> syn::Result<Vec<WatchAttr>> {
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(format!(
            "`watches` expects a list in brackets, e.g. `{WATCHES}`"
        )));
    }
    let content;
    syn::bracketed!(content in input);
    Ok(
        Punctuated::<WatchAttr, Token![,]>::parse_terminated(&content)?
            .into_iter()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::super::tests::{errors, parse, text};
    use super::*;

    #[test]
    fn both_mapping_forms_and_filters() {
        let attrs = parse(quote! {
            resource = Widget,
            watches = [Secret(field = spec.source), core::ConfigMap(map = owners_of, filters = [labels_changed, changed(data_changed)])],
            filters = [generation_changed, annotations_changed],
        });
        assert_eq!(attrs.watches.len(), 2);
        match &attrs.watches[0].mapper {
            MapperAttr::Field { segments, .. } => {
                assert_eq!(
                    segments.iter().map(text).collect::<Vec<_>>(),
                    ["spec", "source"]
                );
            }
            MapperAttr::Function(_) => panic!("expected a field"),
        }
        assert_eq!(text(&attrs.watches[1].kind), "core :: ConfigMap");
        assert!(
            matches!(&attrs.watches[1].mapper, MapperAttr::Function(f) if text(f) == "owners_of")
        );
        assert!(matches!(
            attrs.watches[1].filters[..],
            [FilterAttr::Labels, FilterAttr::Changed(_)]
        ));
        assert!(matches!(
            attrs.filters[..],
            [FilterAttr::Generation, FilterAttr::Annotations]
        ));
    }

    #[test]
    fn wrong_watches_and_filters_name_the_fix() {
        let messages = errors(quote!(
            resource = Widget,
            watches = [Secret(field = spec["source"])]
        ));
        assert!(messages[0].contains("field path"), "{messages:?}");
        let messages = errors(quote!(resource = Widget, watches = [Secret(field = 1 + 2)]));
        assert!(messages[0].contains("field path"), "{messages:?}");
        let messages = errors(quote!(resource = Widget, watches = [Secret]));
        assert!(
            messages[0].contains("Secret(field = spec.source)"),
            "{messages:?}"
        );
        let messages = errors(quote!(resource = Widget, watches = [Secret(filters = [])]));
        assert!(messages[0].contains("needs `field"), "{messages:?}");
        let messages = errors(quote!(
            resource = Widget,
            watches = [Secret(field = a, map = f)]
        ));
        assert!(messages[0].contains("not both"), "{messages:?}");
        let messages = errors(quote!(resource = Widget, filters = [generation]));
        assert!(messages[0].contains("unknown filter"), "{messages:?}");
        let messages = errors(quote!(resource = Widget, filters = [changed(a, b)]));
        assert!(messages[0].contains("takes one function"), "{messages:?}");
    }
}
