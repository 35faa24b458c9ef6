//! Project tasks.
//!
//! - `cargo xtask demo`: the hello-world operator, two replicas with leader election, on a
//!   local control plane (or on the cluster `KUBECONFIG` points at); kills the leader and shows
//!   the standby take over.
//! - `cargo xtask test`: build or reuse the control plane, then format check, clippy, the
//!   whole test suite on the real API server, and the peer benchmark's `--quick` size (so the
//!   bench cannot rot).

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
    /// Build the control plane if needed, then check formatting, lints, run every test and the
    /// quick benchmark.
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
    // Built here, once, with its progress shown, rather than inside the first test that needs it.
    eprintln!(
        "+ bonny::testing::Binaries::locate() (etcd, kube-apiserver, kube-controller-manager, kubectl)"
    );
    let binaries = bonny::testing::Binaries::locate().map_err(|err| err.to_string())?;
    eprintln!("  control plane binaries in {}", binaries.dir().display());
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
    let tests = cargo_test(&["test", "--workspace", "--all-features", "--no-fail-fast"]);
    let bench = bench_quick();
    tests.and(bench)
}

/// The peer benchmark at its CI size (`bench/driver --quick`: 50 widgets, bonny-rs and
/// kube-runtime, no Go): it fails when a peer does not reconcile or delete every widget. The
/// bench crates are outside the workspace, with their own lock files, and build into
/// `bench/target` (gitignored), where the driver also builds the peers.
fn bench_quick() -> Result<(), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?;
    let manifest = root.join("bench/driver/Cargo.toml");
    let target = root.join("bench/target");
    let (Some(manifest), Some(target)) = (manifest.to_str(), target.to_str()) else {
        return Err("the checkout's path is not UTF-8".into());
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = [
        "run",
        "--release",
        "--quiet",
        "--manifest-path",
        manifest,
        "--",
        "--quick",
    ];
    eprintln!("+ CARGO_TARGET_DIR={target} cargo {}", args.join(" "));
    let mut command = Command::new(&cargo);
    // What `cargo xtask` (itself a `cargo run`) put in our environment would make ring's
    // build script rerun, and the driver builds the peers without it: keep the two alike.
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("CARGO_") || key == "OUT_DIR")
            && key != "CARGO_HOME"
        {
            command.env_remove(key);
        }
    }
    let status = command
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .map_err(|err| format!("cannot run {cargo}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the quick benchmark failed ({status})"))
    }
}

/// Runs `cargo test`, echoing its output, and ends with one line that sums up every test
/// binary's result: `summary: N passed, N failed, N skipped`.
fn cargo_test(args: &[&str]) -> Result<(), String> {
    use std::io::{BufRead, BufReader};

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("+ cargo {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {cargo}: {err}"))?;
    let mut totals = [0_u64; 3];
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(counts) = line.strip_prefix("test result: ") {
                for (total, label) in totals.iter_mut().zip([" passed", " failed", " ignored"]) {
                    *total += count_before(counts, label);
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|err| format!("cannot wait for {cargo}: {err}"))?;
    let [passed, failed, skipped] = totals;
    println!("summary: {passed} passed, {failed} failed, {skipped} skipped");
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// The number just before `label` in a line like `ok. 5 passed; 0 failed; 1 ignored; ...`.
fn count_before(text: &str, label: &str) -> u64 {
    text.find(label)
        .and_then(|end| text[..end].rsplit([' ', '.']).next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn counts_are_read_from_cargo_test_result_lines() {
        let line =
            "ok. 74 passed; 2 failed; 3 ignored; 0 measured; 0 filtered out; finished in 3.61s";
        assert_eq!(count_before(line, " passed"), 74);
        assert_eq!(count_before(line, " failed"), 2);
        assert_eq!(count_before(line, " ignored"), 3);
        assert_eq!(count_before("FAILED. 1 passed; 1 failed;", " passed"), 1);
        assert_eq!(count_before("nothing here", " passed"), 0);
    }
}
