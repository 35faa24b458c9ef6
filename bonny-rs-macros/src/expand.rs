//! The code `#[controller(...)]` emits: the struct unchanged, and an implementation of
//! `bonny::controller::Controller` that calls the public builder API.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::{Item, ItemStruct, spanned::Spanned};

use crate::attrs::{
    BackoffAttr, ControllerAttrs, CrdSource, FilterAttr, MapperAttr, RbacRule, WatchAttr,
};

/// Expand `#[controller(args)] item`. Errors become `compile_error!`s next to the untouched
/// item, so that code using the struct does not fail for an unrelated reason.
pub(crate) fn controller(args: TokenStream, item: TokenStream) -> TokenStream {
    let target = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(target)) => Ok(target),
        Ok(other) => Err(not_a_struct(&other)),
        Err(error) => Err(error),
    };
    let implementation = match (ControllerAttrs::parse(args), target) {
        (Ok(attrs), Ok(target)) => implementation(&attrs, &target),
        (attrs, target) => [attrs.err(), target.err()]
            .into_iter()
            .flatten()
            .reduce(|mut errors, error| {
                errors.combine(error);
                errors
            })
            .map(|errors| errors.to_compile_error())
            .unwrap_or_default(),
    };
    quote! {
        #item
        #implementation
    }
}

fn not_a_struct(item: &Item) -> syn::Error {
    // Point at the keyword and the name, not at the whole body.
    let (what, head) = match item {
        Item::Enum(syn::ItemEnum {
            enum_token, ident, ..
        }) => ("an enum", quote!(#enum_token #ident)),
        Item::Union(syn::ItemUnion {
            union_token, ident, ..
        }) => ("a union", quote!(#union_token #ident)),
        Item::Fn(syn::ItemFn { sig, .. }) => {
            let (fn_token, ident) = (&sig.fn_token, &sig.ident);
            ("a function", quote!(#fn_token #ident))
        }
        other => ("this item", quote!(#other)),
    };
    syn::Error::new_spanned(
        head,
        format!(
            "`#[controller]` goes on a struct, not on {what}: declare the controller as e.g. `pub struct WidgetController;` and name what it reconciles with `resource = ..`"
        ),
    )
}

/// `impl Controller for Target`.
pub(crate) fn implementation(attrs: &ControllerAttrs, target: &ItemStruct) -> TokenStream {
    let resource = &attrs.resource;
    let ident = &target.ident;
    let (impl_generics, type_generics, where_clause) = target.generics.split_for_impl();
    let mut calls = config_calls(attrs);
    calls.extend(related_calls(attrs));
    let crd = crd_body(attrs);
    quote! {
        impl #impl_generics ::bonny::controller::Controller for #ident #type_generics #where_clause {
            type Resource = #resource;

            fn config(&self) -> ::bonny::controller::Config<#resource> {
                ::bonny::controller::Config::new() #(#calls)*
            }

            fn crd(&self) -> ::core::result::Result<
                ::core::option::Option<::bonny::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
                ::bonny::kube::core::crd::MergeError,
            > {
                #crd
            }
        }
    }
}

/// The builder calls after `Config::new()`, in the order of the documented key table.
fn config_calls(attrs: &ControllerAttrs) -> Vec<TokenStream> {
    let mut calls = Vec::new();
    if let Some(name) = &attrs.name {
        calls.push(quote!(.name(#name)));
    }
    if let Some(finalizer) = &attrs.finalizer {
        calls.push(quote!(.finalizer(#finalizer)));
    }
    for owned in &attrs.owns {
        // Spanned so that a kind that cannot be owned (e.g. cluster-scoped) is reported there.
        calls.push(quote_spanned!(owned.span()=> .owns::<#owned>()));
    }
    for adopted in &attrs.adopt {
        calls.push(quote_spanned!(adopted.span()=> .adopt_existing::<#adopted>()));
    }
    for kind in attrs.metadata.iter().filter(|kind| attrs.owned(kind)) {
        calls.push(quote_spanned!(kind.span()=> .owns_metadata::<#kind>()));
    }
    for RbacRule {
        group,
        resources,
        verbs,
    } in &attrs.rules
    {
        calls.push(quote! {
            .rule(::bonny::manifest::Rule::new(#group, [#(#resources),*], [#(#verbs),*]))
        });
    }
    if let Some(millis) = attrs.requeue_after {
        let every = duration(millis);
        calls.push(quote!(.requeue_after(#every)));
    }
    if let Some(BackoffAttr { base, max }) = &attrs.backoff {
        let (base, max) = (duration(*base), duration(*max));
        calls.push(quote!(.backoff(::bonny::controller::Backoff::new(#base, #max))));
    }
    if let Some(concurrency) = attrs.concurrency {
        let concurrency = Literal::u16_unsuffixed(concurrency);
        calls.push(quote!(.concurrency(#concurrency)));
    }
    for step in &attrs.steps {
        calls.push(quote_spanned!(step.span()=> .step(#step)));
    }
    if attrs.skip_observed_generation {
        calls.push(quote!(.skip_observed_generation()));
    }
    if let Some(prune) = attrs.prune {
        calls.push(quote!(.prune(#prune)));
    }
    calls
}

/// `.watches(..)` and `.filter(..)`, after the other calls (the keys came last).
fn related_calls(attrs: &ControllerAttrs) -> Vec<TokenStream> {
    let resource = &attrs.resource;
    let mut calls = Vec::new();
    for WatchAttr {
        kind,
        mapper,
        filters,
    } in &attrs.watches
    {
        let mapper = match mapper {
            MapperAttr::Field { path, segments } => {
                let name = quote!(#path).to_string().replace(' ', "");
                // Spanned at the path: a field the resource lacks, or one that cannot hold a
                // name, is reported where it is written.
                let read = quote_spanned! {path.span()=>
                    |primary: &#resource| ::bonny::controller::ReferenceField::referenced_name(&primary #(.#segments)*)
                };
                quote! {
                    ::bonny::controller::Mapper::<#resource, #kind>::field(#name, #read)
                }
            }
            MapperAttr::Function(map) => quote_spanned! {map.span()=>
                ::bonny::controller::Mapper::<#resource, #kind>::function(#map)
            },
        };
        let filters = filters.iter().map(|filter| filter_expr(filter, kind));
        let metadata_only = attrs.metadata_only(kind).then(|| quote!(.metadata_only()));
        calls.push(quote!(.watches(#mapper #(.filter(#filters))* #metadata_only)));
    }
    for filter in &attrs.filters {
        let filter = filter_expr(filter, resource);
        calls.push(quote!(.filter(#filter)));
    }
    calls
}

fn filter_expr(filter: &FilterAttr, kind: &syn::Path) -> TokenStream {
    let filter_type = quote!(::bonny::controller::Filter::<#kind>);
    match filter {
        FilterAttr::Generation => quote!(#filter_type::generation_changed()),
        FilterAttr::Labels => quote!(#filter_type::labels_changed()),
        FilterAttr::Annotations => quote!(#filter_type::annotations_changed()),
        FilterAttr::Changed(changed) => {
            quote_spanned!(changed.span()=> #filter_type::changed(#changed))
        }
    }
}

fn duration(millis: u64) -> TokenStream {
    let millis = Literal::u64_unsuffixed(millis);
    quote!(::core::time::Duration::from_millis(#millis))
}

fn crd_body(attrs: &ControllerAttrs) -> TokenStream {
    match &attrs.crd {
        CrdSource::None => quote!(::core::result::Result::Ok(::core::option::Option::None)),
        CrdSource::Derived => {
            // Spanned at the resource: a built-in kind without `crd = false` fails right there.
            let resource = &attrs.resource;
            let crd = quote_spanned!(resource.span()=> <#resource as ::bonny::kube::CustomResourceExt>::crd());
            quote!(::core::result::Result::Ok(::core::option::Option::Some(#crd)))
        }
        CrdSource::Merged { versions, storage } => {
            let crds = versions
                .iter()
                .map(|version| quote_spanned!(version.span()=> <#version as ::bonny::kube::CustomResourceExt>::crd()));
            quote! {
                ::bonny::kube::core::crd::merge_crds(::std::vec![#(#crds),*], #storage)
                    .map(::core::option::Option::Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        controller(args, item).to_string()
    }

    const CRD_SIGNATURE: &str = "fn crd (& self) -> :: core :: result :: Result < :: core :: option :: Option < :: bonny :: k8s_openapi :: apiextensions_apiserver :: pkg :: apis :: apiextensions :: v1 :: CustomResourceDefinition > , :: bonny :: kube :: core :: crd :: MergeError , >";

    #[test]
    fn full_attribute() {
        let expanded = expand(
            quote! {
                resource = Widget,
                name = "widgets",
                finalizer = "example.com/cleanup",
                owns = [ConfigMap, apps::Deployment],
                rbac(group = "", resources = ["secrets"], verbs = ["get", "list"]),
                requeue_after = "5m",
                backoff(base = "500ms", max = "2m"),
                concurrency = 4,
                steps = [SkipPaused, MyStep::new(3)],
                skip_observed_generation,
                prune = true,
            },
            quote!(
                pub struct WidgetController;
            ),
        );
        let wanted = quote! {
            pub struct WidgetController;
            impl ::bonny::controller::Controller for WidgetController {
                type Resource = Widget;

                fn config(&self) -> ::bonny::controller::Config<Widget> {
                    ::bonny::controller::Config::new()
                        .name("widgets")
                        .finalizer("example.com/cleanup")
                        .owns::<ConfigMap>()
                        .owns::<apps::Deployment>()
                        .rule(::bonny::manifest::Rule::new("", ["secrets"], ["get", "list"]))
                        .requeue_after(::core::time::Duration::from_millis(300000))
                        .backoff(::bonny::controller::Backoff::new(
                            ::core::time::Duration::from_millis(500),
                            ::core::time::Duration::from_millis(120000)
                        ))
                        .concurrency(4)
                        .step(SkipPaused)
                        .step(MyStep::new(3))
                        .skip_observed_generation()
                        .prune(true)
                }

                fn crd(&self) -> ::core::result::Result<
                    ::core::option::Option<::bonny::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
                    ::bonny::kube::core::crd::MergeError,
                > {
                    ::core::result::Result::Ok(::core::option::Option::Some(
                        <Widget as ::bonny::kube::CustomResourceExt>::crd()
                    ))
                }
            }
        };
        assert_eq!(expanded, wanted.to_string());
    }

    #[test]
    fn crd_sources() {
        let item = quote! { struct Mirror { target: String } };
        let none = expand(quote!(resource = ConfigMap, crd = false), item.clone());
        assert!(none.starts_with(&item.to_string()));
        assert!(none.contains(":: bonny :: controller :: Config :: new () }"));
        assert!(none.ends_with(&format!(
            "{CRD_SIGNATURE} {{ :: core :: result :: Result :: Ok (:: core :: option :: Option :: None) }} }}"
        )));

        let merged = expand(
            quote!(
                resource = v1::Widget,
                versions = [v1alpha1::Widget, v1::Widget],
                storage = "v1"
            ),
            quote!(
                struct WidgetController;
            ),
        );
        let wanted = quote! {
            ::bonny::kube::core::crd::merge_crds(
                ::std::vec![
                    <v1alpha1::Widget as ::bonny::kube::CustomResourceExt>::crd(),
                    <v1::Widget as ::bonny::kube::CustomResourceExt>::crd()
                ],
                "v1"
            )
            .map(::core::option::Option::Some)
        };
        assert!(
            merged.contains(&format!("{CRD_SIGNATURE} {{ {wanted} }}")),
            "{merged}"
        );
    }

    #[test]
    fn generics_are_kept() {
        let expanded = expand(
            quote!(resource = Widget),
            quote! { struct WidgetController<S: Store> where S: Clone { store: S } },
        );
        let head = quote! {
            impl<S: Store> ::bonny::controller::Controller for WidgetController<S> where S: Clone
        };
        assert!(expanded.contains(&head.to_string()), "{expanded}");
    }

    #[test]
    fn errors_keep_the_item() {
        let expanded = expand(
            quote!(finalizer = 3),
            quote!(
                pub struct WidgetController;
            ),
        );
        assert!(expanded.starts_with("pub struct WidgetController ;"));
        assert!(!expanded.contains("impl"));
        assert_eq!(expanded.matches("compile_error").count(), 2, "{expanded}");
    }

    #[test]
    fn only_on_structs() {
        for (item, what) in [
            (
                quote!(
                    enum WidgetController {
                        A,
                    }
                ),
                "an enum",
            ),
            (
                quote!(
                    fn widget_controller() {}
                ),
                "a function",
            ),
            (
                quote!(
                    mod widgets {}
                ),
                "this item",
            ),
        ] {
            let expanded = expand(quote!(resource = Widget), item.clone());
            assert!(expanded.starts_with(&item.to_string()));
            assert!(
                expanded.contains(&format!("`#[controller]` goes on a struct, not on {what}")),
                "{expanded}"
            );
        }
    }

    #[test]
    fn adopt_watches_the_owned_kinds_whole() {
        let expanded = expand(
            quote!(
                resource = Widget,
                owns = [ConfigMap, Secret],
                adopt = [ConfigMap]
            ),
            quote!(
                pub struct WidgetController;
            ),
        );
        assert!(
            expanded.contains(". owns :: < Secret > () . adopt_existing :: < ConfigMap > ()"),
            "{expanded}"
        );
    }

    #[test]
    fn metadata_marks_owned_and_watched_kinds() {
        let expanded = expand(
            quote!(
                resource = Widget,
                owns = [ConfigMap, Secret],
                watches = [Service(map = services)],
                metadata = [ConfigMap, Service]
            ),
            quote!(
                pub struct WidgetController;
            ),
        );
        assert!(
            expanded.contains(". owns :: < Secret > () . owns_metadata :: < ConfigMap > ()"),
            "{expanded}"
        );
        assert!(
            expanded.contains("(services) . metadata_only ())"),
            "{expanded}"
        );
    }

    #[test]
    fn metadata_of_an_undeclared_kind_names_the_fix() {
        let expanded = expand(
            quote!(resource = Widget, owns = [ConfigMap], metadata = [Secret]),
            quote!(
                pub struct WidgetController;
            ),
        );
        assert!(
            expanded.contains("neither owns nor watches: add it to `owns = [Secret]`"),
            "{expanded}"
        );
    }
}
