//! `cargo bonny` as a user runs it: the binary, in temporary directories.
//!
//! The heavy test builds and tests a scaffolded operator against this checkout's bonny-rs, on a
//! real control plane (the `TestEnv` harness finds or builds the binaries itself). Its
//! dependencies compile into `target/scaffold`, kept between runs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

const BIN: &str = env!("CARGO_BIN_EXE_cargo-bonny");
const BONNY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bonny-rs");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn cargo_bonny(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("cargo-bonny starts")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that cargo-bonny failed cleanly: exit code 1, an `error:` line, no panic.
#[track_caller]
fn assert_fails_with(output: &Output, expected: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "expected {part:?} in: {stderr}");
    }
}

#[track_caller]
fn assert_succeeds(output: &Output) {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cargo-bonny-")
        .tempdir()
        .expect("temporary directory")
}

/// `cargo bonny new widget-operator` with this checkout's bonny-rs, in `parent`.
fn scaffold(parent: &Path) -> PathBuf {
    let output = cargo_bonny(
        parent,
        &["bonny", "new", "widget-operator", "--bonny-path", BONNY],
    );
    assert_succeeds(&output);
    parent.join("widget-operator")
}

#[test]
fn new_writes_the_crate_with_a_path_dependency() {
    let dir = temp_dir();
    let root = scaffold(dir.path());
    for file in [
        "Cargo.toml",
        "src/main.rs",
        "src/lib.rs",
        "src/widget.rs",
        "tests/controller.rs",
        "Dockerfile",
        ".dockerignore",
        ".gitignore",
        "README.md",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let bonny = Path::new(BONNY).canonicalize().expect("bonny-rs");
    assert!(
        manifest.contains(&format!("bonny-rs = {{ path = \"{}\" }}", bonny.display())),
        "{manifest}"
    );
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.starts_with("# widget-operator\n\n```sh\ncargo bonny dev "),
        "the README starts with its two commands:\n{readme}"
    );
    assert!(readme.contains("\ncargo test "), "{readme}");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("USER nonroot"), "{dockerfile}");
}

#[test]
fn new_rejects_a_bad_name_with_the_rule_and_a_fix() {
    let dir = temp_dir();
    let output = cargo_bonny(dir.path(), &["bonny", "new", "Widget_Operator"]);
    assert_fails_with(
        &output,
        &["DNS-1123 label", "found `W`", "try `widget-operator`"],
    );
    let output = cargo_bonny(dir.path(), &["bonny", "new", "2fa"]);
    assert_fails_with(&output, &["cannot start with a digit", "try `my-2fa`"]);
    let output = cargo_bonny(
        dir.path(),
        &["bonny", "new", "widget-operator", "--kind", "widget"],
    );
    assert_fails_with(&output, &["PascalCase", "try `Widget`"]);
    let output = cargo_bonny(
        dir.path(),
        &["bonny", "new", "widgets", "--group", "example"],
    );
    assert_fails_with(&output, &["at least one dot"]);
    let output = cargo_bonny(
        dir.path(),
        &["bonny", "new", "widgets", "--bonny-path", "."],
    );
    assert_fails_with(&output, &["--bonny-path", "bonny-rs"]);
    let leftovers = std::fs::read_dir(dir.path()).expect("read").count();
    assert_eq!(leftovers, 0, "nothing is written for a bad name");
}

#[test]
fn a_kind_derived_from_the_name_that_cannot_be_used_points_at_kind() {
    let dir = temp_dir();
    let output = cargo_bonny(dir.path(), &["bonny", "new", "operator"]);
    assert_fails_with(&output, &["`Operator` clashes", "--kind"]);
}

#[test]
fn new_refuses_a_non_empty_directory_without_force() {
    let dir = temp_dir();
    let target = dir.path().join("existing");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("notes.txt"), "mine").expect("write");
    let args = ["bonny", "new", "widget-operator", "--path", "existing"];

    let output = cargo_bonny(dir.path(), &args);
    assert_fails_with(
        &output,
        &["existing already exists and is not empty", "--force"],
    );
    assert!(!target.join("Cargo.toml").exists());

    let output = cargo_bonny(dir.path(), &[&args[..], &["--force"]].concat());
    assert_succeeds(&output);
    assert!(target.join("Cargo.toml").is_file());
    assert_eq!(
        std::fs::read_to_string(target.join("notes.txt")).expect("kept"),
        "mine"
    );
}

#[test]
fn gen_controller_adds_a_module_and_says_how_to_register_it() {
    let dir = temp_dir();
    let root = scaffold(dir.path());
    let output = cargo_bonny(&root, &["bonny", "gen", "controller", "HTTPRoute"]);
    assert_succeeds(&output);
    assert!(
        stdout(&output).contains(".controller(widget_operator::http_route::HTTPRouteController)"),
        "{}",
        stdout(&output)
    );
    let module = std::fs::read_to_string(root.join("src/http_route.rs")).expect("module");
    assert!(
        module.contains("pub struct HTTPRouteController;"),
        "{module}"
    );
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib");
    assert!(
        lib.contains("pub mod widget;\npub mod http_route;\n"),
        "{lib}"
    );

    let output = cargo_bonny(&root, &["bonny", "gen", "controller", "HTTPRoute"]);
    assert_fails_with(&output, &["src/http_route.rs already exists"]);
    let output = cargo_bonny(&root, &["bonny", "gen", "controller", "gadget"]);
    assert_fails_with(&output, &["PascalCase", "try `Gadget`"]);
}

#[test]
fn gen_controller_outside_a_crate_says_where_it_looked() {
    let dir = temp_dir();
    let output = cargo_bonny(dir.path(), &["bonny", "gen", "controller", "Gadget"]);
    let looked = dir.path().join("Cargo.toml");
    assert_fails_with(&output, &[&looked.display().to_string(), "--manifest-path"]);

    let output = cargo_bonny(dir.path(), &["bonny", "manifests", "--image", "x:1"]);
    assert_fails_with(&output, &[&looked.display().to_string(), "--manifest-path"]);

    std::fs::write(&looked, "[package]\nname = \"plain\"\n").expect("write");
    let output = cargo_bonny(dir.path(), &["bonny", "gen", "controller", "Gadget"]);
    assert_fails_with(&output, &["src/lib.rs", "needs a src/lib.rs"]);
}

#[test]
fn gen_webhook_and_gen_version_add_modules_and_refuse_what_they_cannot_do() {
    let dir = temp_dir();
    let root = scaffold(dir.path());
    let output = cargo_bonny(&root, &["bonny", "gen", "webhook", "Widget"]);
    assert_succeeds(&output);
    for line in [
        "Created src/widget_webhook.rs and declared `pub mod widget_webhook;` in src/lib.rs.",
        "            .validate(widget_operator::widget_webhook::validate)",
        "            .defaults(widget_operator::widget_webhook::default),",
    ] {
        assert!(stdout(&output).contains(line), "{}", stdout(&output));
    }
    let output = cargo_bonny(&root, &["bonny", "gen", "version", "Widget", "v1alpha1"]);
    assert_succeeds(&output);
    assert!(
        stdout(&output)
            .contains("versions = [crate::widget_v1alpha1::Widget, Widget], storage = \"v1\""),
        "{}",
        stdout(&output)
    );
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib");
    assert!(
        lib.contains("pub mod widget;\npub mod widget_webhook;\npub mod widget_v1alpha1;\n"),
        "{lib}"
    );
    let version = std::fs::read_to_string(root.join("src/widget_v1alpha1.rs")).expect("version");
    assert!(version.contains("version = \"v1alpha1\""), "{version}");

    let output = cargo_bonny(&root, &["bonny", "gen", "webhook", "Widget"]);
    assert_fails_with(
        &output,
        &["src/widget_webhook.rs already exists", "remove it first"],
    );
    let output = cargo_bonny(&root, &["bonny", "gen", "version", "Widget", "v1alpha1"]);
    assert_fails_with(&output, &["src/widget_v1alpha1.rs already exists"]);
    let output = cargo_bonny(&root, &["bonny", "gen", "webhook", "Gadget"]);
    assert_fails_with(
        &output,
        &[
            "no custom resource of Kind `Gadget`",
            "(found: Widget)",
            "`cargo bonny gen controller Gadget`",
        ],
    );
    let output = cargo_bonny(&root, &["bonny", "gen", "webhook", "widget"]);
    assert_fails_with(&output, &["PascalCase", "try `Widget`"]);
    let output = cargo_bonny(&root, &["bonny", "gen", "version", "Widget", "v1"]);
    assert_fails_with(
        &output,
        &["`Widget` is already declared as v1", "e.g. `v1alpha1`"],
    );
    let output = cargo_bonny(&root, &["bonny", "gen", "version", "Widget", "1.0"]);
    assert_fails_with(&output, &["invalid version `1.0`", "`v1beta1`"]);

    for file in ["src/widget.rs", "src/widget_v1alpha1.rs"] {
        std::fs::write(root.join(file), "//! Gone.\n").expect("write");
    }
    let output = cargo_bonny(&root, &["bonny", "gen", "webhook", "Widget"]);
    assert_fails_with(
        &output,
        &[
            "no custom resource of Kind `Widget`",
            "gen controller Widget",
        ],
    );
}

#[test]
fn gen_webhook_outside_an_operator_crate_says_what_is_missing() {
    let dir = temp_dir();
    let looked = dir.path().join("Cargo.toml");
    for args in [
        &["bonny", "gen", "webhook", "Gadget"][..],
        &["bonny", "gen", "version", "Gadget", "v2"],
    ] {
        let output = cargo_bonny(dir.path(), args);
        assert_fails_with(&output, &[&looked.display().to_string(), "--manifest-path"]);
    }
    std::fs::write(&looked, "[workspace]\nmembers = []\n").expect("write");
    let output = cargo_bonny(dir.path(), &["bonny", "gen", "webhook", "Gadget"]);
    assert_fails_with(&output, &["has no [package] name", "--manifest-path"]);
    std::fs::write(&looked, "[package]\nname = \"plain\"\n").expect("write");
    let output = cargo_bonny(dir.path(), &["bonny", "gen", "webhook", "Gadget"]);
    assert_fails_with(&output, &["needs a src/lib.rs"]);
    std::fs::create_dir(dir.path().join("src")).expect("mkdir");
    std::fs::write(dir.path().join("src/lib.rs"), "pub fn f() {}\n").expect("write");
    let output = cargo_bonny(dir.path(), &["bonny", "gen", "version", "Gadget", "v2"]);
    assert_fails_with(
        &output,
        &["no custom resource of Kind `Gadget`", "gen controller"],
    );
    let leftovers = std::fs::read_dir(dir.path().join("src"))
        .expect("read")
        .count();
    assert_eq!(leftovers, 1, "nothing is written on an error");
}

#[test]
fn every_command_has_help_and_usage_errors_do_not_panic() {
    let dir = temp_dir();
    for args in [
        &["bonny", "--help"][..],
        &["bonny", "new", "--help"],
        &["bonny", "gen", "--help"],
        &["bonny", "gen", "controller", "--help"],
        &["bonny", "gen", "webhook", "--help"],
        &["bonny", "gen", "version", "--help"],
        &["bonny", "manifests", "--help"],
        &["bonny", "dev", "--help"],
        &["bonny", "control-plane", "--help"],
        &["new", "--help"],
    ] {
        let output = cargo_bonny(dir.path(), args);
        assert_succeeds(&output);
        assert!(
            stdout(&output).contains("Usage: cargo bonny"),
            "{args:?}: {}",
            stdout(&output)
        );
    }
    let output = cargo_bonny(dir.path(), &["bonny", "new"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("<NAME>"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"));
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
        stdout(&output),
        stderr(&output)
    );
    eprintln!("{what}: {:.1?}", started.elapsed());
    output
}

#[test]
fn the_scaffold_builds_and_its_test_passes_on_a_real_api_server() {
    let dir = temp_dir();
    let root = scaffold(dir.path());
    let output = cargo_bonny(&root, &["bonny", "gen", "controller", "Gadget"]);
    assert_succeeds(&output);
    register_webhooks_and_a_version(&root);
    // The workspace's lock file pins the versions bonny-rs is tested with, and spares a
    // resolution against the registry.
    std::fs::copy(
        Path::new(WORKSPACE).join("Cargo.lock"),
        root.join("Cargo.lock"),
    )
    .expect("copy Cargo.lock");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = Path::new(WORKSPACE).join("target").join("scaffold");
    let cargo_in = |args: &[&str]| {
        let mut command = Command::new(&cargo);
        command
            .args(args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target);
        command
    };
    let started = Instant::now();
    for (what, args) in [("cargo build", &["build"][..]), ("cargo test", &["test"])] {
        let output = run(what, &mut cargo_in(args));
        let stderr = stderr(&output);
        assert!(
            !stderr.contains("warning: `widget-operator`"),
            "the generated code has warnings:\n{stderr}"
        );
        if what == "cargo test" {
            let stdout = stdout(&output);
            for test in [
                "widget_webhook::tests::an_unknown_tier_is_refused_with_the_tiers",
                "widget_webhook::tests::a_missing_tier_is_defaulted_and_a_set_one_kept",
                "gadget_webhook::tests::a_tier_change_is_allowed_with_a_warning",
                "widget_v1alpha1::tests::both_versions_merge_into_one_crd_stored_as_v1",
                "widget_v1alpha1::tests::the_conversion_knows_both_versions",
                "widget_v1alpha1::tests::an_object_converts_to_v1_and_back_unchanged",
            ] {
                assert!(
                    stdout.contains(&format!("test {test} ... ok")),
                    "{test}:\n{stdout}"
                );
            }
        }
    }
    eprintln!("scaffold build + test: {:.1?}", started.elapsed());

    let mut manifests = Command::new(BIN);
    manifests
        .args([
            "bonny",
            "manifests",
            "--image",
            "registry.example.com/widget-operator:1",
        ])
        .current_dir(&root)
        .env("CARGO", &cargo)
        .env("CARGO_TARGET_DIR", &target);
    let yaml = stdout(&run("cargo bonny manifests", &mut manifests));
    for expected in [
        "name: widgets.example.com",
        "kind: ClusterRole",
        "- configmaps",
        "image: registry.example.com/widget-operator:1",
        "kind: ValidatingWebhookConfiguration",
        "kind: MutatingWebhookConfiguration",
        "path: /validate/example.com/v1/gadgets",
        "path: /mutate/example.com/v1/widgets",
        "strategy: Webhook",
        "path: /convert/example.com/widgets",
        "- name: v1alpha1",
    ] {
        assert!(yaml.contains(expected), "{expected:?} missing from\n{yaml}");
    }
}

/// `gen webhook` for both resources and `gen version Widget v1alpha1`, then the lines they print
/// added where they say: the webhooks on the operator in src/main.rs, both versions on the
/// Widget controller.
fn register_webhooks_and_a_version(root: &Path) {
    let mut printed = String::new();
    for args in [
        &["bonny", "gen", "webhook", "Widget"][..],
        &["bonny", "gen", "webhook", "Gadget"],
        &["bonny", "gen", "version", "Widget", "v1alpha1"],
    ] {
        let output = cargo_bonny(root, args);
        assert_succeeds(&output);
        printed.push_str(&stdout(&output));
    }
    let registration = [
        ".validate(widget_operator::widget_webhook::validate)",
        ".defaults(widget_operator::widget_webhook::default)",
        ".validate(widget_operator::gadget_webhook::validate)",
        ".defaults(widget_operator::gadget_webhook::default)",
        ".convert(widget_operator::widget_v1alpha1::conversion())",
    ];
    let versions = "versions = [crate::widget_v1alpha1::Widget, Widget], storage = \"v1\"";
    for line in registration.iter().chain([&versions]) {
        assert!(printed.contains(line), "{line:?} not printed:\n{printed}");
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{from:?} not in {file}:\n{text}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    };
    let controller = "        .controller(WidgetController)\n";
    edit(
        "src/main.rs",
        controller,
        &format!(
            "{controller}        .webhooks(\n            bonny::webhook::Webhooks::new()\n{}        )\n",
            registration
                .iter()
                .map(|call| format!("                {call}\n"))
                .collect::<String>()
        ),
    );
    edit(
        "src/widget.rs",
        "resource = Widget,",
        &format!("resource = Widget, {versions},"),
    );
}
