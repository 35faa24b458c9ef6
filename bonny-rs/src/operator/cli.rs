//! The operator binary's command line: `run` (the default) and `manifests`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{Error, manifest::Options};

/// The Deployment's image when `manifests` is given no `--image`.
const PLACEHOLDER_IMAGE: &str = "operator:latest";

#[derive(Debug, Parser)]
#[command(about = "A Kubernetes operator built with bonny-rs")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the manifests that deploy the operator: CRDs, RBAC, Deployment.
    Manifests {
        /// Container image of the operator for the Deployment (without it, a placeholder).
        #[arg(long)]
        image: Option<String>,
        /// Namespace the operator is deployed to.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Replicas (default: 2 with leader election, else 1).
        #[arg(long)]
        replicas: Option<i32>,
        /// Only the CRDs.
        #[arg(long)]
        crds: bool,
        /// Write a kustomize tree into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

impl crate::Operator {
    /// Act on the process's command line: `run` (the default) runs the operator;
    /// `manifests [--image IMG] [--namespace NS] [--crds] [--out DIR]` prints or writes its
    /// manifests; `--help` explains both.
    ///
    /// # Errors
    /// [`Error::Usage`] for arguments that do not parse, and what [`run`](Self::run) or
    /// [`manifests`](Self::manifests) return.
    pub async fn main(self) -> Result<(), Error> {
        self.main_from(std::env::args_os()).await
    }

    /// [`main`](Self::main) with explicit arguments (the first is the program name).
    ///
    /// # Errors
    /// As [`main`](Self::main).
    pub async fn main_from<I, T>(self, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(err) if !err.use_stderr() => {
                // --help and --version are answers, not failures.
                print!("{err}");
                return Ok(());
            }
            Err(err) => {
                let message = err.to_string();
                return Err(Error::Usage(
                    message.trim_start_matches("error: ").trim_end().to_owned(),
                ));
            }
        };
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => self.run().await,
            Command::Manifests {
                image,
                namespace,
                replicas,
                crds,
                out,
            } => {
                let image = image.unwrap_or_else(|| {
                    // Only the CRDs carry no image: nothing to warn about.
                    if !crds || out.is_some() {
                        eprintln!(
                            "warning: no --image given; the Deployment uses the placeholder `{PLACEHOLDER_IMAGE}`: pass --image <registry>/<name>:<tag>"
                        );
                    }
                    PLACEHOLDER_IMAGE.to_owned()
                });
                let mut options = Options::new(image).namespace(namespace);
                if let Some(replicas) = replicas {
                    options = options.replicas(replicas);
                }
                let manifests = self.manifests(&options)?;
                match out {
                    Some(dir) => manifests.write_tree(&dir)?,
                    None if crds => print!("{}", manifests.crds_yaml()?),
                    None => print!("{}", manifests.to_yaml()?),
                }
                Ok(())
            }
        }
    }
}
