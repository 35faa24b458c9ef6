//! `cargo bonny`: scaffold and run [bonny-rs](https://docs.rs/bonny-rs) operators.
//!
//! - `cargo bonny new NAME` creates an operator crate whose code compiles and whose test passes
//!   against a real API server;
//! - `cargo bonny gen controller KIND` adds a resource and its controller to one;
//! - `cargo bonny gen webhook KIND` adds a validator and a defaulter of a resource;
//! - `cargo bonny gen version KIND VERSION` adds a served version of a resource, converted to
//!   and from the stored one;
//! - `cargo bonny manifests ARGS` prints the operator's deployment manifests;
//! - `cargo bonny dev` runs the operator against a local control plane until Ctrl-C;
//! - `cargo bonny control-plane` builds or finds that control plane's binaries and prints
//!   their directory.
//!
//! Templates are files under `templates/`, compiled in and filled by `{{placeholder}}`
//! substitution.

mod cli;
mod control_plane;
mod dev;
mod error;
mod generate;
mod manifests;
mod names;
mod new;
mod render;
mod source;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cargo, Command, Gen};
use error::Error;

fn main() -> ExitCode {
    let Cargo::Bonny(bonny) = Cargo::parse_from(cli::normalize(std::env::args_os()));
    match run(bonny.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::New(args) => new::new(&args),
        Command::Gen(Gen::Controller(args)) => generate::controller(&args),
        Command::Gen(Gen::Webhook(args)) => generate::webhook(&args),
        Command::Gen(Gen::Version(args)) => generate::version(&args),
        Command::Manifests(args) => manifests::manifests(&args),
        Command::Dev(args) => dev::dev(&args),
        Command::ControlPlane => control_plane::control_plane(),
    }
}
