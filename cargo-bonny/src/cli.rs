//! The command line: `cargo bonny new | gen controller|webhook|version | manifests | dev |
//! control-plane`.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

/// Cargo runs `cargo-bonny bonny ARGS` for `cargo bonny ARGS`, so the command line starts with
/// the `bonny` subcommand (inserted when the binary is run directly).
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo")]
pub enum Cargo {
    /// Scaffold bonny-rs operators.
    Bonny(Bonny),
}

/// Scaffold bonny-rs operators: new crates, controllers, webhooks and served versions, and their
/// manifests.
#[derive(Debug, Args)]
#[command(version, about)]
pub struct Bonny {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an operator crate: a resource and its controller, a test against a real API
    /// server, a Dockerfile and a README.
    New(NewArgs),
    /// Add code to an existing operator crate.
    #[command(subcommand)]
    Gen(Gen),
    /// Print the operator's deployment manifests: runs `cargo run --quiet -- manifests ARGS`
    /// in the operator crate.
    Manifests(ManifestsArgs),
    /// Run the operator against a local control plane (etcd, kube-apiserver,
    /// kube-controller-manager) with its CRDs installed, until Ctrl-C; prints the kubeconfig
    /// to use from another terminal.
    Dev(DevArgs),
    /// Build (the first time, with Go 1.26+) or find the local control plane's binaries
    /// (etcd, kube-apiserver, kube-controller-manager, kubectl) and print their directory.
    ControlPlane,
}

/// `cargo bonny new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The operator's name: a Kubernetes DNS-1123 label and a crate name, e.g. `widget-operator`.
    /// It names the crate, the binary, the Deployment and the leader-election Lease.
    pub name: String,

    /// The directory to create the crate in [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,

    /// The Kind of the custom resource, in PascalCase [default: NAME without a trailing
    /// `-operator`, in PascalCase: `widget-operator` → `Widget`].
    #[arg(long)]
    pub kind: Option<String>,

    /// The API group of the custom resource.
    #[arg(long, default_value = "example.com")]
    pub group: String,

    /// Depend on the bonny-rs crate in this directory instead of the crates.io release.
    #[arg(long, value_name = "PATH")]
    pub bonny_path: Option<PathBuf>,

    /// Write into DIR even if it is not empty (files with the same names are overwritten).
    #[arg(long)]
    pub force: bool,
}

/// `cargo bonny gen`.
#[derive(Debug, Subcommand)]
pub enum Gen {
    /// Add a resource and its controller as `src/<kind>.rs`, declared in src/lib.rs.
    Controller(ControllerArgs),
    /// Add a validator and a defaulter of an existing resource, with their tests, as
    /// `src/<kind>_webhook.rs`, declared in src/lib.rs; prints the line that registers them
    /// with the operator.
    Webhook(WebhookArgs),
    /// Add another served version of an existing resource as `src/<kind>_<version>.rs`: its
    /// type (a copy of the stored version's), the `From` impls to and from the stored (hub)
    /// version and their conversion webhook, declared in src/lib.rs; prints the lines that
    /// merge the versions into one CRD and serve the conversion.
    Version(VersionArgs),
}

/// `cargo bonny gen webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// The Kind of the resource, as its `#[kube(kind = "...")]` spells it, e.g. `Widget`.
    pub kind: String,

    /// The operator crate's Cargo.toml.
    #[arg(long, value_name = "PATH", default_value = "Cargo.toml")]
    pub manifest_path: PathBuf,
}

/// `cargo bonny gen version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The Kind of the resource, as its `#[kube(kind = "...")]` spells it, e.g. `Widget`.
    pub kind: String,

    /// The new served version, e.g. `v1alpha1` or `v2`; the version already declared stays
    /// the stored one.
    pub version: String,

    /// The operator crate's Cargo.toml.
    #[arg(long, value_name = "PATH", default_value = "Cargo.toml")]
    pub manifest_path: PathBuf,
}

/// `cargo bonny gen controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The Kind of the new resource, in PascalCase, e.g. `Gadget`.
    pub kind: String,

    /// The API group of the resource.
    #[arg(long, default_value = "example.com")]
    pub group: String,

    /// The operator crate's Cargo.toml.
    #[arg(long, value_name = "PATH", default_value = "Cargo.toml")]
    pub manifest_path: PathBuf,
}

/// `cargo bonny manifests`.
#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// The operator crate's Cargo.toml.
    #[arg(long, value_name = "PATH", default_value = "Cargo.toml")]
    pub manifest_path: PathBuf,

    /// Passed on to the operator's `manifests` command (see `cargo run -- manifests --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// `cargo bonny dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The operator crate's Cargo.toml.
    #[arg(long, value_name = "PATH", default_value = "Cargo.toml")]
    pub manifest_path: PathBuf,

    /// Do not run kube-controller-manager (no garbage collection of objects whose owner is
    /// deleted, namespaces are not emptied on delete).
    #[arg(long)]
    pub no_controller_manager: bool,

    /// Passed on to the operator's `run` command.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<OsString>,
}

/// The arguments as clap expects them: with `bonny` after the program name, whether cargo put
/// it there (`cargo bonny new`) or not (`cargo-bonny new`).
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_none_or(|arg| arg != "bonny") {
        args.insert(args.len().min(1), "bonny".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let Cargo::Bonny(bonny) =
            Cargo::try_parse_from(normalize(args.iter().map(OsString::from)))?;
        Ok(bonny.command)
    }

    #[test]
    fn the_cli_is_consistent() {
        Cargo::command().debug_assert();
    }

    #[test]
    fn works_with_and_without_the_cargo_subcommand() {
        for args in [
            &["cargo-bonny", "bonny", "new", "x"][..],
            &["cargo-bonny", "new", "x"],
        ] {
            assert!(matches!(parse(args), Ok(Command::New(NewArgs { name, .. })) if name == "x"));
        }
    }

    #[test]
    fn manifests_passes_unknown_flags_through() {
        let command = parse(&[
            "cargo-bonny",
            "bonny",
            "manifests",
            "--manifest-path",
            "op/Cargo.toml",
            "--image",
            "x:1",
        ]);
        let Ok(Command::Manifests(args)) = command else {
            panic!("{command:?}");
        };
        assert_eq!(args.manifest_path, PathBuf::from("op/Cargo.toml"));
        assert_eq!(args.args, ["--image", "x:1"]);
    }

    #[test]
    fn dev_passes_what_follows_the_double_dash_to_run() {
        let command = parse(&["cargo-bonny", "dev", "--", "--help"]);
        let Ok(Command::Dev(args)) = command else {
            panic!("{command:?}");
        };
        assert_eq!(args.manifest_path, PathBuf::from("Cargo.toml"));
        assert!(!args.no_controller_manager);
        assert_eq!(args.args, ["--help"]);
    }

    #[test]
    fn gen_controller_defaults_to_the_cargo_toml_here() {
        let command = parse(&["cargo-bonny", "gen", "controller", "Gadget"]);
        let Ok(Command::Gen(Gen::Controller(args))) = command else {
            panic!("{command:?}");
        };
        assert_eq!(args.kind, "Gadget");
        assert_eq!(args.manifest_path, PathBuf::from("Cargo.toml"));
        assert_eq!(args.group, "example.com");
    }

    #[test]
    fn gen_webhook_and_gen_version_take_the_kind_and_the_version() {
        let command = parse(&["cargo-bonny", "gen", "webhook", "Gadget"]);
        let Ok(Command::Gen(Gen::Webhook(args))) = command else {
            panic!("{command:?}");
        };
        assert_eq!(args.kind, "Gadget");
        assert_eq!(args.manifest_path, PathBuf::from("Cargo.toml"));
        let command = parse(&["cargo-bonny", "gen", "version", "Gadget", "v1alpha1"]);
        let Ok(Command::Gen(Gen::Version(args))) = command else {
            panic!("{command:?}");
        };
        assert_eq!(
            (args.kind.as_str(), args.version.as_str()),
            ("Gadget", "v1alpha1")
        );
        assert!(parse(&["cargo-bonny", "gen", "version", "Gadget"]).is_err());
    }
}
