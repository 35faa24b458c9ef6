//! Finding the etcd, kube-apiserver and kube-controller-manager binaries, once per process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

use super::Error;

/// Directory with the three binaries; overrides every other source.
pub(crate) const DIR_ENV: &str = "BONNY_CONTROL_PLANE_DIR";
const BUILD_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tools/control-plane/build.sh"
);

pub(crate) const ETCD: &str = "etcd";
pub(crate) const APISERVER: &str = "kube-apiserver";
pub(crate) const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// The directory holding the control plane binaries.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Resolves the binaries once per process; parallel tests wait for the first resolution
    /// instead of each starting a build.
    pub(crate) async fn get() -> Result<Binaries, Error> {
        static RESOLVED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        if let Some(resolved) = RESOLVED.get() {
            return from_resolved(resolved);
        }
        let resolved = tokio::task::spawn_blocking(|| RESOLVED.get_or_init(resolve))
            .await
            .map_err(|e| Error::Binaries {
                reason: format!("the resolving task failed: {e}"),
            })?;
        from_resolved(resolved)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The path of `name`, or an error saying how to get it.
    pub(crate) fn require(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.path(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Binaries {
                reason: format!(
                    "{} has no {name}; rebuild the control plane with `{}`",
                    self.dir.display(),
                    build_command()
                ),
            })
        }
    }
}

fn from_resolved(resolved: &Result<PathBuf, String>) -> Result<Binaries, Error> {
    match resolved {
        Ok(dir) => Ok(Binaries { dir: dir.clone() }),
        Err(reason) => Err(Error::Binaries {
            reason: reason.clone(),
        }),
    }
}

fn build_command() -> String {
    let script = Path::new(BUILD_SCRIPT);
    let shown = script
        .canonicalize()
        .unwrap_or_else(|_| script.to_path_buf());
    if shown.is_file() {
        shown.display().to_string()
    } else {
        "tools/control-plane/build.sh (in a bonny-rs checkout)".to_owned()
    }
}

fn resolve() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = [ETCD, APISERVER]
            .into_iter()
            .filter(|name| !dir.join(name).is_file())
            .collect();
        return if missing.is_empty() {
            tracing::debug!(dir = %dir.display(), "control plane binaries from {DIR_ENV}");
            Ok(dir)
        } else {
            Err(format!(
                "{DIR_ENV}={} lacks {}; point it at the directory printed by `{}`",
                dir.display(),
                missing.join(" and "),
                build_command()
            ))
        };
    }

    let mut build_failure = None;
    if Path::new(BUILD_SCRIPT).is_file() {
        match run_build_script() {
            Ok(dir) => return Ok(dir),
            Err(e) => {
                tracing::warn!("{e}; looking for an earlier build in the cache");
                build_failure = Some(e);
            }
        }
    }

    if let Some(dir) = newest_cached() {
        tracing::debug!(dir = %dir.display(), "control plane binaries from the cache");
        return Ok(dir);
    }

    let root = cache_root().map_or_else(
        || "~/.cache/bonny-rs/control-plane".to_owned(),
        |p| p.display().to_string(),
    );
    let mut reason = format!(
        "no {DIR_ENV} and no complete build under {root}; run `{}` (needs Go 1.26+; several \
         minutes the first time) or set {DIR_ENV} to a directory with etcd, kube-apiserver and \
         kube-controller-manager",
        build_command()
    );
    if let Some(failure) = build_failure {
        reason.push_str(&format!(" (running the build script failed: {failure})"));
    }
    Err(reason)
}

/// Runs the build script, its progress on our stderr; the last stdout line is the directory.
fn run_build_script() -> Result<PathBuf, String> {
    tracing::info!(
        script = BUILD_SCRIPT,
        "resolving the control plane binaries"
    );
    let mut child = Command::new("bash")
        .arg(BUILD_SCRIPT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not run `bash {BUILD_SCRIPT}`: {e}"))?;
    let mut last = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading the output of {BUILD_SCRIPT}: {e}"))?;
            if !line.trim().is_empty() {
                last = Some(line.trim().to_owned());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {BUILD_SCRIPT}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{BUILD_SCRIPT} failed ({status}); its output is above"
        ));
    }
    let dir = PathBuf::from(last.ok_or_else(|| format!("{BUILD_SCRIPT} printed no directory"))?);
    if is_complete(&dir) {
        Ok(dir)
    } else {
        Err(format!(
            "{BUILD_SCRIPT} printed {}, which lacks a binary",
            dir.display()
        ))
    }
}

fn cache_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("BONNY_CONTROL_PLANE_CACHE") {
        return Some(PathBuf::from(root));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("bonny-rs").join("control-plane"))
}

fn is_complete(dir: &Path) -> bool {
    [ETCD, APISERVER, CONTROLLER_MANAGER]
        .iter()
        .all(|name| dir.join(name).is_file())
}

/// The most recently modified complete build; `*.partial` directories are builds in progress.
fn newest_cached() -> Option<PathBuf> {
    let entries = std::fs::read_dir(cache_root()?).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| dir.extension().is_none_or(|ext| ext != "partial") && is_complete(dir))
        .max_by_key(|dir| {
            dir.metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        })
}
