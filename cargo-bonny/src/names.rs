//! The names a scaffold is built from, checked against the rules of Kubernetes and Cargo, and
//! the forms derived from them (`widget-operator` → crate `widget_operator`, Kind `Widget`,
//! module `widget`).

use std::fmt;

use bonny_rules::dns::{self, LABEL_MAX as DNS_LABEL_MAX};

/// Words that cannot be crate or module names: Rust's keywords (2024 edition, reserved ones
/// included).
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Package names `cargo new` refuses: the standard crates, Cargo's own target directories and
/// names Windows reserves for devices.
const CARGO_RESERVED: &[&str] = &[
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
    "con",
    "prn",
    "aux",
    "nul",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
];

/// Names the generated code imports or defines besides the Kind's own; a Kind equal to one of
/// them would shadow it and the scaffold would not compile.
const TEMPLATE_NAMES: &[&str] = &[
    "Action",
    "Api",
    "Axn",
    "CancellationToken",
    "Condition",
    "ConfigMap",
    "CustomResource",
    "CustomResourceExt",
    "Deserialize",
    "Duration",
    "Instant",
    "JsonSchema",
    "Namespace",
    "ObjectMeta",
    "Operator",
    "PostParams",
    "Reconcile",
    "ReconcileError",
    "Serialize",
    "TestEnv",
];

/// A name that breaks a rule: which name, which rule, and a fixed name when one can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    what: &'static str,
    value: String,
    rule: String,
    suggestion: Option<String>,
}

impl NameError {
    fn new(what: &'static str, value: &str, rule: impl Into<String>) -> Self {
        Self {
            what,
            value: value.to_owned(),
            rule: rule.into(),
            suggestion: None,
        }
    }

    fn suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion.filter(|s| *s != self.value);
        self
    }

    /// The rule that was broken.
    #[cfg(test)]
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// A name that passes every rule, if one could be derived.
    #[cfg(test)]
    pub fn suggestion(&self) -> Option<&str> {
        self.suggestion.as_deref()
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} `{}`: {}", self.what, self.value, self.rule)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, "; try `{suggestion}`")?;
        }
        Ok(())
    }
}

impl std::error::Error for NameError {}

/// Checks an operator name: it names the crate, the binary, the Deployment and the Lease, so it
/// must be a Kubernetes DNS-1123 label and a valid Cargo package name.
pub fn check_operator_name(name: &str) -> Result<(), NameError> {
    operator_name_rule(name).map_err(|rule| {
        NameError::new("operator name", name, rule).suggest(suggest_operator_name(name))
    })
}

fn operator_name_rule(name: &str) -> Result<(), String> {
    dns_label_rule(name)?;
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a crate name cannot start with a digit".into());
    }
    let ident = crate_ident(name);
    if KEYWORDS.contains(&ident.as_str()) {
        return Err(format!(
            "`{ident}` is a Rust keyword, so it cannot name a crate"
        ));
    }
    if CARGO_RESERVED.contains(&ident.as_str()) {
        return Err(format!("`{name}` is reserved by Cargo"));
    }
    Ok(())
}

/// Checks a Kind: PascalCase, usable as a Rust type and (lowercased, plus `s`) as the plural of
/// a CRD.
pub fn check_kind(kind: &str) -> Result<(), NameError> {
    kind_rule(kind).map_err(|rule| NameError::new("Kind", kind, rule).suggest(suggest_kind(kind)))
}

fn kind_rule(kind: &str) -> Result<(), String> {
    let Some(first) = kind.chars().next() else {
        return Err("a Kind cannot be empty".into());
    };
    if !first.is_ascii_uppercase() {
        return Err("a Kind is PascalCase: it starts with an uppercase ASCII letter".into());
    }
    if let Some(bad) = kind.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(format!(
            "a Kind is PascalCase: ASCII letters and digits only, found `{bad}`"
        ));
    }
    if kind.len() >= DNS_LABEL_MAX {
        return Err(format!(
            "a Kind has at most {} characters, so that its plural fits a DNS-1123 label",
            DNS_LABEL_MAX - 1
        ));
    }
    if kind == "Self" || TEMPLATE_NAMES.contains(&kind) {
        return Err(format!(
            "`{kind}` clashes with a name the generated code uses"
        ));
    }
    let module = snake_case(kind);
    if KEYWORDS.contains(&module.as_str()) {
        return Err(format!(
            "its module name `{module}` would be a Rust keyword"
        ));
    }
    Ok(())
}

/// Checks an API group: a DNS-1123 subdomain with at least one dot, as CRDs require.
pub fn check_group(group: &str) -> Result<(), NameError> {
    const WHAT: &str = "API group";
    dns::check_subdomain(group).map_err(|rule| NameError::new(WHAT, group, rule.to_string()))?;
    if !group.contains('.') {
        return Err(NameError::new(
            WHAT,
            group,
            "a CRD's group is a domain with at least one dot",
        )
        .suggest(Some(format!("{group}.example.com"))));
    }
    Ok(())
}

/// Why `value` is not a DNS-1123 label, if it is not one.
fn dns_label_rule(value: &str) -> Result<(), String> {
    dns::check_label(value).map_err(|rule| rule.to_string())
}

/// A valid operator name close to `name`, if one can be made.
fn suggest_operator_name(name: &str) -> Option<String> {
    let mut fixed = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            fixed.push(c);
        } else if !fixed.is_empty() && !fixed.ends_with('-') {
            fixed.push('-');
        }
    }
    let mut fixed = fixed.trim_end_matches('-').to_owned();
    if fixed.is_empty() {
        return None;
    }
    if fixed.starts_with(|c: char| c.is_ascii_digit()) {
        fixed.insert_str(0, "my-");
    }
    let ident = crate_ident(&fixed);
    if KEYWORDS.contains(&ident.as_str()) || CARGO_RESERVED.contains(&ident.as_str()) {
        fixed.push_str("-operator");
    }
    fixed.truncate(DNS_LABEL_MAX);
    let fixed = fixed.trim_end_matches('-').to_owned();
    operator_name_rule(&fixed).is_ok().then_some(fixed)
}

/// A valid Kind close to `kind`, if one can be made.
fn suggest_kind(kind: &str) -> Option<String> {
    let mut fixed = pascal_case(kind);
    if fixed.starts_with(|c: char| c.is_ascii_digit()) {
        fixed.insert_str(0, "My");
    }
    if fixed == "Self"
        || TEMPLATE_NAMES.contains(&fixed.as_str())
        || KEYWORDS.contains(&snake_case(&fixed).as_str())
    {
        fixed.insert_str(0, "My");
    }
    fixed.truncate(DNS_LABEL_MAX - 1);
    kind_rule(&fixed).is_ok().then_some(fixed)
}

/// The Rust identifier of a crate: `widget-operator` → `widget_operator`.
pub fn crate_ident(name: &str) -> String {
    name.replace('-', "_")
}

/// The default Kind of an operator: its name without a trailing `-operator`, in PascalCase.
pub fn default_kind(operator_name: &str) -> String {
    let base = operator_name
        .strip_suffix("-operator")
        .filter(|base| !base.is_empty())
        .unwrap_or(operator_name);
    pascal_case(base)
}

/// `my-cool_app` → `MyCoolApp`: words split at anything but ASCII letters and digits, each
/// word's first letter uppercased, the rest kept.
pub fn pascal_case(value: &str) -> String {
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// `HTTPRoute` → `http_route`, `MyApp2` → `my_app2`: the module name of a Kind.
pub fn snake_case(kind: &str) -> String {
    let chars: Vec<char> = kind.chars().collect();
    let mut snake = String::with_capacity(kind.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_is_lower)
            {
                snake.push('_');
            }
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_operator_names_pass() {
        for name in [
            "widget-operator",
            "a",
            "db2-operator",
            "x".repeat(63).as_str(),
        ] {
            assert_eq!(check_operator_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn each_broken_rule_is_named_with_a_fix() {
        let cases = [
            (
                "Widget_Operator",
                "lowercase letters, digits and `-`, found `W`",
                Some("widget-operator"),
            ),
            ("widget.operator", "found `.`", Some("widget-operator")),
            (
                "-widget",
                "starts and ends with a letter or digit",
                Some("widget"),
            ),
            (
                "widget-",
                "starts and ends with a letter or digit",
                Some("widget"),
            ),
            (
                "2fa-operator",
                "cannot start with a digit",
                Some("my-2fa-operator"),
            ),
            ("fn", "`fn` is a Rust keyword", Some("fn-operator")),
            ("self", "Rust keyword", Some("self-operator")),
            ("test", "reserved by Cargo", Some("test-operator")),
            (
                "proc-macro",
                "reserved by Cargo",
                Some("proc-macro-operator"),
            ),
            ("", "cannot be empty", None),
            ("---", "starts and ends", None),
        ];
        for (name, rule, suggestion) in cases {
            let err = check_operator_name(name).expect_err(name);
            assert!(err.rule().contains(rule), "{name}: {}", err.rule());
            assert_eq!(err.suggestion(), suggestion, "{name}");
        }
        let long = "a".repeat(64);
        let err = check_operator_name(&long).expect_err("too long");
        assert!(
            err.rule().contains("at most 63 characters, this has 64"),
            "{}",
            err.rule()
        );
        assert_eq!(err.suggestion(), Some("a".repeat(63).as_str()));
    }

    #[test]
    fn the_message_says_which_name_which_rule_and_what_to_try() {
        let err = check_operator_name("My Operator").expect_err("space");
        assert_eq!(
            err.to_string(),
            "invalid operator name `My Operator`: a Kubernetes DNS-1123 label holds only lowercase \
             letters, digits and `-`, found `M`; try `my-operator`"
        );
    }

    #[test]
    fn kinds_are_pascal_case_and_do_not_clash() {
        for kind in ["Widget", "HTTPRoute", "Db2Backup", "W"] {
            assert_eq!(check_kind(kind), Ok(()), "{kind}");
        }
        let cases = [
            ("widget", "starts with an uppercase", Some("Widget")),
            ("my-widget", "starts with an uppercase", Some("MyWidget")),
            ("Big_Widget", "found `_`", Some("BigWidget")),
            ("2Widget", "starts with an uppercase", Some("My2Widget")),
            ("ConfigMap", "clashes", Some("MyConfigMap")),
            ("Self", "clashes", Some("MySelf")),
            ("Type", "module name `type`", Some("MyType")),
            ("", "cannot be empty", None),
        ];
        for (kind, rule, suggestion) in cases {
            let err = check_kind(kind).expect_err(kind);
            assert!(err.rule().contains(rule), "{kind}: {}", err.rule());
            assert_eq!(err.suggestion(), suggestion, "{kind}");
        }
        assert_eq!(check_kind(&format!("W{}", "a".repeat(61))), Ok(()));
        let err = check_kind(&format!("W{}", "a".repeat(62))).expect_err("63 characters");
        assert!(
            err.rule().contains("at most 62 characters"),
            "{}",
            err.rule()
        );
    }

    #[test]
    fn groups_are_dotted_subdomains() {
        assert_eq!(check_group("example.com"), Ok(()));
        assert_eq!(check_group("apps.my-team.example.com"), Ok(()));
        let err = check_group("example").expect_err("no dot");
        assert_eq!(err.suggestion(), Some("example.example.com"));
        assert!(check_group("Example.com").is_err());
        assert!(check_group("example..com").is_err());
    }

    #[test]
    fn derived_forms() {
        assert_eq!(default_kind("widget-operator"), "Widget");
        assert_eq!(default_kind("my-cool-app"), "MyCoolApp");
        assert_eq!(default_kind("operator"), "Operator");
        assert_eq!(default_kind("db2-backup-operator"), "Db2Backup");
        assert_eq!(crate_ident("widget-operator"), "widget_operator");
        assert_eq!(snake_case("Widget"), "widget");
        assert_eq!(snake_case("HTTPRoute"), "http_route");
        assert_eq!(snake_case("MyCoolApp"), "my_cool_app");
        assert_eq!(snake_case("Db2Backup"), "db2_backup");
        assert_eq!(snake_case("ABC"), "abc");
    }
}
