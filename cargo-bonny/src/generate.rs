//! `cargo bonny gen controller | webhook | version`: a resource and its controller, its
//! admission webhooks, or another served version with its conversion, added to an existing crate.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    cli::{ControllerArgs, VersionArgs, WebhookArgs},
    error::Error,
    names::{check_group, check_kind, crate_ident, snake_case},
    render::{RESOURCE, Template, VERSION, Values, WEBHOOK, render},
    source::{self, Resource},
};

/// Add `src/<kind>.rs` and declare it in src/lib.rs, after checking that neither exists.
pub fn controller(args: &ControllerArgs) -> Result<(), Error> {
    check_kind(&args.kind)?;
    check_group(&args.group)?;
    let krate = Crate::open(&args.manifest_path)?;
    let module = snake_case(&args.kind);
    krate.check_new(&module)?;

    let values = resource_values(&krate.package, &args.kind, &args.group);
    let written = write_file(&krate.root, &RESOURCE, &values, false)?;
    krate.declare(&module)?;
    println!("Created {written} and declared `pub mod {module};` in src/lib.rs.");
    println!("Register the controller with the operator in src/main.rs:");
    println!(
        "    .controller({}::{module}::{}Controller)",
        crate_ident(&krate.package),
        args.kind
    );
    Ok(())
}

/// Add `src/<kind>_webhook.rs`, a validator and a defaulter of an existing resource with their
/// tests, and declare it in src/lib.rs.
pub fn webhook(args: &WebhookArgs) -> Result<(), Error> {
    check_kind(&args.kind)?;
    let krate = Crate::open(&args.manifest_path)?;
    let resource = source::find(&krate.root, &args.kind)?;
    let values = webhook_values(&krate.package, &args.kind, &resource);
    let module = format!("{}_webhook", resource.module);
    krate.check_new(&module)?;

    let written = write_file(&krate.root, &WEBHOOK, &values, false)?;
    krate.declare(&module)?;
    let path = format!("{}::{module}", crate_ident(&krate.package));
    println!("Created {written} and declared `pub mod {module};` in src/lib.rs.");
    println!("Register the webhooks with the operator in src/main.rs:");
    println!("    .webhooks(");
    println!("        bonny::webhook::Webhooks::new()");
    println!("            .validate({path}::validate)");
    println!("            .defaults({path}::default),");
    println!("    )");
    println!(
        "(an operator has one `.webhooks(..)`: if it has one already, add the two calls to it)"
    );
    Ok(())
}

/// Add `src/<kind>_<version>.rs`, another served version of an existing resource with the
/// `From` impls to and from the stored one and their conversion, and declare it in src/lib.rs.
pub fn version(args: &VersionArgs) -> Result<(), Error> {
    check_kind(&args.kind)?;
    check_version(&args.version)?;
    let krate = Crate::open(&args.manifest_path)?;
    let resource = source::find(&krate.root, &args.kind)?;
    if resource.version == args.version {
        return Err(Error::VersionExists {
            kind: args.kind.clone(),
            version: resource.version,
            file: resource.file,
        });
    }
    let values = version_values(&krate.package, &args.kind, &args.version, &resource);
    let module = format!("{}_{}", resource.module, args.version);
    krate.check_new(&module)?;

    let written = write_file(&krate.root, &VERSION, &values, false)?;
    krate.declare(&module)?;
    let krate_ident = crate_ident(&krate.package);
    let hub_file = resource
        .file
        .strip_prefix(&krate.root)
        .unwrap_or(&resource.file)
        .display()
        .to_string();
    println!("Created {written} and declared `pub mod {module};` in src/lib.rs.");
    println!(
        "Its spec is a copy of the {} one: import there any type it uses from {hub_file}.",
        resource.version
    );
    println!(
        "Serve both versions in one CRD: in the controller's #[bonny::controller(...)] in {hub_file}, add"
    );
    println!(
        "    versions = [crate::{module}::{}, {}], storage = \"{}\"",
        args.kind, args.kind, resource.version
    );
    println!("and serve the conversion webhook from the operator in src/main.rs:");
    println!(
        "    .webhooks(bonny::webhook::Webhooks::new().convert({krate_ident}::{module}::conversion()))"
    );
    println!(
        "(an operator has one `.webhooks(..)`: if it has one already, add `.convert(..)` to it)"
    );
    Ok(())
}

/// An operator crate: where it is, its package name and its library.
struct Crate {
    root: PathBuf,
    package: String,
    lib_path: PathBuf,
    lib: String,
}

impl Crate {
    /// The crate of `manifest_path`, which must have a `[package]` name and a src/lib.rs.
    fn open(manifest_path: &Path) -> Result<Self, Error> {
        let manifest = std::path::absolute(manifest_path)
            .map_err(Error::io("resolve --manifest-path", manifest_path))?;
        if !manifest.is_file() {
            return Err(Error::NoManifest(manifest));
        }
        let text = std::fs::read_to_string(&manifest).map_err(Error::io("read", &manifest))?;
        let package = package_name(&text).ok_or_else(|| Error::NotAPackage(manifest.clone()))?;
        let root = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
        let lib_path = root.join("src").join("lib.rs");
        if !lib_path.is_file() {
            return Err(Error::NoLibrary(lib_path));
        }
        let lib = std::fs::read_to_string(&lib_path).map_err(Error::io("read", &lib_path))?;
        Ok(Self {
            root,
            package,
            lib_path,
            lib,
        })
    }

    /// Checks that neither `src/<module>.rs` nor a declaration of `module` exists.
    fn check_new(&self, module: &str) -> Result<(), Error> {
        let file = self.root.join("src").join(format!("{module}.rs"));
        if file.exists() {
            return Err(Error::FileExists(file));
        }
        if declares_module(&self.lib, module) {
            return Err(Error::ModuleDeclared {
                lib: self.lib_path.clone(),
                module: module.to_owned(),
            });
        }
        Ok(())
    }

    /// Declares `pub mod <module>;` in src/lib.rs.
    fn declare(&self, module: &str) -> Result<(), Error> {
        std::fs::write(&self.lib_path, with_module(&self.lib, module))
            .map_err(Error::io("write", &self.lib_path))
    }
}

/// Checks a Kubernetes API version: `v1`, `v2beta1`, `v1alpha3`.
pub fn check_version(version: &str) -> Result<(), Error> {
    let number =
        |s: &str| !s.is_empty() && !s.starts_with('0') && s.chars().all(|c| c.is_ascii_digit());
    let ok = version.strip_prefix('v').is_some_and(|rest| {
        let (major, pre) = match rest.find(|c: char| !c.is_ascii_digit()) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        number(major)
            && (pre.is_empty()
                || pre
                    .strip_prefix("alpha")
                    .or_else(|| pre.strip_prefix("beta"))
                    .is_some_and(number))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::BadVersion(version.to_owned()))
    }
}

/// The placeholders of the webhook template.
pub fn webhook_values(operator: &str, kind: &str, resource: &Resource) -> Values {
    let defaults: String = resource
        .fields
        .iter()
        .map(|field| format!("                {field}: Default::default(),\n"))
        .collect();
    Values::default()
        .with("crate", crate_ident(operator))
        .with("kind", kind)
        .with("module", resource.module.clone())
        .with("webhook_module", format!("{}_webhook", resource.module))
        .with("spec", resource.spec.clone())
        .with("spec_defaults", defaults)
        .with("tier_label", format!("{}/tier", resource.group))
}

/// The placeholders of the version template.
pub fn version_values(operator: &str, kind: &str, version: &str, resource: &Resource) -> Values {
    let defaults: String = resource
        .fields
        .iter()
        .map(|field| format!("                {field}: Default::default(),\n"))
        .collect();
    let moves = |from: &str| -> String {
        resource
            .fields
            .iter()
            .map(|field| format!("                {field}: {from}.spec.{field},\n"))
            .collect()
    };
    let local_status = resource
        .status
        .as_deref()
        .filter(|status| !status.contains("::"));
    Values::default()
        .with("crate", crate_ident(operator))
        .with("kind", kind)
        .with("group", resource.group.clone())
        .with("version", version)
        .with("hub_version", resource.version.clone())
        .with("module", resource.module.clone())
        .with("version_module", format!("{}_{version}", resource.module))
        .with("spec", resource.spec.clone())
        .with("hub_spec", resource.spec.clone())
        .with("declaration", resource.declaration_as(version))
        .with("imports", resource.derive_imports())
        .with(
            "status_import",
            local_status
                .map(|status| format!("use crate::{}::{status};\n", resource.module))
                .unwrap_or_default(),
        )
        .with(
            "status_field",
            if resource.status.is_some() {
                "            status: object.status,\n"
            } else {
                ""
            },
        )
        .with("spec_defaults", defaults)
        .with("to_hub", moves("object"))
        .with("from_hub", moves("object"))
}

/// The placeholders of the resource template.
pub fn resource_values(operator: &str, kind: &str, group: &str) -> Values {
    let singular = kind.to_ascii_lowercase();
    Values::default()
        .with("name", operator)
        .with("kind", kind)
        .with("module", snake_case(kind))
        .with("plural", format!("{singular}s"))
        .with("singular", singular)
        .with("group", group)
}

/// Render `template` into `root`; returns the path written, relative to `root`. Without
/// `overwrite`, an existing file is an error.
pub fn write_file(
    root: &Path,
    template: &Template,
    values: &Values,
    overwrite: bool,
) -> Result<String, Error> {
    let relative = render(template.path, template.path, values)?;
    let text = render(template.path, template.text, values)?;
    let path: PathBuf = root.join(&relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("create the directory", parent))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .create_new(!overwrite)
        .open(&path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => Error::FileExists(path.clone()),
            _ => Error::io("create", &path)(source),
        })?;
    file.write_all(text.as_bytes())
        .map_err(Error::io("write", &path))?;
    Ok(relative)
}

/// The `name` of the `[package]` table, read line by line (enough for the manifests Cargo and
/// `cargo bonny new` write).
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            let value = value.trim();
            return value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}

/// Whether `lib` already declares module `module` at the top level.
fn declares_module(lib: &str, module: &str) -> bool {
    lib.lines().any(|line| {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        line.strip_prefix("mod ").is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix(module)
                .is_some_and(|after| after.trim_start().starts_with([';', '{']))
        })
    })
}

/// `lib` with `pub mod <module>;` after its last top-level module declaration, or at the end.
fn with_module(lib: &str, module: &str) -> String {
    let declaration = format!("pub mod {module};");
    let mut lines: Vec<&str> = lib.lines().collect();
    let last_mod = lines
        .iter()
        .rposition(|line| line.starts_with("pub mod ") || line.starts_with("mod "));
    match last_mod {
        Some(index) => lines.insert(index + 1, &declaration),
        None => {
            if lines.last().is_some_and(|line| !line.trim().is_empty()) {
                lines.push("");
            }
            lines.push(&declaration);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_package_name() {
        let manifest = "[workspace]\nname = \"no\"\n\n[package]\nedition = \"2024\"\nname = \"widget-operator\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("widget-operator"));
        assert_eq!(package_name("[workspace]\nmembers = []\n"), None);
    }

    #[test]
    fn the_module_goes_after_the_last_declaration() {
        let lib = "//! Docs.\n\npub mod widget;\n\nfn helper() {}\n";
        assert_eq!(
            with_module(lib, "gadget"),
            "//! Docs.\n\npub mod widget;\npub mod gadget;\n\nfn helper() {}\n"
        );
        assert_eq!(
            with_module("//! Docs.", "gadget"),
            "//! Docs.\n\npub mod gadget;\n"
        );
        assert_eq!(with_module("", "gadget"), "pub mod gadget;\n");
    }

    #[test]
    fn finds_declared_modules() {
        assert!(declares_module("pub mod widget;\n", "widget"));
        assert!(declares_module("mod widget {\n}\n", "widget"));
        assert!(declares_module("  pub(crate) mod widget ;\n", "widget"));
        assert!(!declares_module("pub mod widgets;\n", "widget"));
        assert!(!declares_module("// mod widget;\n", "widget"));
    }

    fn widget(status: Option<&str>) -> Resource {
        Resource {
            module: "widget".into(),
            file: "src/widget.rs".into(),
            group: "example.com".into(),
            version: "v1".into(),
            spec: "WidgetSpec".into(),
            fields: vec!["message".into(), "r#type".into()],
            status: status.map(str::to_owned),
            declaration: "#[derive(CustomResource, Serialize, Deserialize)]\n\
                          #[kube(group = \"example.com\", version = \"v1\", kind = \"Widget\")]\n\
                          pub struct WidgetSpec {\n    pub message: String,\n    pub r#type: u32,\n}"
                .into(),
        }
    }

    #[test]
    fn the_webhook_skeleton_validates_and_defaults_the_resource() {
        let values = webhook_values("widget-operator", "Widget", &widget(None));
        let text = render("webhook", WEBHOOK.text, &values).expect("render");
        for expected in [
            "//!             .validate(widget_operator::widget_webhook::validate)",
            "use crate::widget::Widget;",
            "pub const TIER_LABEL: &str = \"example.com/tier\";",
            "pub fn validate(request: &AdmissionRequest<Widget>) -> Verdict {",
            "pub fn default(object: &mut Widget) {",
            "use crate::widget::WidgetSpec;",
            "            WidgetSpec {\n                message: Default::default(),\n                r#type: Default::default(),\n            },",
            "Some(\"label example.com/tier=gold is not a tier; use one of: standard, premium\")",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(
            render("path", WEBHOOK.path, &values).ok().as_deref(),
            Some("src/widget_webhook.rs")
        );
    }

    #[test]
    fn the_version_skeleton_converts_every_field_through_the_hub() {
        let values = version_values("widget-operator", "Widget", "v1alpha1", &widget(None));
        let text = render("version", VERSION.text, &values).expect("render");
        for expected in [
            "use kube::CustomResource;\nuse serde::{Deserialize, Serialize};\n\nuse crate::widget;\n\n///",
            "#[kube(group = \"example.com\", version = \"v1alpha1\", kind = \"Widget\")]",
            "Conversion::<widget::Widget>::hub().spoke::<Widget>()",
            "impl From<Widget> for widget::Widget {",
            "impl From<widget::Widget> for Widget {",
            "            spec: widget::WidgetSpec {\n                message: object.spec.message,\n                r#type: object.spec.r#type,\n            },\n        }",
            "versions = [crate::widget_v1alpha1::Widget, Widget], storage = \"v1\"",
            "[\"example.com/v1\", \"example.com/v1alpha1\"]",
            "            WidgetSpec {\n                message: Default::default(),\n                r#type: Default::default(),\n            },",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("status"), "{text}");
        assert_eq!(
            render("path", VERSION.path, &values).ok().as_deref(),
            Some("src/widget_v1alpha1.rs")
        );

        let values = version_values(
            "widget-operator",
            "Widget",
            "v2",
            &widget(Some("WidgetStatus")),
        );
        let text = render("version", VERSION.text, &values).expect("render");
        assert!(
            text.contains("use crate::widget::WidgetStatus;\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("            status: object.status,\n").count(),
            2
        );
        let values = version_values(
            "widget-operator",
            "Widget",
            "v2",
            &widget(Some("crate::status::WidgetStatus")),
        );
        let text = render("version", VERSION.text, &values).expect("render");
        assert!(!text.contains("use crate::status"), "{text}");
    }

    #[test]
    fn versions_are_kubernetes_api_versions() {
        for good in ["v1", "v2", "v10", "v1alpha1", "v2beta3", "v1beta10"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in [
            "", "v", "1", "V1", "v0", "v01", "v1alpha", "v1gamma1", "v1beta0", "v1-beta1",
        ] {
            let err = check_version(bad).expect_err(bad);
            assert!(err.to_string().contains("e.g. `v2`, `v1beta1`"), "{err}");
        }
    }

    #[test]
    fn resource_values_derive_every_form_of_the_kind() {
        let values = resource_values("op", "HTTPRoute", "example.com");
        let text = render(
            "t",
            "{{kind}} {{module}} {{singular}} {{plural}} {{group}} {{name}}",
            &values,
        );
        assert_eq!(
            text.ok().as_deref(),
            Some("HTTPRoute http_route httproute httproutes example.com op")
        );
    }
}
