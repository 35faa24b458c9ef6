//! `cargo bonny gen controller`: a resource and its controller added to an existing crate.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    cli::ControllerArgs,
    error::Error,
    names::{check_group, check_kind, crate_ident, snake_case},
    render::{RESOURCE, Template, Values, render},
};

/// Add `src/<kind>.rs` and declare it in src/lib.rs, after checking that neither exists.
pub fn controller(args: &ControllerArgs) -> Result<(), Error> {
    check_kind(&args.kind)?;
    check_group(&args.group)?;
    let manifest = std::path::absolute(&args.manifest_path)
        .map_err(Error::io("resolve --manifest-path", &args.manifest_path))?;
    if !manifest.is_file() {
        return Err(Error::NoManifest(manifest));
    }
    let text = std::fs::read_to_string(&manifest).map_err(Error::io("read", &manifest))?;
    let package = package_name(&text).ok_or_else(|| Error::NotAPackage(manifest.clone()))?;
    let root = manifest.parent().unwrap_or(Path::new("."));
    let lib_path = root.join("src").join("lib.rs");
    if !lib_path.is_file() {
        return Err(Error::NoLibrary(lib_path));
    }
    let module = snake_case(&args.kind);
    let file = root.join("src").join(format!("{module}.rs"));
    if file.exists() {
        return Err(Error::FileExists(file));
    }
    let lib = std::fs::read_to_string(&lib_path).map_err(Error::io("read", &lib_path))?;
    if declares_module(&lib, &module) {
        return Err(Error::ModuleDeclared {
            lib: lib_path,
            module,
        });
    }

    let values = resource_values(&package, &args.kind, &args.group);
    let written = write_file(root, &RESOURCE, &values, false)?;
    std::fs::write(&lib_path, with_module(&lib, &module)).map_err(Error::io("write", &lib_path))?;
    println!("Created {written} and declared `pub mod {module};` in src/lib.rs.");
    println!("Register the controller with the operator in src/main.rs:");
    println!(
        "    .controller({}::{module}::{}Controller)",
        crate_ident(&package),
        args.kind
    );
    Ok(())
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
