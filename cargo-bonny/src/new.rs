//! `cargo bonny new`: a whole operator crate.

use std::path::{Path, PathBuf};

use crate::{
    cli::NewArgs,
    error::Error,
    generate::{resource_values, write_file},
    names::{check_group, check_kind, check_operator_name, crate_ident, default_kind},
    render::{NEW_CRATE, RESOURCE, Values},
};

/// The version requirement on bonny-rs: the release line `cargo bonny` belongs to.
const BONNY_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION_MAJOR"),
    ".",
    env!("CARGO_PKG_VERSION_MINOR")
);

const DERIVED_KIND: &str = "the Kind comes from the operator name; choose one with --kind";

/// Create the crate described by `args`. Every name is checked before anything is written.
pub fn new(args: &NewArgs) -> Result<(), Error> {
    check_operator_name(&args.name)?;
    let kind = match &args.kind {
        Some(kind) => kind.clone(),
        None => default_kind(&args.name),
    };
    check_kind(&kind).map_err(|source| Error::Name {
        source,
        hint: args.kind.is_none().then_some(DERIVED_KIND),
    })?;
    check_group(&args.group)?;
    let bonny = match &args.bonny_path {
        Some(path) => Some(bonny_crate_dir(path)?),
        None => None,
    };
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    prepare_dir(&dir, args.force)?;

    let values = crate_values(&args.name, &kind, &args.group, bonny.as_deref());
    let mut written = Vec::new();
    for template in NEW_CRATE.iter().chain([&RESOURCE]) {
        written.push(write_file(&dir, template, &values, true)?);
    }
    println!(
        "Created operator `{}` (Kind {kind}, group {}) in {}:",
        args.name,
        args.group,
        dir.display()
    );
    for path in written {
        println!("  {path}");
    }
    println!(
        "\nNext:\n  cd {}\n  cargo bonny dev             # the operator on a local control plane\n  \
         cargo test                  # the controller against a local API server\n  \
         cargo run -- manifests      # CRD, RBAC and Deployment as YAML",
        dir.display()
    );
    Ok(())
}

/// The placeholders of every template of a new crate.
fn crate_values(name: &str, kind: &str, group: &str, bonny: Option<&Path>) -> Values {
    let (bonny_dep, bonny_dev_dep) = match bonny {
        Some(path) => {
            let path = toml_string(&path.to_string_lossy());
            (
                format!("{{ path = {path} }}"),
                format!("{{ path = {path}, features = [\"testing\"] }}"),
            )
        }
        None => (
            format!("\"{BONNY_VERSION}\""),
            format!("{{ version = \"{BONNY_VERSION}\", features = [\"testing\"] }}"),
        ),
    };
    resource_values(name, kind, group)
        .with("crate", crate_ident(name))
        .with("bonny_dep", bonny_dep)
        .with("bonny_dev_dep", bonny_dev_dep)
}

/// The absolute path of the bonny-rs package directory `path` names.
fn bonny_crate_dir(path: &Path) -> Result<PathBuf, Error> {
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
    let is_bonny = manifest
        .lines()
        .any(|line| line.replace(' ', "") == "name=\"bonny-rs\"");
    if !is_bonny {
        return Err(Error::BonnyPath(path.to_owned()));
    }
    path.canonicalize()
        .map_err(Error::io("resolve --bonny-path", path))
}

/// Make sure `dir` exists and, unless `force`, is empty.
fn prepare_dir(dir: &Path, force: bool) -> Result<(), Error> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::NotADirectory(dir.to_owned()));
        }
        let mut entries = std::fs::read_dir(dir).map_err(Error::io("read the directory", dir))?;
        if !force && entries.next().is_some() {
            return Err(Error::DirectoryNotEmpty(dir.to_owned()));
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(Error::io("create the directory", dir))
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;

    fn cargo_toml(bonny: Option<&Path>) -> String {
        let values = crate_values("widget-operator", "Widget", "example.com", bonny);
        render("Cargo.toml", NEW_CRATE[0].text, &values).expect("render")
    }

    #[test]
    fn depends_on_the_release_by_default() {
        let toml = cargo_toml(None);
        assert!(toml.contains("name = \"widget-operator\""), "{toml}");
        assert!(toml.contains("\nbonny-rs = \"0.1\"\n"), "{toml}");
        assert!(
            toml.contains("bonny-rs = { version = \"0.1\", features = [\"testing\"] }"),
            "{toml}"
        );
        assert!(toml.contains("\n[workspace]\n"), "{toml}");
    }

    #[test]
    fn builds_releases_with_whole_program_optimisation() {
        let toml = cargo_toml(None);
        assert!(
            toml.contains("[profile.release]\nlto = \"fat\"\ncodegen-units = 1\n"),
            "{toml}"
        );
    }

    #[test]
    fn depends_on_a_path_when_asked() {
        let toml = cargo_toml(Some(Path::new("/src/bonny \"rs\"/bonny-rs")));
        assert!(
            toml.contains(r#"bonny-rs = { path = "/src/bonny \"rs\"/bonny-rs" }"#),
            "{toml}"
        );
        assert!(
            toml.contains(
                r#"bonny-rs = { path = "/src/bonny \"rs\"/bonny-rs", features = ["testing"] }"#
            ),
            "{toml}"
        );
    }

    #[test]
    fn main_registers_the_controller_under_the_operator_name() {
        let values = crate_values("widget-operator", "Widget", "example.com", None);
        let main = NEW_CRATE
            .iter()
            .find(|t| t.path == "src/main.rs")
            .expect("main.rs");
        let main = render(main.path, main.text, &values).expect("render");
        assert!(
            main.contains("use widget_operator::widget::WidgetController;"),
            "{main}"
        );
        assert!(main.contains(".name(\"widget-operator\")"), "{main}");
        assert!(main.contains(".controller(WidgetController)"), "{main}");
        assert!(main.contains(".leader_election(true)"), "{main}");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r"C:\a"), r#""C:\\a""#);
        assert_eq!(toml_string("a\tb"), r#""a\u0009b""#);
    }
}
