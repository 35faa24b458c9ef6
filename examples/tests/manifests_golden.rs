//! Generated manifests compared with checked-in golden files (`tests/golden/*.yaml`), rendered
//! from the hello example's own resource and operator, so what users apply changes only on
//! purpose. After an intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p bonny-examples --test manifests_golden` and review the diff.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bonny::{
    manifest::{Manifests, Options},
    prelude::*,
};
use bonny_examples::hello::{self, Greeting};

/// A finalizer and an extra rule, for an operator limited to some namespaces.
#[bonny::controller(
    resource = Greeting,
    finalizer = "hello.bonny.dev/cleanup",
    rbac(group = "", resources = ["secrets"], verbs = ["get", "list", "watch"]),
)]
struct AuditController;

impl Reconcile<Greeting> for AuditController {
    async fn apply(&self, _axn: &mut Axn<Greeting>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

/// The hello example's own operator: all namespaces, leader election on.
fn hello() -> Manifests {
    hello::operator()
        .unwrap()
        .manifests(&Options::new("img:1").namespace("ops"))
        .unwrap()
}

fn namespaced() -> Manifests {
    Operator::builder()
        .name("audit-operator")
        .controller(AuditController)
        .watch_namespace("team-b")
        .watch_namespace("team-a")
        .build()
        .unwrap()
        .manifests(
            &Options::new("registry.example/audit:2.0")
                .namespace("ops")
                .replicas(3)
                .metrics_port(9090),
        )
        .unwrap()
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file `name`, or rewrites it when `UPDATE_GOLDEN` is set.
fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err}; create it with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    let show = |text: &str| text.lines().nth(line).unwrap_or("<end of file>").to_owned();
    panic!(
        "{} differs from the generated manifests at line {}:\n  golden:    {}\n  generated: {}\n\
         If the change is intended, regenerate with \
         `UPDATE_GOLDEN=1 cargo test -p bonny-examples --test manifests_golden` and review the diff.",
        path.display(),
        line + 1,
        show(&expected),
        show(actual),
    );
}

#[test]
fn hello_operator_manifests_match_the_golden_file() {
    assert_golden("hello-operator.yaml", &hello().to_yaml().unwrap());
}

#[test]
fn namespaced_operator_manifests_match_the_golden_file() {
    assert_golden("audit-operator.yaml", &namespaced().to_yaml().unwrap());
}

#[test]
fn crds_only_are_the_first_documents_of_the_stream() {
    let crds = hello().crds_yaml().unwrap();
    assert!(crds.starts_with("---\n"), "{crds}");
    assert_eq!(
        crds.matches("kind: CustomResourceDefinition").count(),
        1,
        "{crds}"
    );
    assert!(hello().to_yaml().unwrap().starts_with(&crds));
}

#[test]
fn rendering_is_deterministic() {
    let first = hello().to_yaml().unwrap();
    for _ in 0..5 {
        assert_eq!(hello().to_yaml().unwrap(), first);
    }
    let first = namespaced().to_yaml().unwrap();
    for _ in 0..5 {
        assert_eq!(namespaced().to_yaml().unwrap(), first);
    }
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bonny-golden-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn write_tree_writes_every_object_and_a_kustomization_listing_them() {
    for (name, manifests) in [("hello", hello()), ("audit", namespaced())] {
        let dir = TempDir::new(name);
        manifests.write_tree(&dir.0).unwrap();
        let kustomization = std::fs::read_to_string(dir.0.join("kustomization.yaml")).unwrap();
        assert!(
            kustomization.starts_with(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
            ),
            "{kustomization}"
        );
        let listed: Vec<&str> = kustomization
            .lines()
            .filter_map(|line| line.strip_prefix("- "))
            .collect();
        let mut written: Vec<String> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|file| file != "kustomization.yaml")
            .collect();
        written.sort();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted, written,
            "the kustomization lists every file written"
        );
        // In apply order, each file holding one document of the stream.
        let stream: String = listed
            .iter()
            .map(|file| {
                format!(
                    "---\n{}",
                    std::fs::read_to_string(dir.0.join(file)).unwrap()
                )
            })
            .collect();
        assert_eq!(stream, manifests.to_yaml().unwrap());
        assert!(listed.first().unwrap().starts_with("crd-"), "{listed:?}");
        assert_eq!(listed.last(), Some(&"deployment.yaml"), "{listed:?}");
    }
}
