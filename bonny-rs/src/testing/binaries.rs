//! The control plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl): taken
//! from `BONNY_CONTROL_PLANE_DIR`, or built with `go build` from the Go module pins compiled
//! into this crate, into a cache keyed by those pins.
//!
//! The pins are `control-plane/{kubernetes,etcd}/go.{mod,sum}` of the bonny-rs package; they
//! are written into the cache next to the binaries and built there, so no checkout of
//! bonny-rs is needed, only a Go toolchain the first time.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::Error;

/// A directory with the binaries; overrides the cache and the build.
pub(crate) const DIR_ENV: &str = "BONNY_CONTROL_PLANE_DIR";
/// The cache's root directory [default: `$XDG_CACHE_HOME` or `~/.cache`, then
/// `bonny-rs/control-plane`].
pub(crate) const CACHE_ENV: &str = "BONNY_CONTROL_PLANE_CACHE";

pub(crate) const ETCD: &str = "etcd";
pub(crate) const APISERVER: &str = "kube-apiserver";
pub(crate) const CONTROLLER_MANAGER: &str = "kube-controller-manager";
pub(crate) const KUBECTL: &str = "kubectl";

/// One pinned Go module: its directory name in the cache and its files.
struct Module {
    name: &'static str,
    go_mod: &'static str,
    go_sum: &'static str,
    tools_go: &'static str,
}

const KUBERNETES: Module = Module {
    name: "kubernetes",
    go_mod: include_str!("../../control-plane/kubernetes/go.mod"),
    go_sum: include_str!("../../control-plane/kubernetes/go.sum"),
    tools_go: include_str!("../../control-plane/kubernetes/tools.go"),
};

const ETCD_SERVER: Module = Module {
    name: "etcd",
    go_mod: include_str!("../../control-plane/etcd/go.mod"),
    go_sum: include_str!("../../control-plane/etcd/go.sum"),
    tools_go: include_str!("../../control-plane/etcd/tools.go"),
};

/// A binary and the Go package it is built from.
struct Target {
    binary: &'static str,
    module: &'static Module,
    package: &'static str,
}

/// In build order: the small etcd first, so a broken toolchain shows up early.
const TARGETS: [Target; 4] = [
    Target {
        binary: ETCD,
        module: &ETCD_SERVER,
        package: "go.etcd.io/etcd/server/v3",
    },
    Target {
        binary: APISERVER,
        module: &KUBERNETES,
        package: "k8s.io/kubernetes/cmd/kube-apiserver",
    },
    Target {
        binary: CONTROLLER_MANAGER,
        module: &KUBERNETES,
        package: "k8s.io/kubernetes/cmd/kube-controller-manager",
    },
    Target {
        binary: KUBECTL,
        module: &KUBERNETES,
        package: "k8s.io/kubernetes/cmd/kubectl",
    },
];

/// The directory that holds the control plane binaries: `etcd`, `kube-apiserver`,
/// `kube-controller-manager` and `kubectl`.
///
/// [`Binaries::locate`] finds them, in this order:
/// 1. the directory in `BONNY_CONTROL_PLANE_DIR` (it must hold at least `etcd` and
///    `kube-apiserver`);
/// 2. the cache, `$BONNY_CONTROL_PLANE_CACHE/<pins>/` [default
///    `~/.cache/bonny-rs/control-plane/<pins>/`], where `<pins>` is a hash of the Go module
///    files that pin the Kubernetes and etcd releases;
/// 3. a build into that cache: `go build` of the pinned modules, with its progress on stderr.
///    This needs Go 1.26 or newer and takes several minutes on 2 cores the first time;
///    processes that need the same build at once wait for one another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds or builds the binaries; the result is remembered for the rest of the process.
    /// Blocks, for minutes when it builds; from async code prefer `TestEnv`, which calls this
    /// on a blocking thread.
    ///
    /// # Errors
    /// [`Error::Binaries`] when `BONNY_CONTROL_PLANE_DIR` lacks a binary, when Go is
    /// missing, or when the build fails; the message says what to do.
    pub fn locate() -> Result<Binaries, Error> {
        static RESOLVED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        match RESOLVED.get_or_init(resolve) {
            Ok(dir) => Ok(Binaries { dir: dir.clone() }),
            Err(reason) => Err(Error::Binaries {
                reason: reason.clone(),
            }),
        }
    }

    /// [`Binaries::locate`] on a blocking thread, so parallel tests wait for the first
    /// resolution instead of each starting a build.
    pub(crate) async fn get() -> Result<Binaries, Error> {
        tokio::task::spawn_blocking(Binaries::locate)
            .await
            .map_err(|e| Error::Binaries {
                reason: format!("the resolving task failed: {e}"),
            })?
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `kubectl`, built from the same Kubernetes release as the API server.
    ///
    /// # Errors
    /// [`Error::Binaries`] if a `BONNY_CONTROL_PLANE_DIR` without `kubectl` was given.
    pub fn kubectl(&self) -> Result<PathBuf, Error> {
        self.require(KUBECTL)
    }

    /// The path of `name`, or an error saying how to get it.
    pub(crate) fn require(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Binaries {
                reason: format!(
                    "{} has no {name}; unset {DIR_ENV} to let bonny-rs build every binary \
                     into its cache, or add {name} to that directory",
                    self.dir.display()
                ),
            })
        }
    }
}

/// The cache directory name for the pins: the first 16 hex digits of the SHA-256 of the
/// Kubernetes and etcd `go.mod` and `go.sum`, in that order.
pub(crate) fn pins_key() -> String {
    let mut hasher = Sha256::new();
    for text in [
        KUBERNETES.go_mod,
        KUBERNETES.go_sum,
        ETCD_SERVER.go_mod,
        ETCD_SERVER.go_sum,
    ] {
        hasher.update(text.as_bytes());
    }
    let digest = hasher.finalize();
    digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The Kubernetes release of the pins, e.g. `v1.37.2`.
pub(crate) fn kubernetes_version() -> &'static str {
    required_version(KUBERNETES.go_mod, "k8s.io/kubernetes").unwrap_or("(unknown)")
}

fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    go_mod.lines().find_map(|line| {
        let line = line.trim().strip_prefix("require ").unwrap_or(line.trim());
        let mut words = line.split_whitespace();
        (words.next() == Some(module))
            .then(|| words.next())
            .flatten()
    })
}

fn resolve() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        return from_env(PathBuf::from(dir));
    }
    let root = cache_root().ok_or_else(|| {
        format!(
            "no cache directory: neither {CACHE_ENV}, XDG_CACHE_HOME nor HOME is set; set one, \
             or set {DIR_ENV} to a directory with etcd, kube-apiserver, \
             kube-controller-manager and kubectl"
        )
    })?;
    let dir = root.join(pins_key());
    if missing(&dir).is_empty() {
        tracing::debug!(dir = %dir.display(), "control plane binaries from the cache");
        return Ok(dir);
    }
    build(&root, &dir)?;
    Ok(dir)
}

fn from_env(dir: PathBuf) -> Result<PathBuf, String> {
    let missing: Vec<&str> = [ETCD, APISERVER]
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        tracing::debug!(dir = %dir.display(), "control plane binaries from {DIR_ENV}");
        Ok(dir)
    } else {
        Err(format!(
            "{DIR_ENV}={} lacks {}; point it at a directory with etcd, kube-apiserver, \
             kube-controller-manager and kubectl (`cargo bonny control-plane` prints one), or \
             unset it to let bonny-rs build them",
            dir.display(),
            missing.join(" and ")
        ))
    }
}

fn cache_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os(CACHE_ENV) {
        return Some(PathBuf::from(root));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("bonny-rs").join("control-plane"))
}

fn missing(dir: &Path) -> Vec<&'static Target> {
    TARGETS
        .iter()
        .filter(|target| !dir.join(target.binary).is_file())
        .collect()
}

/// Progress for the person waiting: straight to stderr, past a test harness's capture.
fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "bonny-rs control plane: {line}");
}

/// Builds the binaries `dir` lacks, holding `<dir>.lock` so that concurrent processes build
/// once. Each binary is written under a temporary name and renamed when complete.
fn build(root: &Path, dir: &Path) -> Result<(), String> {
    let go = go_toolchain()?;
    let modules = dir.join("modules");
    std::fs::create_dir_all(&modules)
        .map_err(|e| format!("cannot create {}: {e}", modules.display()))?;
    let lock_path = root.join(format!("{}.lock", pins_key()));
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        progress(&format!(
            "another process is building into {}; waiting for it",
            dir.display()
        ));
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    }
    let targets = missing(dir);
    if targets.is_empty() {
        return Ok(());
    }
    for module in [&KUBERNETES, &ETCD_SERVER] {
        write_module(&modules, module)?;
    }

    progress(&format!(
        "building {} from Kubernetes {} with {go} into {} (the first build takes several \
         minutes on 2 cores; later runs reuse it)",
        targets
            .iter()
            .map(|t| t.binary)
            .collect::<Vec<_>>()
            .join(", "),
        kubernetes_version(),
        dir.display()
    ));
    let started = Instant::now();
    for target in targets {
        let partial = dir.join(format!("{}.partial", target.binary));
        let status = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&partial)
            .arg(target.package)
            .current_dir(modules.join(target.module.name))
            // The flags of earlier builds, so Go's build cache is shared with them.
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-trimpath")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| format!("cannot run `go build`: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`go build {}` in {} failed ({status}); Go's output is above. The pins need \
                 Go 1.26 or newer (found {go}); with GOTOOLCHAIN=auto, Go fetches a newer \
                 toolchain itself",
                target.package,
                modules.join(target.module.name).display()
            ));
        }
        let path = dir.join(target.binary);
        std::fs::rename(&partial, &path)
            .map_err(|e| format!("cannot move {} into place: {e}", partial.display()))?;
        progress(&format!(
            "{} built ({:.0?} so far)",
            target.binary,
            started.elapsed()
        ));
    }
    progress(&format!(
        "done in {:.0?}: {}",
        started.elapsed(),
        dir.display()
    ));
    Ok(())
}

fn write_module(modules: &Path, module: &Module) -> Result<(), String> {
    let dir = modules.join(module.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in [
        ("go.mod", module.go_mod),
        ("go.sum", module.go_sum),
        ("tools.go", module.tools_go),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `go version`'s answer, or how to get Go.
fn go_toolchain() -> Result<String, String> {
    let not_found = |why: String| {
        format!(
            "building them needs the Go toolchain, and {why}. Install Go 1.26 or newer \
             (https://go.dev/doc/install, or your system's package, e.g. `apt-get install \
             golang`) and make sure `go` is on PATH; or set {DIR_ENV} to a directory that \
             already holds etcd, kube-apiserver, kube-controller-manager and kubectl"
        )
    };
    let output = Command::new("go")
        .args(["env", "GOVERSION"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| not_found(format!("`go` could not be run ({e})")))?;
    if !output.status.success() {
        return Err(not_found(format!(
            "`go env GOVERSION` failed ({})",
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_16_hex_digits_of_the_pins() {
        let key = pins_key();
        assert_eq!(key.len(), 16);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    }

    #[test]
    fn the_kubernetes_release_is_read_from_its_go_mod() {
        assert!(
            kubernetes_version().starts_with("v1."),
            "{}",
            kubernetes_version()
        );
        assert_eq!(
            required_version(
                "module x\n\nrequire k8s.io/kubernetes v1.2.3\n",
                "k8s.io/kubernetes"
            ),
            Some("v1.2.3")
        );
        assert_eq!(
            required_version("require (\n\ta v1\n)\n", "k8s.io/kubernetes"),
            None
        );
    }

    #[test]
    fn every_target_builds_from_a_module_that_pins_it() {
        for target in &TARGETS {
            assert!(
                target.module.tools_go.contains(target.package),
                "{} is not imported by {}/tools.go",
                target.package,
                target.module.name
            );
        }
    }
}
