//! DNS-1123 labels and subdomains, and qualified names, as the Kubernetes API server checks
//! them.
//!
//! - A **label** (namespaces, most object names the SDK derives, an operator's name): at most
//!   63 characters, lowercase ASCII letters, digits and `-`, starting and ending with a letter
//!   or digit.
//! - A **subdomain** (API groups, Lease names, the prefix of a finalizer): at most 253
//!   characters, labels joined by `.`. As in the API server, the 63-character limit applies to
//!   the whole of a label name, not to each part of a subdomain.
//! - A **qualified name** (finalizers, label keys): an optional subdomain and `/`, then a name
//!   of at most 63 ASCII letters, digits, `-`, `_` and `.`, starting and ending with a letter or
//!   digit.

use std::fmt;

/// The longest DNS-1123 label.
pub const LABEL_MAX: usize = 63;
/// The longest DNS-1123 subdomain.
pub const SUBDOMAIN_MAX: usize = 253;
/// The longest name part of a qualified name.
pub const QUALIFIED_NAME_MAX: usize = 63;

/// Which form a name was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A DNS-1123 label.
    Label,
    /// A DNS-1123 subdomain.
    Subdomain,
}

/// What is wrong with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The name is empty.
    Empty,
    /// The name has `len` characters, more than the form allows.
    TooLong {
        /// The name's length in bytes (every allowed character is one byte).
        len: usize,
    },
    /// The name holds a character the form does not allow.
    Character(char),
    /// The name (or, in a subdomain, a part between dots) does not start and end with a
    /// letter or digit.
    Edge,
}

/// A name that is not a DNS-1123 label or subdomain, and why; its `Display` is one sentence
/// naming the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsError {
    form: Form,
    problem: Problem,
}

impl DnsError {
    /// The form the name was checked against.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The rule the name breaks.
    pub fn problem(&self) -> Problem {
        self.problem
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (form, max, allowed) = match self.form {
            Form::Label => ("label", LABEL_MAX, "lowercase letters, digits and `-`"),
            Form::Subdomain => (
                "subdomain",
                SUBDOMAIN_MAX,
                "lowercase letters, digits, `-` and `.`",
            ),
        };
        write!(f, "a Kubernetes DNS-1123 {form} ")?;
        match (self.problem, self.form) {
            (Problem::Empty, _) => f.write_str("cannot be empty"),
            (Problem::TooLong { len }, _) => {
                write!(f, "has at most {max} characters, this has {len}")
            }
            (Problem::Character(found), _) => write!(f, "holds only {allowed}, found `{found}`"),
            (Problem::Edge, Form::Label) => f.write_str("starts and ends with a letter or digit"),
            (Problem::Edge, Form::Subdomain) => f.write_str(
                "is labels joined by `.`, each starting and ending with a letter or digit",
            ),
        }
    }
}

impl std::error::Error for DnsError {}

/// Checks that `value` is a DNS-1123 label.
///
/// ```
/// use bonny_rules::dns::check_label;
/// assert!(check_label("widget-operator").is_ok());
/// assert_eq!(
///     check_label("Widget").unwrap_err().to_string(),
///     "a Kubernetes DNS-1123 label holds only lowercase letters, digits and `-`, found `W`",
/// );
/// ```
///
/// # Errors
/// [`DnsError`] naming the first rule `value` breaks.
pub fn check_label(value: &str) -> Result<(), DnsError> {
    check(value, Form::Label)
}

/// Checks that `value` is a DNS-1123 subdomain.
///
/// ```
/// use bonny_rules::dns::check_subdomain;
/// assert!(check_subdomain("widgets.example.com").is_ok());
/// assert!(check_subdomain("example..com").is_err());
/// ```
///
/// # Errors
/// [`DnsError`] naming the first rule `value` breaks.
pub fn check_subdomain(value: &str) -> Result<(), DnsError> {
    check(value, Form::Subdomain)
}

/// Whether `value` is a DNS-1123 label.
pub fn is_label(value: &str) -> bool {
    check_label(value).is_ok()
}

/// Whether `value` is a DNS-1123 subdomain.
pub fn is_subdomain(value: &str) -> bool {
    check_subdomain(value).is_ok()
}

/// Whether `name` is the name part of a qualified name (what follows the `/` of a finalizer
/// such as `example.com/cleanup`).
///
/// ```
/// use bonny_rules::dns::is_qualified_name_part;
/// assert!(is_qualified_name_part("Clean_up.v2"));
/// assert!(!is_qualified_name_part("-cleanup"));
/// ```
pub fn is_qualified_name_part(name: &str) -> bool {
    name.len() <= QUALIFIED_NAME_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn check(value: &str, form: Form) -> Result<(), DnsError> {
    let fail = |problem| Err(DnsError { form, problem });
    let (max, dots) = match form {
        Form::Label => (LABEL_MAX, false),
        Form::Subdomain => (SUBDOMAIN_MAX, true),
    };
    if value.is_empty() {
        return fail(Problem::Empty);
    }
    if let Some(found) = value.chars().find(|&c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
    }) {
        return fail(Problem::Character(found));
    }
    if value.len() > max {
        return fail(Problem::TooLong { len: value.len() });
    }
    let alphanumeric_edges = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    if !value.split('.').all(alphanumeric_edges) {
        return fail(Problem::Edge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn problem(result: Result<(), DnsError>) -> Option<Problem> {
        result.err().map(|error| error.problem())
    }

    #[test]
    fn labels() {
        for good in ["a", "widget-operator", "db2", "0", &"x".repeat(63)] {
            assert_eq!(check_label(good), Ok(()), "{good}");
        }
        assert_eq!(problem(check_label("")), Some(Problem::Empty));
        assert_eq!(
            problem(check_label(&"x".repeat(64))),
            Some(Problem::TooLong { len: 64 })
        );
        assert_eq!(problem(check_label("a.b")), Some(Problem::Character('.')));
        assert_eq!(problem(check_label("Ab")), Some(Problem::Character('A')));
        assert_eq!(problem(check_label("é")), Some(Problem::Character('é')));
        for edge in ["-a", "a-", "-", "---"] {
            assert_eq!(problem(check_label(edge)), Some(Problem::Edge), "{edge}");
        }
    }

    #[test]
    fn subdomains() {
        for good in [
            "example.com",
            "a",
            "apps.my-team.example.com",
            &format!("{}.com", "x".repeat(70)),
            "a.".repeat(126).trim_end_matches('.'),
        ] {
            assert_eq!(check_subdomain(good), Ok(()), "{good}");
        }
        assert_eq!(
            problem(check_subdomain(&"a".repeat(254))),
            Some(Problem::TooLong { len: 254 })
        );
        for edge in ["example..com", ".com", "com.", "a.-b", "a-.b", "."] {
            assert_eq!(
                problem(check_subdomain(edge)),
                Some(Problem::Edge),
                "{edge}"
            );
        }
        assert_eq!(
            problem(check_subdomain("Example.com")),
            Some(Problem::Character('E'))
        );
        assert_eq!(
            problem(check_subdomain("a_b.com")),
            Some(Problem::Character('_'))
        );
    }

    #[test]
    fn messages() {
        let message = |result: Result<(), DnsError>| result.map_err(|e| e.to_string());
        assert_eq!(
            message(check_label("")),
            Err("a Kubernetes DNS-1123 label cannot be empty".to_owned())
        );
        assert_eq!(
            message(check_label(&"a".repeat(64))),
            Err("a Kubernetes DNS-1123 label has at most 63 characters, this has 64".to_owned())
        );
        assert_eq!(
            message(check_label("-a")),
            Err("a Kubernetes DNS-1123 label starts and ends with a letter or digit".to_owned())
        );
        assert_eq!(
            message(check_subdomain("a_b")),
            Err("a Kubernetes DNS-1123 subdomain holds only lowercase letters, digits, `-` and `.`, found `_`".to_owned())
        );
        assert_eq!(
            message(check_subdomain("a..b")),
            Err("a Kubernetes DNS-1123 subdomain is labels joined by `.`, each starting and ending with a letter or digit".to_owned())
        );
    }

    #[test]
    fn qualified_name_parts() {
        for good in ["cleanup", "Clean_up.v2", "a", &"A".repeat(63)] {
            assert!(is_qualified_name_part(good), "{good}");
        }
        for bad in ["", "-cleanup", "cleanup.", "a/b", "a b", &"A".repeat(64)] {
            assert!(!is_qualified_name_part(bad), "{bad}");
        }
    }

    proptest! {
        /// Any string gets a verdict, and what passes holds only what the form allows.
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if is_label(&text) {
                prop_assert!(is_subdomain(&text));
                prop_assert!(text.len() <= LABEL_MAX);
            }
            if is_subdomain(&text) {
                prop_assert!(text.len() <= SUBDOMAIN_MAX);
                prop_assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
            }
        }

        /// Labels joined by dots are a subdomain as long as the whole fits.
        #[test]
        fn labels_join_into_subdomains(labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 1..6)) {
            for label in &labels {
                prop_assert!(is_label(label), "{}", label);
            }
            let joined = labels.join(".");
            prop_assert_eq!(is_subdomain(&joined), joined.len() <= SUBDOMAIN_MAX);
        }
    }
}
