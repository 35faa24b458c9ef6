//! The arguments of `#[controller(...)]`, parsed and checked before any code is emitted.
//!
//! Parsing goes on after a wrong value so that one compile reports every mistake at once; only
//! input that cannot be read at all (a missing `=`, an unbalanced bracket) stops it early.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::{
    Error, Expr, ExprLit, Lit, LitStr, Path, Token,
    meta::ParseNestedMeta,
    parse::{Parse, ParseStream, Parser},
    punctuated::Punctuated,
    token,
};

use crate::{duration, suggest};

/// A key of `#[controller(...)]`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
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
}

/// Every key with its spelling, in the order of the documentation.
const KEYS: &[(&str, Key)] = &[
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
];

/// The keys inside `rbac(...)`.
const RBAC_KEYS: &[&str] = &["group", "resources", "verbs"];

/// The keys inside `backoff(...)`.
const BACKOFF_KEYS: &[&str] = &["base", "max"];

/// Every verb the Kubernetes RBAC authorizer understands; the same list as
/// `bonny::manifest::KNOWN_VERBS` (a test in bonny keeps the two equal).
pub(crate) const KNOWN_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "bind",
    "escalate",
    "impersonate",
    "use",
    "approve",
    "sign",
    "*",
];

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
}

/// One `rbac(group = .., resources = [..], verbs = [..])`, every verb known.
pub(crate) struct RbacRule {
    pub(crate) group: LitStr,
    pub(crate) resources: Vec<LitStr>,
    pub(crate) verbs: Vec<LitStr>,
}

/// `backoff(base = .., max = ..)` in milliseconds, `base <= max`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BackoffAttr {
    pub(crate) base: u64,
    pub(crate) max: u64,
}

/// Where `Controller::crd` gets the CustomResourceDefinition from.
pub(crate) enum CrdSource {
    /// `CustomResourceExt::crd()` of the resource (the default).
    Derived,
    /// `crd = false`: a built-in kind or a resource defined elsewhere.
    None,
    /// `versions = [..], storage = ".."`: one CRD per version type, merged.
    Merged {
        versions: Vec<Path>,
        storage: LitStr,
    },
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

/// Errors gathered while parsing.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The value, or `None` after recording the error.
    fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    fn finish(&mut self) -> syn::Result<()> {
        self.0.take().map_or(Ok(()), Err)
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
    crd: Option<bool>,
    /// With the `versions` key itself, to point at it.
    versions: Option<(Path, Vec<Path>)>,
    storage: Option<LitStr>,
}

impl Draft {
    /// Read one `key`, `key = value` or `key(...)`.
    fn key(&mut self, meta: &ParseNestedMeta) -> syn::Result<()> {
        let names: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
        let Some((name, key)) = KEYS
            .iter()
            .copied()
            .find(|(name, _)| meta.path.is_ident(name))
        else {
            self.errors.push(unknown_key(&meta.path, &names));
            return skip_value(meta);
        };
        if key != Key::Rbac && self.seen.contains(&key) {
            self.errors.push(Error::new_spanned(
                &meta.path,
                format!("duplicate `{name}`"),
            ));
            return skip_value(meta);
        }
        self.seen.push(key);

        match key {
            Key::Resource => self.resource = Some(type_path(meta, "resource = Widget")?),
            Key::Name => {
                let name = string(meta, "name = \"widgets\"")?.and_then(non_empty);
                self.name = self.errors.keep(name);
            }
            Key::Finalizer => {
                let finalizer =
                    string(meta, "finalizer = \"example.com/cleanup\"")?.and_then(qualified_name);
                self.finalizer = self.errors.keep(finalizer);
            }
            Key::Owns => self.owns = list(meta.value()?, "owns = [ConfigMap, Secret]")?,
            Key::Rbac => {
                if let Some(rule) = self.rbac(meta)? {
                    self.rules.push(rule);
                }
            }
            Key::RequeueAfter => {
                let every = duration_string(meta, "requeue_after = \"5m\"")?;
                self.requeue_after = self.errors.keep(every);
            }
            Key::Backoff => self.backoff = self.backoff(meta)?,
            Key::Concurrency => {
                let value: Expr = meta.value()?.parse()?;
                self.concurrency = self.errors.keep(concurrency(&value));
            }
            Key::Steps => self.steps = list(meta.value()?, "steps = [SkipPaused, MyStep::new(3)]")?,
            Key::SkipObservedGeneration => {
                if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                    self.errors.push(meta.error(
                        "`skip_observed_generation` is a flag: write it alone, without a value",
                    ));
                    skip_value(meta)?;
                }
                self.skip_observed_generation = true;
            }
            Key::Crd => {
                let value: Expr = meta.value()?.parse()?;
                self.crd = self.errors.keep(boolean(&value, "crd = false"));
            }
            Key::Versions => {
                let versions = list(meta.value()?, "versions = [v1alpha1::Widget, v1::Widget]")?;
                self.versions = Some((meta.path.clone(), versions));
            }
            Key::Storage => {
                self.storage = self
                    .errors
                    .keep(string(meta, "storage = \"v1\"")?.and_then(non_empty))
            }
        }
        Ok(())
    }

    /// `rbac(group = "..", resources = [..], verbs = [..])`; `None` when it had errors.
    fn rbac(&mut self, meta: &ParseNestedMeta) -> syn::Result<Option<RbacRule>> {
        const EXAMPLE: &str = "rbac(group = \"apps\", resources = [\"deployments\"], verbs = [\"get\", \"list\", \"watch\"])";
        if !meta.input.peek(token::Paren) {
            return Err(meta.error(format!(
                "`rbac` expects a rule in parentheses, e.g. `{EXAMPLE}`"
            )));
        }
        let mut seen = Vec::new();
        let (mut group, mut resources, mut verbs) = (None, None, None);
        let errors = &mut self.errors;
        meta.parse_nested_meta(|inner| {
            let Some(key) = nested_key(&inner, RBAC_KEYS, &mut seen, errors)? else {
                return Ok(());
            };
            match key {
                "group" => group = errors.keep(string(&inner, "group = \"apps\"")?),
                "resources" => {
                    let list: Vec<Expr> = list(inner.value()?, "resources = [\"deployments\"]")?;
                    let list = non_empty_list(&inner.path, list, "resources = [\"deployments\"]");
                    resources = errors.keep(list.and_then(|list| strings(&list)));
                }
                _ /* verbs */ => {
                    let list: Vec<Expr> = list(inner.value()?, "verbs = [\"get\", \"list\"]")?;
                    let list = non_empty_list(&inner.path, list, "verbs = [\"get\", \"list\"]");
                    verbs = errors.keep(list.and_then(|list| strings(&list)).and_then(known_verbs));
                }
            }
            Ok(())
        })?;

        let missing = |key: &str, hint: &str| {
            meta.error(format!(
                "`rbac(..)` is missing `{key}`: {hint}, e.g. `{EXAMPLE}`"
            ))
        };
        if group.is_none() && !seen.contains(&"group") {
            self.errors.push(missing(
                "group",
                "name the API group, `\"\"` for the core group",
            ));
        }
        if resources.is_none() && !seen.contains(&"resources") {
            self.errors
                .push(missing("resources", "list the resource plurals"));
        }
        if verbs.is_none() && !seen.contains(&"verbs") {
            self.errors.push(missing("verbs", "list the allowed verbs"));
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

    /// `backoff(base = "..", max = "..")`; `None` when it had errors.
    fn backoff(&mut self, meta: &ParseNestedMeta) -> syn::Result<Option<BackoffAttr>> {
        const EXAMPLE: &str = "backoff(base = \"1s\", max = \"5m\")";
        if !meta.input.peek(token::Paren) {
            return Err(meta.error(format!(
                "`backoff` expects its settings in parentheses, e.g. `{EXAMPLE}`"
            )));
        }
        let mut seen = Vec::new();
        let (mut base, mut max) = (None, None);
        let errors = &mut self.errors;
        meta.parse_nested_meta(|inner| {
            let Some(key) = nested_key(&inner, BACKOFF_KEYS, &mut seen, errors)? else {
                return Ok(());
            };
            let example = if key == "base" {
                "base = \"1s\""
            } else {
                "max = \"5m\""
            };
            let value = errors.keep(duration_string(&inner, example)?);
            if key == "base" {
                base = value.map(|millis| (millis, inner.path.clone()));
            } else {
                max = value;
            }
            Ok(())
        })?;

        for key in BACKOFF_KEYS {
            if !seen.contains(key) {
                self.errors.push(meta.error(format!(
                    "`backoff(..)` is missing `{key}`: give both the first delay and the longest, e.g. `{EXAMPLE}`"
                )));
            }
        }
        let (Some((base, base_key)), Some(max)) = (base, max) else {
            return Ok(None);
        };
        if base > max {
            self.errors.push(Error::new_spanned(
                base_key,
                "the backoff `base` is longer than its `max`: `base` is the first delay, `max` the longest",
            ));
            return Ok(None);
        }
        Ok(Some(BackoffAttr { base, max }))
    }

    /// The checks that need every argument, and the result.
    fn finish(mut self) -> syn::Result<ControllerAttrs> {
        if self.resource.is_none() {
            self.errors
                .push(Error::new(Span::call_site(), MISSING_RESOURCE));
        }
        let crd = self.crd_source();
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
        })
    }

    fn crd_source(&mut self) -> CrdSource {
        let Some((key, versions)) = self.versions.take() else {
            if let Some(storage) = &self.storage {
                self.errors.push(Error::new_spanned(
                    storage,
                    "`storage` picks the stored version among `versions = [..]`: add `versions` or remove `storage`",
                ));
            }
            return if self.crd == Some(false) {
                CrdSource::None
            } else {
                CrdSource::Derived
            };
        };
        if self.crd == Some(false) {
            self.errors.push(Error::new_spanned(
                &key,
                "`versions` builds the CRD from its versions, but `crd = false` says there is none: remove one of the two",
            ));
        }
        if versions.is_empty() {
            self.errors.push(Error::new_spanned(
                &key,
                "`versions` lists no type: name one type per version, e.g. `versions = [v1alpha1::Widget, v1::Widget]`",
            ));
        }
        match self.storage.take() {
            Some(storage) => CrdSource::Merged { versions, storage },
            None => {
                self.errors.push(Error::new_spanned(
                    &key,
                    "`versions` needs `storage = \"<version>\"`: the version the API server stores, e.g. `storage = \"v1\"`",
                ));
                CrdSource::Derived
            }
        }
    }
}

/// The key of a nested `key = value`, or `None` (error recorded, value skipped) for an unknown
/// or repeated one.
fn nested_key<'k>(
    meta: &ParseNestedMeta,
    keys: &[&'k str],
    seen: &mut Vec<&'k str>,
    errors: &mut Errors,
) -> syn::Result<Option<&'k str>> {
    let name = meta
        .path
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_default();
    let Some(key) = keys.iter().copied().find(|key| *key == name) else {
        errors.push(unknown_key(&meta.path, keys));
        skip_value(meta)?;
        return Ok(None);
    };
    if seen.contains(&key) {
        errors.push(Error::new_spanned(&meta.path, format!("duplicate `{key}`")));
        skip_value(meta)?;
        return Ok(None);
    }
    seen.push(key);
    Ok(Some(key))
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
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
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

/// The key name as written in examples: everything before ` =` or `(`.
fn key_of(example: &str) -> &str {
    example.split([' ', '(']).next().unwrap_or(example)
}

/// `key = Type`.
fn type_path(meta: &ParseNestedMeta, example: &str) -> syn::Result<Path> {
    let value = meta.value()?;
    value.parse().map_err(|error| {
        Error::new(
            error.span(),
            format!("`{}` expects a type, e.g. `{example}`", key_of(example)),
        )
    })
}

/// `key = "string"`: the outer error stops parsing, the inner one is recorded.
fn string(meta: &ParseNestedMeta, example: &str) -> syn::Result<syn::Result<LitStr>> {
    text(meta, "a string", example)
}

/// `key = "duration"`, checked by [`millis`].
fn duration_string(meta: &ParseNestedMeta, example: &str) -> syn::Result<syn::Result<u64>> {
    let lit = text(
        meta,
        "a duration string (a whole number and a unit: ms, s, m or h)",
        example,
    )?;
    Ok(lit.and_then(|lit| millis(&lit)))
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
fn list<T: Parse>(input: ParseStream, example: &str) -> syn::Result<Vec<T>> {
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

fn non_empty_list<T>(key: &Path, list: Vec<T>, example: &str) -> syn::Result<Vec<T>> {
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

fn strings(list: &[Expr]) -> syn::Result<Vec<LitStr>> {
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

fn non_empty(lit: LitStr) -> syn::Result<LitStr> {
    if lit.value().is_empty() {
        return Err(Error::new_spanned(lit, "expected a non-empty string"));
    }
    Ok(lit)
}

fn known_verbs(verbs: Vec<LitStr>) -> syn::Result<Vec<LitStr>> {
    let mut errors = Errors::default();
    for verb in &verbs {
        let value = verb.value();
        if !KNOWN_VERBS.contains(&value.as_str()) {
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
fn qualified_name(lit: LitStr) -> syn::Result<LitStr> {
    let value = lit.value();
    let problem = match value.split_once('/') {
        None => Some("it has no `/`".to_owned()),
        Some(("", _)) => Some("the domain before `/` is empty".to_owned()),
        Some((_, "")) => Some("the name after `/` is empty".to_owned()),
        Some((domain, name)) => {
            let domain_ok = domain.len() <= 253 && domain.split('.').all(is_dns_label);
            let name_ok = name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !domain_ok {
                Some(format!(
                    "`{domain}` is not a DNS domain (lowercase letters, digits, `-` and `.`)"
                ))
            } else if !name_ok {
                Some(format!(
                    "`{name}` is not a valid name (at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit)"
                ))
            } else {
                None
            }
        }
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

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn millis(lit: &LitStr) -> syn::Result<u64> {
    duration::parse_millis(&lit.value()).map_err(|invalid| {
        Error::new_spanned(
            lit,
            format!("invalid duration \"{}\": {invalid}", lit.value()),
        )
    })
}

fn concurrency(value: &Expr) -> syn::Result<u16> {
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

fn boolean(value: &Expr, example: &str) -> syn::Result<bool> {
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

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::*;

    fn parse(args: TokenStream) -> ControllerAttrs {
        match ControllerAttrs::parse(args) {
            Ok(attrs) => attrs,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    fn errors(args: TokenStream) -> Vec<String> {
        match ControllerAttrs::parse(args) {
            Ok(_) => panic!("expected errors"),
            Err(error) => error.into_iter().map(|error| error.to_string()).collect(),
        }
    }

    fn text(tokens: impl ToTokens) -> String {
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
        match attrs.crd {
            CrdSource::Merged { versions, storage } => {
                assert_eq!(
                    versions.iter().map(text).collect::<Vec<_>>(),
                    ["v1alpha1 :: Widget", "v1 :: Widget"]
                );
                assert_eq!(storage.value(), "v1");
            }
            _ => panic!("expected merged versions"),
        }
    }

    #[test]
    fn only_resource() {
        let attrs = parse(quote!(resource = Widget));
        assert!(attrs.name.is_none() && attrs.finalizer.is_none() && attrs.backoff.is_none());
        assert!(attrs.owns.is_empty() && attrs.rules.is_empty() && attrs.steps.is_empty());
        assert!(!attrs.skip_observed_generation);
        assert!(matches!(attrs.crd, CrdSource::Derived));
        assert!(matches!(
            parse(quote!(resource = ConfigMap, crd = false)).crd,
            CrdSource::None
        ));
        assert!(matches!(
            parse(quote!(crd = true, resource = Widget)).crd,
            CrdSource::Derived
        ));
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
                format!(
                    "unknown key `finalzer` (did you mean `finalizer`?); expected one of: {names}"
                ),
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
            }),
            [
                "`finalizer` expects a string, e.g. `finalizer = \"example.com/cleanup\"`",
                "`requeue_after` expects a duration string (a whole number and a unit: ms, s, m or h), e.g. `requeue_after = \"5m\"`",
                "`name` expects a string, e.g. `name = \"widgets\"`",
                "`concurrency` expects a whole number, e.g. `concurrency = 4` (0 means no limit)",
                "`crd` expects `true` or `false`, e.g. `crd = false`",
                "`skip_observed_generation` is a flag: write it alone, without a value",
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

    #[test]
    fn versions_and_storage_go_together() {
        let needs_storage = "`versions` needs `storage = \"<version>\"`: the version the API server stores, e.g. `storage = \"v1\"`";
        assert_eq!(
            errors(quote!(resource = Widget, versions = [v1::Widget])),
            [needs_storage]
        );
        assert_eq!(
            errors(quote!(resource = Widget, storage = "v1")),
            [
                "`storage` picks the stored version among `versions = [..]`: add `versions` or remove `storage`"
            ]
        );
        assert_eq!(
            errors(quote!(
                resource = Widget,
                crd = false,
                versions = [v1::Widget],
                storage = "v1"
            )),
            [
                "`versions` builds the CRD from its versions, but `crd = false` says there is none: remove one of the two"
            ]
        );
        assert_eq!(
            errors(quote!(resource = Widget, versions = [], storage = "v1")),
            [
                "`versions` lists no type: name one type per version, e.g. `versions = [v1alpha1::Widget, v1::Widget]`"
            ]
        );
    }

    #[test]
    fn rbac_and_backoff_need_every_part() {
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
        assert_eq!(
            errors(quote!(resource = Widget, rbac = "get")),
            [
                "`rbac` expects a rule in parentheses, e.g. `rbac(group = \"apps\", resources = [\"deployments\"], verbs = [\"get\", \"list\", \"watch\"])`"
            ]
        );
    }
}
