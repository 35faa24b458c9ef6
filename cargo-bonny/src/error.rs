//! Everything that can go wrong, each with what to do about it.

use std::{io, path::PathBuf, process::ExitStatus};

use crate::names::NameError;

/// A failed `cargo bonny` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name breaks a Kubernetes or Cargo rule.
    #[error("{source}{}", hint.map(|hint| format!("\n  note: {hint}")).unwrap_or_default())]
    Name {
        /// The rule broken.
        #[source]
        source: NameError,
        /// Where the name came from, when it was not given directly.
        hint: Option<&'static str>,
    },

    /// `new` would write into a directory that already holds files.
    #[error(
        "{} already exists and is not empty; choose another --path, or pass --force to write the \
         scaffold into it (files with the same names are overwritten, others are kept)",
        .0.display()
    )]
    DirectoryNotEmpty(PathBuf),

    /// A path exists but is not a directory.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),

    /// No Cargo.toml where one was expected.
    #[error(
        "no Cargo.toml at {}; run this in the operator crate's directory, or pass \
         --manifest-path path/to/Cargo.toml",
        .0.display()
    )]
    NoManifest(PathBuf),

    /// The crate has no library target to declare the module in.
    #[error(
        "no {}: the controller module is declared in the crate's library, so the crate needs \
         a src/lib.rs (crates made by `cargo bonny new` have one)",
        .0.display()
    )]
    NoLibrary(PathBuf),

    /// The manifest has no `[package]` name (a workspace manifest, for instance).
    #[error(
        "{} has no [package] name; pass the operator crate's own --manifest-path",
        .0.display()
    )]
    NotAPackage(PathBuf),

    /// The library already declares the module `gen` would add.
    #[error(
        "{} already declares `mod {module}`; choose another Kind, or remove the declaration first",
        lib.display()
    )]
    ModuleDeclared {
        /// The library's root file.
        lib: PathBuf,
        /// The module.
        module: String,
    },

    /// `gen` would overwrite a file.
    #[error(
        "{} already exists, and cargo bonny does not overwrite files; remove it first, or choose \
         another Kind (or version)",
        .0.display()
    )]
    FileExists(PathBuf),

    /// No `#[kube(kind = "...")]` of this Kind in the crate's top-level modules.
    #[error(
        "no custom resource of Kind `{kind}` in {}/*.rs{}; add it first with \
         `cargo bonny gen controller {kind}`, or name a Kind as its `#[kube(kind = \"...\")]` \
         spells it",
        src.display(),
        if known.is_empty() { String::new() } else { format!(" (found: {})", known.join(", ")) }
    )]
    UnknownKind {
        /// The Kind asked for.
        kind: String,
        /// The directory searched.
        src: PathBuf,
        /// The Kinds found there.
        known: Vec<String>,
    },

    /// The Kind's `#[kube]` attribute is there but the struct under it could not be read.
    #[error(
        "{}: cannot read the spec struct under the `#[kube(kind = \"{kind}\")]` attribute; \
         cargo bonny reads a `#[derive(...)]`, then `#[kube(..., version = \"...\")]`, then a \
         struct with named fields",
        file.display()
    )]
    UnreadableSpec {
        /// The Kind.
        kind: String,
        /// The file declaring it.
        file: PathBuf,
    },

    /// A version that is not a Kubernetes API version.
    #[error(
        "invalid version `{0}`: a Kubernetes API version is `v` and a number, optionally followed \
         by `alpha` or `beta` and a number, e.g. `v2`, `v1beta1`, `v1alpha1`"
    )]
    BadVersion(String),

    /// `gen version` was asked for the version the resource already has.
    #[error(
        "`{kind}` is already declared as {version} in {}; name the new served version, e.g. \
         `v1alpha1`",
        file.display()
    )]
    VersionExists {
        /// The Kind.
        kind: String,
        /// Its version.
        version: String,
        /// The file declaring it.
        file: PathBuf,
    },

    /// `--bonny-path` does not point at the bonny-rs crate.
    #[error(
        "--bonny-path {}: no Cargo.toml of the bonny-rs package there; point it at the \
         directory of the `bonny-rs` crate (the one with its Cargo.toml)",
        .0.display()
    )]
    BonnyPath(PathBuf),

    /// A file or directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// Cargo could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it did not start.
        source: io::Error,
    },

    /// The operator's `manifests` command failed; cargo or the operator said why above.
    #[error("`cargo run -- manifests` failed ({0}); its output above says why")]
    Manifests(ExitStatus),

    /// An operating-system call failed outside any file.
    #[error("cannot {action}: {source}")]
    System {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },

    /// The local control plane could not be built, found or started; the message says why and
    /// what to do.
    #[error("{0}")]
    ControlPlane(#[source] bonny::testing::Error),

    /// The task that finds or builds the control plane panicked or was cancelled.
    #[error("finding the control plane binaries failed: {0}")]
    ControlPlaneTask(String),

    /// `manifests --crds` printed something that is not UTF-8.
    #[error("`cargo run -- manifests --crds` printed bytes that are not UTF-8 YAML")]
    CrdsNotUtf8,

    /// The operator stopped by itself under `cargo bonny dev`; its logs above say why.
    #[error("the operator exited ({0}); its log above says why")]
    OperatorExited(ExitStatus),

    /// A template is broken (a bug in `cargo bonny`).
    #[error("bug in cargo bonny: template {template} has no value for {{{{{placeholder}}}}}")]
    Template {
        /// The template.
        template: String,
        /// The placeholder without a value.
        placeholder: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    /// An operating-system error while doing `action`.
    pub fn system(action: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::System { action, source }
    }

    /// The process exit code for this error: the operator's own for a failed `manifests`, 1
    /// otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Manifests(status) => status
                .code()
                .and_then(|code| u8::try_from(code).ok())
                .filter(|code| *code != 0)
                .unwrap_or(1),
            _ => 1,
        }
    }
}

impl From<NameError> for Error {
    fn from(source: NameError) -> Self {
        Self::Name { source, hint: None }
    }
}
