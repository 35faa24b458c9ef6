//! The templates, compiled into the binary, and the `{{placeholder}}` substitution that fills
//! them.

use crate::error::Error;

/// One template: where it goes in the generated crate and its text.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// The path of the generated file, relative to the crate root.
    pub path: &'static str,
    /// The text with `{{placeholder}}`s.
    pub text: &'static str,
}

macro_rules! template {
    ($path:literal, $file:literal) => {
        Template {
            path: $path,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $file)),
        }
    };
}

/// Every file of a new operator crate except the resource module, whose path depends on the
/// Kind ([`RESOURCE`]).
pub const NEW_CRATE: &[Template] = &[
    template!("Cargo.toml", "Cargo.toml.tmpl"),
    template!("src/main.rs", "main.rs.tmpl"),
    template!("src/lib.rs", "lib.rs.tmpl"),
    template!("tests/controller.rs", "controller_test.rs.tmpl"),
    template!("Dockerfile", "Dockerfile.tmpl"),
    template!(".dockerignore", "dockerignore.tmpl"),
    template!(".gitignore", "gitignore.tmpl"),
    template!("README.md", "README.md.tmpl"),
];

/// A resource and its controller; written to `src/{{module}}.rs`.
pub const RESOURCE: Template = template!("src/{{module}}.rs", "resource.rs.tmpl");

/// A resource's validator and defaulter; written to `src/{{webhook_module}}.rs`.
pub const WEBHOOK: Template = template!("src/{{webhook_module}}.rs", "webhook.rs.tmpl");

/// Another served version of a resource and its conversion; written to
/// `src/{{version_module}}.rs`.
pub const VERSION: Template = template!("src/{{version_module}}.rs", "version.rs.tmpl");

/// The values substituted for placeholders, by name.
#[derive(Debug, Clone, Default)]
pub struct Values(Vec<(&'static str, String)>);

impl Values {
    /// Set `name` to `value` (replacing an earlier value).
    #[must_use]
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.0.iter_mut().find(|(existing, _)| *existing == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
        self
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(existing, _)| *existing == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Replace every `{{name}}` in `text` by its value. Substituted values are not scanned again.
///
/// # Errors
/// [`Error::Template`] naming the template and a placeholder that has no value or is not
/// closed; the templates are part of the binary, so this is a bug in `cargo bonny`.
pub fn render(template: &str, text: &str, values: &Values) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let unknown = |placeholder: &str| Error::Template {
            template: template.to_owned(),
            placeholder: placeholder.to_owned(),
        };
        let end = after
            .find("}}")
            .ok_or_else(|| unknown(after.lines().next().unwrap_or_default()))?;
        let name = &after[..end];
        out.push_str(values.get(name).ok_or_else(|| unknown(name))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values::default()
            .with("name", "widget-operator")
            .with("crate", "widget_operator")
            .with("kind", "Widget")
            .with("module", "widget")
            .with("singular", "widget")
            .with("plural", "widgets")
            .with("group", "example.com")
            .with("webhook_module", "widget_webhook")
            .with("version_module", "widget_v1alpha1")
            .with("version", "v1alpha1")
            .with("hub_version", "v1")
            .with("spec", "WidgetSpec")
            .with("hub_spec", "WidgetSpec")
            .with("spec_defaults", "")
            .with("tier_label", "example.com/tier")
            .with("declaration", "")
            .with("imports", "")
            .with("status_import", "")
            .with("status_field", "")
            .with("to_hub", "")
            .with("from_hub", "")
            .with("bonny_dep", "\"0.1\"")
            .with(
                "bonny_dev_dep",
                "{ version = \"0.1\", features = [\"testing\"] }",
            )
    }

    #[test]
    fn placeholders_are_replaced_once() {
        let values = Values::default().with("a", "{{b}}").with("b", "x");
        assert_eq!(
            render("t", "<{{a}}|{{b}}>", &values).ok().as_deref(),
            Some("<{{b}}|x>")
        );
        assert_eq!(
            render("t", "no placeholders {}", &values).ok().as_deref(),
            Some("no placeholders {}")
        );
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        let err = render("t", "a {{nope}} b", &values()).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "bug in cargo bonny: template t has no value for {{nope}}"
        );
        assert!(render("t", "a {{open", &values()).is_err());
    }

    #[test]
    fn every_template_renders_completely() {
        let values = values();
        for template in NEW_CRATE.iter().chain([&RESOURCE, &WEBHOOK, &VERSION]) {
            let path = render(template.path, template.path, &values).expect("path");
            let text = render(template.path, template.text, &values).expect("text");
            assert!(!text.contains("{{") && !text.contains("}}"), "{path}");
            assert!(!path.contains('{'), "{path}");
        }
    }

    #[test]
    fn the_resource_template_names_the_kind_everywhere() {
        let text = render("resource", RESOURCE.text, &values()).expect("render");
        for expected in [
            "kind = \"Widget\"",
            "group = \"example.com\"",
            "pub struct WidgetSpec",
            "pub struct WidgetStatus",
            "resource = Widget",
            "pub struct WidgetController;",
            "impl Reconcile<Widget> for WidgetController",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    /// The generated Cargo.toml pins the same major versions the SDK is built and tested with.
    #[test]
    fn generated_dependencies_match_the_workspace() {
        let workspace = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
        let generated = render("Cargo.toml", NEW_CRATE[0].text, &values()).expect("render");
        for dep in [
            "kube",
            "k8s-openapi",
            "tokio",
            "tokio-util",
            "serde",
            "serde_json",
            "schemars",
        ] {
            let wanted =
                version_of(workspace, dep).unwrap_or_else(|| panic!("{dep} in the workspace"));
            let found =
                version_of(&generated, dep).unwrap_or_else(|| panic!("{dep} in the template"));
            assert_eq!(found, wanted, "{dep}");
        }
        assert!(generated.contains("\"v1_37\""));
    }

    fn version_of<'a>(manifest: &'a str, dep: &str) -> Option<&'a str> {
        let line = manifest
            .lines()
            .find(|line| line.split('=').next().is_some_and(|key| key.trim() == dep))?;
        let value = line.split_once('=')?.1.trim();
        let value = value
            .strip_prefix("{ version = ")
            .or_else(|| value.strip_prefix('"').map(|_| value))?;
        value.split('"').nth(1)
    }
}
