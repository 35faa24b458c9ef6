//! The crates as a user gets them: `cargo package`d, unpacked into a temporary directory outside
//! this checkout, and a scaffolded operator that depends on them and on nothing here.
//!
//! The packaged crates stand in for crates.io through `[patch.crates-io]` in the temporary
//! directory's `.cargo/config.toml`, so the scaffold keeps the version requirement a user's
//! gets (`bonny-rs = "0.1"`). The unpacked crates live at a fixed place in the system's
//! temporary directory, replaced each run (tar keeps their modification times, so unchanged
//! crates are not rebuilt); each test scaffolds into a temporary directory of its own. Builds
//! share `target/scaffold` of this workspace with `tests/scaffold.rs` (build output only; no
//! source is read from the checkout), so dependencies are not compiled cold each run.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_cargo-bonny");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The crates a scaffolded operator depends on, directly or through bonny-rs.
const CRATES: [&str; 3] = ["bonny-rs", "bonny-rs-macros", "bonny-rs-rules"];
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn target_dir() -> PathBuf {
    Path::new(WORKSPACE).join("target").join("scaffold")
}

fn checkout() -> PathBuf {
    Path::new(WORKSPACE).canonicalize().unwrap()
}

/// Runs `command`; on failure, panics with everything it printed.
fn run(what: &str, command: &mut Command) -> Output {
    let started = Instant::now();
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}) after {:.0?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{what}: {:.1?}", started.elapsed());
    output
}

/// `cargo package` of the crates, once per test binary; returns the `.crate` files.
fn packaged() -> &'static [PathBuf] {
    static PACKAGED: OnceLock<Vec<PathBuf>> = OnceLock::new();
    PACKAGED.get_or_init(|| {
        let mut package = Command::new(cargo());
        package
            .args(["package", "--no-verify", "--allow-dirty", "--quiet"])
            .args(CRATES.iter().flat_map(|name| ["-p", name]))
            .arg("--target-dir")
            .arg(target_dir())
            .current_dir(WORKSPACE);
        run("cargo package", &mut package);
        CRATES
            .iter()
            .map(|name| {
                let file = target_dir()
                    .join("package")
                    .join(format!("{name}-{VERSION}.crate"));
                let size = std::fs::metadata(&file).unwrap().len();
                eprintln!("{}: {} KiB", file.display(), size / 1024);
                file
            })
            .collect()
    })
}

/// The unpacked crates and a `.cargo/config.toml` that patches crates.io with them, in the
/// system's temporary directory: once per test binary, at a place that stays the same between
/// runs of this checkout (one per checkout, so that two checkouts do not collide).
fn unpacked() -> &'static Path {
    static UNPACKED: OnceLock<PathBuf> = OnceLock::new();
    UNPACKED.get_or_init(|| {
        let tag: u32 = checkout()
            .to_string_lossy()
            .bytes()
            .fold(2166136261, |hash, byte| {
                (hash ^ u32::from(byte)).wrapping_mul(16777619)
            });
        let root = std::env::temp_dir().join(format!("bonny-rs-outside-{tag:08x}"));
        let crates = root.join("crates");
        let _ = std::fs::remove_dir_all(&crates);
        std::fs::create_dir_all(&crates).unwrap();
        let mut patch = String::from("[patch.crates-io]\n");
        for (name, file) in CRATES.iter().zip(packaged()) {
            // `--touch`: the archive keeps the sources' own times, which can be older than the
            // last build in the shared target directory; cargo would then keep a stale build
            // of a changed crate. Fresh times make it compare anew.
            run(
                "tar xzf",
                Command::new("tar")
                    .arg("xzf")
                    .arg(file)
                    .arg("--touch")
                    .arg("-C")
                    .arg(&crates),
            );
            let unpacked = crates.join(format!("{name}-{VERSION}"));
            patch.push_str(&format!("{name} = {{ path = {:?} }}\n", unpacked));
        }
        std::fs::create_dir_all(root.join(".cargo")).unwrap();
        std::fs::write(root.join(".cargo").join("config.toml"), patch).unwrap();
        root
    })
}

/// A project directory outside the checkout, under [`unpacked`]'s so that cargo finds its
/// patch, named after the test: the same path each run keeps one set of build artifacts in
/// the shared target directory instead of a new one per run. Removed on drop.
struct Outside {
    dir: PathBuf,
}

impl Outside {
    fn new(test: &str) -> Outside {
        let dir = unpacked().join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        assert!(
            !dir.canonicalize().unwrap().starts_with(checkout()),
            "the project directory must be outside the checkout"
        );
        Outside { dir }
    }

    /// `cargo bonny new widget-operator`, as a user runs it: the release requirement on
    /// bonny-rs, which the patch points at the unpacked crate.
    fn scaffold(&self) -> PathBuf {
        let started = Instant::now();
        run(
            "cargo bonny new",
            Command::new(BIN)
                .args(["bonny", "new", "widget-operator"])
                .current_dir(&self.dir),
        );
        let root = self.dir.join("widget-operator");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("\nbonny-rs = \"0.1\"\n"), "{manifest}");
        // The versions the workspace is tested with, and no resolution against the registry.
        std::fs::copy(
            Path::new(WORKSPACE).join("Cargo.lock"),
            root.join("Cargo.lock"),
        )
        .unwrap();
        eprintln!("scaffold: {:.1?}", started.elapsed());
        root
    }

    fn cargo_in(&self, root: &Path, args: &[&str]) -> Command {
        debug_assert!(root.starts_with(&self.dir));
        let mut command = Command::new(cargo());
        command
            .args(args)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", target_dir());
        command
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every package the scaffold builds comes from the temporary directory or the registry.
fn assert_nothing_from_the_checkout(outside: &Outside, root: &Path) {
    let output = run(
        "cargo metadata",
        &mut outside.cargo_in(root, &["metadata", "--format-version", "1"]),
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let temp = unpacked().canonicalize().unwrap();
    let mut local = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        assert!(
            !manifest.starts_with(checkout()),
            "{} comes from the checkout",
            manifest.display()
        );
        if package["source"].is_null() {
            assert!(manifest.starts_with(&temp), "{}", manifest.display());
            local.push(package["name"].as_str().unwrap().to_owned());
        }
    }
    local.sort();
    assert_eq!(
        local,
        [
            "bonny-rs",
            "bonny-rs-macros",
            "bonny-rs-rules",
            "widget-operator"
        ]
    );
}

#[test]
fn packaged_crates_scaffold_an_operator_whose_tests_pass_outside_the_checkout() {
    let outside = Outside::new("test");
    let started = Instant::now();
    let root = outside.scaffold();
    assert_nothing_from_the_checkout(&outside, &root);
    let output = run("cargo test", &mut outside.cargo_in(&root, &["test"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("test a_widget_gets_a_config_map_with_its_message ... ok"),
        "{stdout}"
    );
    eprintln!(
        "from `cargo bonny new` to green tests outside the checkout: {:.1?}",
        started.elapsed()
    );
}

/// The lines `cargo bonny dev` prints on stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("cargo bonny dev | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls `check` until it returns `Some`, or panics after `within`.
fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what} after {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Process ids whose parent is `pid`, and theirs, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = vec![pid];
    let mut found = Vec::new();
    while let Some(parent) = parents.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok());
            if ppid == Some(parent) {
                found.push(child);
                parents.push(child);
            }
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn cargo_bonny_dev_runs_the_scaffold_and_reconciles_an_object_made_with_kubectl() {
    let outside = Outside::new("dev");
    let root = outside.scaffold();
    // Compiled before `dev` starts, so that its own deadline is about the control plane.
    run("cargo build", &mut outside.cargo_in(&root, &["build"]));

    let mut dev = Command::new(BIN)
        .args(["bonny", "dev"])
        .current_dir(&root)
        .env("CARGO", cargo())
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut dev);
    let mut kubeconfig = None;
    let mut path = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while kubeconfig.is_none() || path.is_none() {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("cargo bonny dev prints the KUBECONFIG and PATH to export");
        if let Some(value) = line.trim().strip_prefix("export KUBECONFIG=") {
            kubeconfig = Some(PathBuf::from(value));
        } else if let Some(value) = line.trim().strip_prefix("export PATH=") {
            let dir = value.split(':').next().unwrap();
            path = Some(PathBuf::from(dir));
        }
    }
    let kubeconfig = kubeconfig.unwrap();
    let kubectl_dir = path.unwrap();
    let kubectl = |args: &[&str]| {
        let mut command = Command::new(kubectl_dir.join("kubectl"));
        command.args(args).env("KUBECONFIG", &kubeconfig);
        command
    };

    let mut apply = kubectl(&["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: example.com/v1\nkind: Widget\nmetadata: { name: hello, namespace: default }\nspec: { message: Hello }\n",
        )
        .unwrap();
    let applied = apply.wait_with_output().unwrap();
    assert!(applied.status.success(), "kubectl apply failed");
    assert_eq!(
        String::from_utf8_lossy(&applied.stdout).trim(),
        "widget.example.com/hello created"
    );
    let message = eventually("reconciled ConfigMap", Duration::from_secs(60), || {
        let output = kubectl(&[
            "get",
            "configmap",
            "hello-widget",
            "-o",
            "jsonpath={.data.message}",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    });
    assert_eq!(message, "Hello");

    let children = descendants(dev.id());
    assert!(
        !children.is_empty(),
        "the operator and the control plane run under dev"
    );
    let sent = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = dev.wait().unwrap();
    assert!(status.success(), "cargo bonny dev exited with {status}");
    assert!(
        !kubeconfig.exists(),
        "{} is still there after Ctrl-C",
        kubeconfig.display()
    );
    let env_dir = kubeconfig.parent().unwrap();
    assert!(!env_dir.exists(), "{} is still there", env_dir.display());
    let left: Vec<u32> = children.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(
        left.is_empty(),
        "processes {left:?} outlived cargo bonny dev"
    );
}
