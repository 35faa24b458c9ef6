//! `cargo bonny manifests`: the operator prints its own manifests, so this only runs it.

use std::{ffi::OsString, process::Command};

use crate::{cli::ManifestsArgs, error::Error};

/// Run `cargo run --quiet -- manifests ARGS` on the operator crate, output and exit code
/// passed through.
pub fn manifests(args: &ManifestsArgs) -> Result<(), Error> {
    let manifest = std::path::absolute(&args.manifest_path)
        .map_err(Error::io("resolve --manifest-path", &args.manifest_path))?;
    if !manifest.is_file() {
        return Err(Error::NoManifest(manifest));
    }
    // Cargo names itself in CARGO when it runs a plugin; use the same toolchain.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(&cargo)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .args(["--", "manifests"])
        .args(&args.args)
        .status()
        .map_err(|source| Error::Spawn {
            program: cargo.to_string_lossy().into_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Manifests(status))
    }
}
