//! The arguments of `#[controller(...)]`, parsed and checked before any code is emitted.
//!
//! Parsing goes on after a wrong value so that one compile reports every mistake at once; only
//! input that cannot be read at all (a missing `=`, an unbalanced bracket) stops it early.
//!
//! - [`keys`]: the key table, unknown and repeated keys.
//! - [`errors`]: the error collector.
//! - [`rbac`], [`backoff`], [`crd`]: the nested attributes and the keys read together.
//! - [`values`]: readers for the values after `key =`.
//! - [`validate`]: checks of values that were read, on the rules of `bonny_rules`.

mod backoff;
mod crd;
mod errors;
mod keys;
mod rbac;
mod related;
#[cfg(test)]
mod tests;
mod validate;
mod values;

use proc_macro2::{Span, TokenStream};
use syn::{Error, Expr, LitStr, Path, Token, meta::ParseNestedMeta, parse::Parser};

pub(crate) use self::{
    backoff::BackoffAttr,
    crd::CrdSource,
    rbac::RbacRule,
    related::{FilterAttr, MapperAttr, WatchAttr},
};
use self::{
    crd::CrdKeys,
    errors::Errors,
    keys::{Key, skip_value},
};

const MISSING_RESOURCE: &str = "missing `resource = <Type>`: name the custom resource this controller reconciles, e.g. `resource = Widget`";

/// A checked `#[controller(...)]`.
pub(crate) struct ControllerAttrs {
    /// The reconciled resource.
    pub(crate) resource: Path,
    pub(crate) name: Option<LitStr>,
    pub(crate) finalizer: Option<LitStr>,
    pub(crate) owns: Vec<Path>,
    pub(crate) rules: Vec<RbacRule>,
    /// Milliseconds.
    pub(crate) requeue_after: Option<u64>,
    pub(crate) backoff: Option<BackoffAttr>,
    pub(crate) concurrency: Option<u16>,
    pub(crate) steps: Vec<Expr>,
    pub(crate) skip_observed_generation: bool,
    pub(crate) crd: CrdSource,
    pub(crate) watches: Vec<WatchAttr>,
    pub(crate) filters: Vec<FilterAttr>,
    /// `prune = true|false`, when given.
    pub(crate) prune: Option<bool>,
    /// Owned kinds watched whole (`adopt_existing`), not only the SDK's own descendants.
    pub(crate) adopt: Vec<Path>,
    /// Owned or watched kinds cached as metadata only; each is one of `owns`, `adopt` or
    /// `watches`.
    pub(crate) metadata: Vec<Path>,
}

impl ControllerAttrs {
    /// Whether `kind` is cached as metadata only.
    pub(crate) fn metadata_only(&self, kind: &Path) -> bool {
        self.metadata.iter().any(|listed| same_kind(listed, kind))
    }

    /// Whether `kind` is owned (`owns` or `adopt`).
    pub(crate) fn owned(&self, kind: &Path) -> bool {
        self.owns
            .iter()
            .chain(&self.adopt)
            .any(|owned| same_kind(owned, kind))
    }
}

/// Whether two type paths are written the same (`ConfigMap` and `v1::ConfigMap` are not).
fn same_kind(a: &Path, b: &Path) -> bool {
    quote::quote!(#a).to_string() == quote::quote!(#b).to_string()
}

impl ControllerAttrs {
    /// Parse the tokens between the parentheses of `#[controller(...)]`.
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut draft = Draft::default();
        let parsed = syn::meta::parser(|meta| draft.key(&meta)).parse2(args);
        if let Err(error) = parsed {
            // The rest of the input could not be read: report what was found so far and stop.
            draft.errors.push(error);
            draft.errors.finish()?;
        }
        draft.finish()
    }
}

/// The arguments as they are read, before the checks that need all of them.
#[derive(Default)]
struct Draft {
    seen: Vec<Key>,
    errors: Errors,
    resource: Option<Path>,
    name: Option<LitStr>,
    finalizer: Option<LitStr>,
    owns: Vec<Path>,
    rules: Vec<RbacRule>,
    requeue_after: Option<u64>,
    backoff: Option<BackoffAttr>,
    concurrency: Option<u16>,
    steps: Vec<Expr>,
    skip_observed_generation: bool,
    crd: CrdKeys,
    watches: Vec<WatchAttr>,
    filters: Vec<FilterAttr>,
    prune: Option<bool>,
    adopt: Vec<Path>,
    metadata: Vec<Path>,
}

impl Draft {
    /// Read one `key`, `key = value` or `key(...)`.
    fn key(&mut self, meta: &ParseNestedMeta) -> syn::Result<()> {
        let Some((_, key)) = keys::top_level_key(meta, &mut self.seen, &mut self.errors)? else {
            return Ok(());
        };
        let errors = &mut self.errors;
        match key {
            Key::Resource => self.resource = Some(values::type_path(meta, "resource = Widget")?),
            Key::Name => {
                let name =
                    values::string(meta, "name = \"widgets\"")?.and_then(validate::non_empty);
                self.name = errors.keep(name);
            }
            Key::Finalizer => {
                let finalizer = values::string(meta, "finalizer = \"example.com/cleanup\"")?
                    .and_then(validate::qualified_name);
                self.finalizer = errors.keep(finalizer);
            }
            Key::Owns => self.owns = values::list(meta.value()?, "owns = [ConfigMap, Secret]")?,
            Key::Rbac => self.rules.extend(rbac::parse(meta, errors)?),
            Key::RequeueAfter => {
                let every = values::duration(meta, "requeue_after = \"5m\"")?;
                self.requeue_after = errors.keep(every);
            }
            Key::Backoff => self.backoff = backoff::parse(meta, errors)?,
            Key::Concurrency => {
                let value: Expr = meta.value()?.parse()?;
                self.concurrency = errors.keep(values::concurrency(&value));
            }
            Key::Steps => {
                self.steps = values::list(meta.value()?, "steps = [SkipPaused, MyStep::new(3)]")?;
            }
            Key::SkipObservedGeneration => {
                if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                    errors.push(meta.error(
                        "`skip_observed_generation` is a flag: write it alone, without a value",
                    ));
                    skip_value(meta)?;
                }
                self.skip_observed_generation = true;
            }
            Key::Crd => {
                let value: Expr = meta.value()?.parse()?;
                self.crd.crd = errors.keep(values::boolean(&value, "crd = false"));
            }
            Key::Versions => {
                let versions =
                    values::list(meta.value()?, "versions = [v1alpha1::Widget, v1::Widget]")?;
                self.crd.versions = Some((meta.path.clone(), versions));
            }
            Key::Storage => {
                let storage =
                    values::string(meta, "storage = \"v1\"")?.and_then(validate::non_empty);
                self.crd.storage = errors.keep(storage);
            }
            Key::Watches => self.watches = related::watch_list(meta.value()?)?,
            Key::Filters => self.filters = related::filter_list(meta.value()?)?,
            Key::Prune => {
                let value: Expr = meta.value()?.parse()?;
                self.prune = errors.keep(values::boolean(&value, "prune = true"));
            }
            Key::Adopt => self.adopt = values::list(meta.value()?, "adopt = [ConfigMap]")?,
            Key::Metadata => {
                self.metadata = values::list(meta.value()?, "metadata = [ConfigMap]")?;
            }
        }
        Ok(())
    }

    /// The checks that need every argument, and the result.
    fn finish(mut self) -> syn::Result<ControllerAttrs> {
        if self.resource.is_none() {
            self.errors
                .push(Error::new(Span::call_site(), MISSING_RESOURCE));
        }
        let crd = self.crd.source(&mut self.errors);
        for kind in &self.metadata {
            let declared = self
                .owns
                .iter()
                .chain(&self.adopt)
                .chain(self.watches.iter().map(|watch| &watch.kind))
                .any(|declared| same_kind(declared, kind));
            if !declared {
                let name = quote::quote!(#kind).to_string().replace(' ', "");
                self.errors.push(Error::new_spanned(
                    kind,
                    format!(
                        "`metadata = [{name}]` names a kind this controller neither owns nor \
                         watches: add it to `owns = [{name}]` (its descendants cached as \
                         metadata only) or to `watches = [{name}(..)]`, written the same way"
                    ),
                ));
            }
        }
        self.errors.finish()?;
        let resource = self
            .resource
            .ok_or_else(|| Error::new(Span::call_site(), MISSING_RESOURCE))?;
        Ok(ControllerAttrs {
            resource,
            name: self.name,
            finalizer: self.finalizer,
            owns: self.owns,
            rules: self.rules,
            requeue_after: self.requeue_after,
            backoff: self.backoff,
            concurrency: self.concurrency,
            steps: self.steps,
            skip_observed_generation: self.skip_observed_generation,
            crd,
            watches: self.watches,
            filters: self.filters,
            prune: self.prune,
            adopt: self.adopt,
            metadata: self.metadata,
        })
    }
}
