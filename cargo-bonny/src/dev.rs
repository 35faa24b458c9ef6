//! `cargo bonny dev`: the operator against a local control plane, until Ctrl-C.
//!
//! Starts etcd, kube-apiserver and kube-controller-manager (`bonny::testing::TestEnv`),
//! installs the CRDs the operator prints with `manifests --crds`, then runs the operator with
//! `cargo run -- run` and its logs on the terminal. Ctrl-C (or SIGTERM) stops the operator
//! gracefully, then the control plane, and removes its temporary directory.

use std::{ffi::OsString, io::Write, path::Path, process::Stdio, time::Duration};

use bonny::testing::{Binaries, TestEnv};
use tokio::{
    process::{Child, Command},
    signal::unix::{Signal, SignalKind, signal},
};

use crate::{cli::DevArgs, error::Error};

/// How long the operator may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Run `cargo bonny dev`.
pub fn dev(args: &DevArgs) -> Result<(), Error> {
    let manifest = std::path::absolute(&args.manifest_path)
        .map_err(Error::io("resolve --manifest-path", &args.manifest_path))?;
    if !manifest.is_file() {
        return Err(Error::NoManifest(manifest));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::system("start the async runtime"))?
        .block_on(run(&manifest, args))
}

async fn run(manifest: &Path, args: &DevArgs) -> Result<(), Error> {
    // From the start: a Ctrl-C while the control plane starts must still remove its files.
    let mut stop = Stop::listen()?;
    let (env, binaries) = tokio::select! {
        started = start(manifest, args) => started?,
        () = stop.requested() => {
            say("interrupted before the operator started; nothing left running");
            return Ok(());
        }
    };

    let http = free_loopback_addr()?;
    let kubeconfig = env.kubeconfig_path();
    println!(
        "control plane ready at {}\n\
         \n  # in another terminal:\
         \n  export KUBECONFIG={}\
         \n  export PATH={}:$PATH    # kubectl of the same Kubernetes release\
         \n  kubectl get crds\
         \n\nmetrics and probes of the operator: http://{http}/metrics\n\
         running the operator (cargo run -- run); Ctrl-C stops it and the control plane\n",
        env.server_url(),
        kubeconfig.display(),
        binaries.dir().display(),
    );
    std::io::stdout()
        .flush()
        .map_err(Error::system("write to stdout"))?;

    let mut operator = spawn_operator(manifest, kubeconfig, &http, &args.args)?;
    let outcome = wait(&mut operator, &mut stop).await;
    drop(env);
    say("control plane stopped, its files removed");
    outcome
}

/// Compiles the operator and reads its CRDs, then starts the control plane and installs them.
async fn start(manifest: &Path, args: &DevArgs) -> Result<(TestEnv, Binaries), Error> {
    // Compile the operator (and see its errors) before the control plane is started.
    say("building the operator and reading its CRDs (cargo run -- manifests --crds)");
    let crds = operator_crds(manifest).await?;

    say("starting the local control plane (the first run builds it from Go modules: minutes)");
    let binaries = tokio::task::spawn_blocking(Binaries::locate)
        .await
        .map_err(|e| Error::ControlPlaneTask(e.to_string()))?
        .map_err(Error::ControlPlane)?;
    let env = TestEnv::builder()
        .controller_manager(!args.no_controller_manager)
        // Stopping is ordered here: the operator first, then the control plane.
        .remove_on_signal(false)
        .start()
        .await
        .map_err(Error::ControlPlane)?;
    env.install_crds_yaml(&crds)
        .await
        .map_err(Error::ControlPlane)?;
    Ok((env, binaries))
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    fn listen() -> Result<Stop, Error> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt())
                .map_err(Error::system("listen for SIGINT"))?,
            terminate: signal(SignalKind::terminate())
                .map_err(Error::system("listen for SIGTERM"))?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Waits for a stop request (then stops the operator) or for the operator to exit.
async fn wait(operator: &mut Child, stop: &mut Stop) -> Result<(), Error> {
    tokio::select! {
        status = operator.wait() => {
            let status = status.map_err(Error::system("wait for the operator"))?;
            return if status.success() { Ok(()) } else { Err(Error::OperatorExited(status)) };
        }
        () = stop.requested() => {}
    }
    say("stopping the operator");
    // The operator has a process group of its own, so a Ctrl-C in the terminal reached only
    // us: it gets exactly one SIGTERM (a second one would make it exit at once).
    let pid = operator
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    tokio::select! {
        status = operator.wait() => { status.map_err(Error::system("wait for the operator"))?; }
        _ = tokio::time::sleep(STOP_GRACE) => {
            say(&format!("the operator did not stop within {STOP_GRACE:?}; killing it"));
            let _ = operator.kill().await;
        }
        () = stop.requested() => {
            say("stopping at once");
            let _ = operator.kill().await;
        }
    }
    Ok(())
}

/// `cargo run --quiet -- manifests --crds`: the operator's CRDs as YAML.
async fn operator_crds(manifest: &Path) -> Result<String, Error> {
    let cargo = cargo();
    let output = Command::new(&cargo)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(manifest)
        .args(["--", "manifests", "--crds"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            program: cargo.to_string_lossy().into_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Manifests(output.status));
    }
    String::from_utf8(output.stdout).map_err(|_| Error::CrdsNotUtf8)
}

fn spawn_operator(
    manifest: &Path,
    kubeconfig: &Path,
    http: &str,
    args: &[OsString],
) -> Result<Child, Error> {
    let cargo = cargo();
    // If we are killed without a chance to stop it, the operator gets SIGTERM from the kernel
    // (Linux's parent-death signal, set by util-linux's `setpriv`; `cargo run` execs the
    // operator, which keeps it).
    let mut command = match setpriv() {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "TERM", "--"]).arg(&cargo);
            command
        }
        None => Command::new(&cargo),
    };
    command
        .args(["run", "--quiet", "--manifest-path"])
        .arg(manifest)
        .args(["--", "run"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for (var, value) in [
        ("BONNY_HTTP_ADDR", http),
        ("BONNY_POD_NAMESPACE", "default"),
        ("BONNY_SHUTDOWN_TIMEOUT", "5s"),
        ("BONNY_LOG_FORMAT", "plain"),
        ("RUST_LOG", "info"),
    ] {
        if std::env::var_os(var).is_none() {
            command.env(var, value);
        }
    }
    command.spawn().map_err(|source| Error::Spawn {
        program: cargo.to_string_lossy().into_owned(),
        source,
    })
}

/// `setpriv` on PATH, on Linux.
fn setpriv() -> Option<std::path::PathBuf> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("setpriv"))
        .find(|candidate| candidate.is_file())
}

/// Cargo names itself in CARGO when it runs a plugin; use the same toolchain.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn free_loopback_addr() -> Result<String, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(Error::system("bind a loopback port"))?;
    let addr = listener
        .local_addr()
        .map_err(Error::system("read a loopback address"))?;
    Ok(addr.to_string())
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "cargo bonny dev: {line}");
}
