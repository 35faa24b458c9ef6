//! Project tasks.
//!
//! - `cargo xtask demo`: the hello-world operator, two replicas with leader election, on a
//!   local control plane (or on the cluster `KUBECONFIG` points at); kills the leader and shows
//!   the standby take over.
//! - `cargo xtask test`: build or reuse the control plane, then format check, clippy and the
//!   whole test suite on the real API server.

mod demo;

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "bonny-rs project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the demo: two replicas of the hello-world operator with leader election.
    Demo,
    /// Build the control plane if needed, then check formatting, lints and run every test.
    Test,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo => demo::run(),
        Task::Test => test(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_with_env(args, &[])
}

fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("+ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|err| format!("cannot run {cargo}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test() -> Result<(), String> {
    let build = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/control-plane/build.sh"
    );
    eprintln!("+ {build}");
    let status = Command::new("bash")
        .arg(build)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|err| format!("cannot run {build}: {err}"))?;
    if !status.success() {
        return Err(format!(
            "building the control plane failed ({status}); see the output above"
        ));
    }
    ensure_faketime()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    let rustdoc = std::env::var("RUSTDOCFLAGS").unwrap_or_default();
    cargo_with_env(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", &format!("{rustdoc} -D warnings"))],
    )?;
    cargo(&["test", "--workspace", "--all-features", "--no-fail-fast"])
}

/// The clock-skew leader election test runs one replica under libfaketime (Debian's
/// `faketime` package); install it when missing and we may (CI runs as root).
fn ensure_faketime() -> Result<(), String> {
    if Command::new("faketime").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("+ apt-get install -y faketime (needed by the clock-skew leader election test)");
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime",
        ])
        .status()
        .map_err(|err| format!("cannot run apt-get: {err}"))?;
    if installed.success() {
        Ok(())
    } else {
        Err("faketime is missing and `apt-get install faketime` failed; install it (as root) and run again".into())
    }
}
