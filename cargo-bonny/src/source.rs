//! Finding a custom resource in an operator crate's sources: the `#[kube(...)]` attribute that
//! declares a Kind, and the spec struct it sits on, read as text (enough for the code Cargo
//! Bonny and most authors write: one attribute, a struct with named fields).

use std::path::{Path, PathBuf};

use crate::error::Error;

/// A custom resource as its module declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The top-level module (file `src/<module>.rs`) that declares it.
    pub module: String,
    /// That file.
    pub file: PathBuf,
    /// The API group of the `#[kube]` attribute, e.g. `example.com`.
    pub group: String,
    /// The version of the `#[kube]` attribute, e.g. `v1`.
    pub version: String,
    /// The spec struct's name, e.g. `WidgetSpec`.
    pub spec: String,
    /// Its field names, in order.
    pub fields: Vec<String>,
    /// The status type named by `status = "..."`, if any.
    pub status: Option<String>,
    /// The text from the `#[derive(...)]` before the attribute to the end of the spec struct.
    pub declaration: String,
}

impl Resource {
    /// The declaration with its `#[kube]` attribute's version replaced by `version`.
    pub fn declaration_as(&self, version: &str) -> String {
        let text = &self.declaration;
        let Some(attr) = text.find("#[kube(") else {
            return text.clone();
        };
        let Some((start, end)) = value_span(&text[attr..], "version") else {
            return text.clone();
        };
        format!("{}{version}{}", &text[..attr + start], &text[attr + end..])
    }

    /// The `use` lines for the derives the declaration names unqualified.
    pub fn derive_imports(&self) -> String {
        let derive = self.declaration.split(")]").next().unwrap_or_default();
        let bare = |name: &str| {
            derive.match_indices(name).any(|(at, _)| {
                let before = derive[..at].trim_end();
                before.ends_with('(') || before.ends_with(',')
            })
        };
        let mut imports = String::new();
        if bare("CustomResource") {
            imports.push_str("use kube::CustomResource;\n");
        }
        if bare("JsonSchema") {
            imports.push_str("use schemars::JsonSchema;\n");
        }
        match (bare("Deserialize"), bare("Serialize")) {
            (true, true) => imports.push_str("use serde::{Deserialize, Serialize};\n"),
            (true, false) => imports.push_str("use serde::Deserialize;\n"),
            (false, true) => imports.push_str("use serde::Serialize;\n"),
            (false, false) => {}
        }
        imports
    }
}

/// Find the resource of Kind `kind` in the top-level modules `src/*.rs` under `root`.
///
/// # Errors
/// [`Error::UnknownKind`] naming the Kinds found instead; [`Error::UnreadableSpec`] when the
/// attribute is found but its struct cannot be read.
pub fn find(root: &Path, kind: &str) -> Result<Resource, Error> {
    let src = root.join("src");
    let entries = std::fs::read_dir(&src).map_err(Error::io("read the directory", &src))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    let mut known = Vec::new();
    let mut found = None;
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(Error::io("read", &file))?;
        // A served version `gen version` wrote converts through the hub: skip it when the
        // hub is found too.
        let spoke = text.contains("::hub().spoke::<");
        for attr in kube_attributes(&text) {
            let Some(name) = string_value(attr.text, "kind") else {
                continue;
            };
            if name != kind {
                known.push(name);
                continue;
            }
            let better = match &found {
                None => true,
                Some((_, _, _, found_spoke)) => *found_spoke && !spoke,
            };
            if !better {
                continue;
            }
            found = Some((text.clone(), attr.start, file.clone(), spoke));
        }
    }
    if let Some((text, start, file, _)) = found {
        let module = file
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or_default()
            .to_owned();
        let attrs = kube_attributes(&text);
        let attr = attrs.iter().find(|attr| attr.start == start);
        return attr
            .and_then(|attr| parse(&text, attr, module, file.clone()))
            .ok_or(Error::UnreadableSpec {
                kind: kind.to_owned(),
                file,
            });
    }
    known.sort();
    known.dedup();
    Err(Error::UnknownKind {
        kind: kind.to_owned(),
        src,
        known,
    })
}

/// One `#[kube(...)]` attribute: its text (between the parentheses) and where it ends.
struct Attribute<'a> {
    start: usize,
    end: usize,
    text: &'a str,
}

fn kube_attributes(text: &str) -> Vec<Attribute<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("#[kube(") {
        let start = from + offset;
        let open = start + "#[kube(".len();
        let Some(close) = matching(text, open, '(', ')') else {
            break;
        };
        found.push(Attribute {
            start,
            end: close + 1,
            text: &text[open..close],
        });
        from = close + 1;
    }
    found
}

/// The index of the `close` that ends the group opened just before `from`, skipping strings.
fn matching(text: &str, from: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (index, c) in text[from..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            c if c == open => depth += 1,
            c if c == close => {
                if depth == 0 {
                    return Some(from + index);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

/// The string value of `key = "..."` in an attribute's text.
fn string_value(attr: &str, key: &str) -> Option<String> {
    value_span(attr, key).map(|(start, end)| attr[start..end].to_owned())
}

/// Where the string value of `key = "..."` is in an attribute's text (inside the quotes).
fn value_span(attr: &str, key: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(index) = attr[from..].find(key) {
        let at = from + index;
        from = at + key.len();
        let before = attr[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &attr[from..];
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start().strip_prefix('"')?;
        let start = attr.len() - value.len();
        let end = start + value.find('"')?;
        return Some((start, end));
    }
    None
}

fn parse(text: &str, attr: &Attribute<'_>, module: String, file: PathBuf) -> Option<Resource> {
    let group = string_value(attr.text, "group")?;
    let version = string_value(attr.text, "version")?;
    let status = string_value(attr.text, "status");
    let derive = text[..attr.start].rfind("#[derive(")?;
    let after = &text[attr.end..];
    let struct_at = after.find("struct ")?;
    let name_start = attr.end + struct_at + "struct ".len();
    let name: String = text[name_start..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let open = name_start + text[name_start..].find('{')?;
    if text[name_start..open].contains([';', '(', '<']) {
        return None;
    }
    let close = matching(text, open + 1, '{', '}')?;
    let fields = field_names(&text[open + 1..close]);
    if name.is_empty() || fields.is_empty() {
        return None;
    }
    Some(Resource {
        module,
        file,
        group,
        version,
        spec: name,
        fields,
        status,
        declaration: text[derive..=close].to_owned(),
    })
}

/// The names of a struct's fields, from the text between its braces.
fn field_names(body: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0i32;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if depth == 0 && !trimmed.starts_with("//") && !trimmed.starts_with('#') {
            let field = trimmed
                .strip_prefix("pub(crate) ")
                .or_else(|| trimmed.strip_prefix("pub "))
                .unwrap_or(trimmed);
            if let Some((name, _)) = field.split_once(':') {
                let name = name.trim();
                let bare = name.strip_prefix("r#").unwrap_or(name);
                if !bare.is_empty() && bare.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    names.push(name.to_owned());
                }
            }
        }
        if !trimmed.starts_with("//") {
            for c in trimmed.chars() {
                match c {
                    '(' | '[' | '{' | '<' => depth += 1,
                    ')' | ']' | '}' | '>' => depth -= 1,
                    _ => {}
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDGET: &str = r#"
use kube::CustomResource;

/// Docs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    /// Written to the ConfigMap under `message`.
    pub message: String,
    #[serde(default)]
    pub labels: BTreeMap<String,
        String>,
    pub r#type: Option<u32>,
}

pub struct WidgetStatus {}
"#;

    #[test]
    fn reads_the_attribute_and_the_spec() {
        let attrs = kube_attributes(WIDGET);
        assert_eq!(attrs.len(), 1);
        let resource =
            parse(WIDGET, &attrs[0], "widget".into(), "src/widget.rs".into()).expect("parsed");
        assert_eq!(resource.version, "v1");
        assert_eq!(resource.spec, "WidgetSpec");
        assert_eq!(resource.status.as_deref(), Some("WidgetStatus"));
        assert_eq!(resource.fields, ["message", "labels", "r#type"]);
        assert!(resource.declaration.starts_with("#[derive(CustomResource"));
        assert!(resource.declaration.ends_with("Option<u32>,\n}"));
    }

    #[test]
    fn the_declaration_gets_the_new_version_and_its_imports() {
        let attrs = kube_attributes(WIDGET);
        let resource =
            parse(WIDGET, &attrs[0], "widget".into(), "src/widget.rs".into()).expect("parsed");
        let declaration = resource.declaration_as("v1alpha1");
        assert!(
            declaration.contains("#[kube(group = \"example.com\", version = \"v1alpha1\", kind"),
            "{declaration}"
        );
        assert_eq!(
            resource.derive_imports(),
            "use kube::CustomResource;\nuse schemars::JsonSchema;\nuse serde::{Deserialize, Serialize};\n"
        );
        let qualified = Resource {
            declaration: "#[derive(kube::CustomResource, serde::Serialize, Debug)]".into(),
            ..resource
        };
        assert_eq!(qualified.derive_imports(), "");
    }

    #[test]
    fn string_values_match_whole_keys() {
        let attr = r#"group = "a.b", version = "v2", kind = "Gadget", subresource_kind = "X""#;
        assert_eq!(string_value(attr, "kind").as_deref(), Some("Gadget"));
        assert_eq!(string_value(attr, "version").as_deref(), Some("v2"));
        assert_eq!(string_value(attr, "status"), None);
    }

    #[test]
    fn a_tuple_struct_is_not_read() {
        let text = "#[derive(CustomResource)]\n#[kube(version = \"v1\", kind = \"W\")]\npub struct WSpec(u32);\nfn f() { }\n";
        let attrs = kube_attributes(text);
        assert_eq!(parse(text, &attrs[0], "w".into(), "w.rs".into()), None);
    }

    #[test]
    fn finds_kinds_across_files_and_names_the_others() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("src")).expect("src");
        std::fs::write(dir.path().join("src/widget.rs"), WIDGET).expect("write");
        std::fs::write(dir.path().join("src/lib.rs"), "pub mod widget;\n").expect("write");
        let found = find(dir.path(), "Widget").expect("found");
        assert_eq!(found.module, "widget");
        let spoke = WIDGET.replace("\"v1\"", "\"v1alpha1\"")
            + "fn conversion() { Conversion::<hub::Widget>::hub().spoke::<Widget>() }";
        std::fs::write(dir.path().join("src/a_widget_v1alpha1.rs"), spoke).expect("write");
        let found = find(dir.path(), "Widget").expect("found");
        assert_eq!(
            (found.module.as_str(), found.version.as_str()),
            ("widget", "v1")
        );
        let err = find(dir.path(), "Gadget").expect_err("unknown");
        assert!(
            matches!(&err, Error::UnknownKind { known, .. } if known == &["Widget"]),
            "{err}"
        );
    }
}
