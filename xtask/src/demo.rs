//! The demo: the hello-world operator in two replicas with leader election, a leader crash,
//! and the standby taking over.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use bonny::testing::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
};
use tokio::process::{Child, Command};

const NAMESPACE: &str = "default";
const OPERATOR: &str = "hello-operator";
const WAIT: Duration = Duration::from_secs(60);

pub fn run() -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?
        .block_on(demo())
}

struct Clock(Instant);

impl Clock {
    fn say(&self, text: impl AsRef<str>) {
        println!(
            "[{:>6.2}s] {}",
            self.0.elapsed().as_secs_f64(),
            text.as_ref()
        );
    }
}

async fn demo() -> Result<(), String> {
    let clock = Clock(Instant::now());
    clock.say("building the hello-world operator (cargo build -p bonny-examples) ...");
    crate::cargo(&[
        "build",
        "--quiet",
        "-p",
        "bonny-examples",
        "--bin",
        "hello-operator",
    ])?;
    let binary = target_dir().join("debug").join("hello-operator");

    // A real cluster when KUBECONFIG says so, else a local etcd + kube-apiserver.
    let (env, kubeconfig) = match std::env::var_os("KUBECONFIG") {
        Some(path) => {
            clock.say(format!(
                "using the cluster of KUBECONFIG={}",
                PathBuf::from(&path).display()
            ));
            (None, PathBuf::from(path))
        }
        None => {
            clock.say("starting a local control plane (etcd + kube-apiserver; the first run builds them from Go modules, which takes minutes) ...");
            let env = TestEnv::start().await.map_err(|err| err.to_string())?;
            clock.say(format!("control plane ready at {}", env.server_url()));
            let path = env.kubeconfig_path().to_path_buf();
            (Some(env), path)
        }
    };
    let client = match &env {
        Some(env) => env.client(),
        None => Client::try_default()
            .await
            .map_err(|err| format!("cannot use KUBECONFIG: {err}"))?,
    };

    clock.say(
        "installing the CRD generated from the Greeting type (hello-operator manifests --crds)",
    );
    let crds = std::process::Command::new(&binary)
        .args(["manifests", "--crds"])
        .output()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    let crds = String::from_utf8(crds.stdout).map_err(|err| err.to_string())?;
    match &env {
        Some(env) => env
            .install_crds_yaml(&crds)
            .await
            .map_err(|err| err.to_string())?,
        None => install_crds(&client, &crds).await?,
    }

    let logs = std::env::temp_dir().join(format!("bonny-demo-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|err| err.to_string())?;
    let mut replicas = vec![
        Replica::start(&binary, &kubeconfig, "hello-operator-a", &logs)?,
        Replica::start(&binary, &kubeconfig, "hello-operator-b", &logs)?,
    ];
    clock.say(format!(
        "started two replicas, hello-operator-a and hello-operator-b (logs in {})",
        logs.display()
    ));

    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let lease_name = bonny::leader::default_lease_name(NAMESPACE, OPERATOR);
    let leader = wait_for(WAIT, || async { holder(&leases, &lease_name).await }).await?;
    clock.say(format!(
        "{leader} holds the Lease {lease_name}: it runs the controllers, the other stands by"
    ));

    let greetings = greetings_api(&client);
    for (name, salutation, whom) in [
        ("world", "Hello", "World"),
        ("team", "Good morning", "team"),
    ] {
        create_greeting(&greetings, name, salutation, whom).await?;
        clock.say(format!("created Greeting {name}"));
    }
    for name in ["world", "team"] {
        let (message, by) = wait_for(WAIT, || async { status_of(&greetings, name).await }).await?;
        clock.say(format!(
            "Greeting {name} reconciled by {by}: status.message = {message:?}"
        ));
    }

    let index = replicas
        .iter()
        .position(|replica| replica.name == leader)
        .ok_or_else(|| {
            format!("the Lease names {leader}, which is not one of the demo's replicas")
        })?;
    let mut killed = replicas.remove(index);
    killed.child.start_kill().map_err(|err| err.to_string())?;
    let _ = killed.child.wait().await;
    let killed_at = Instant::now();
    clock.say(format!(
        "killed the leader {leader} with SIGKILL: no chance to release the Lease"
    ));

    let successor = wait_for(WAIT, || async {
        holder(&leases, &lease_name)
            .await
            .filter(|holder| *holder != leader)
    })
    .await?;
    clock.say(format!(
        "{successor} took over after {:.1}s (lease duration 4s)",
        killed_at.elapsed().as_secs_f64()
    ));
    create_greeting(&greetings, "after-failover", "Hi", "standby").await?;
    let (message, by) = wait_for(WAIT, || async {
        status_of(&greetings, "after-failover").await
    })
    .await?;
    clock.say(format!(
        "Greeting after-failover reconciled by {by}: status.message = {message:?}"
    ));

    for mut replica in replicas {
        replica.terminate().await;
    }
    clock.say("stopped the remaining replica with SIGTERM (it releases the Lease)");
    drop(env);
    clock.say("control plane stopped; demo done");
    Ok(())
}

struct Replica {
    name: String,
    child: Child,
}

impl Replica {
    fn start(binary: &Path, kubeconfig: &Path, name: &str, logs: &Path) -> Result<Self, String> {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))
            .map_err(|err| err.to_string())?;
        let child = Command::new(binary)
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("BONNY_POD_NAME", name)
            .env("BONNY_POD_NAMESPACE", NAMESPACE)
            .env("BONNY_HTTP_ADDR", "off")
            .env("BONNY_LEASE_DURATION", "4s")
            .env("BONNY_RENEW_DEADLINE", "3s")
            .env("BONNY_RETRY_PERIOD", "500ms")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

fn greetings_api(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("hello.bonny.dev", "v1", "Greeting"),
        "greetings",
    );
    Api::namespaced_with(client.clone(), NAMESPACE, &resource)
}

async fn create_greeting(
    api: &Api<DynamicObject>,
    name: &str,
    salutation: &str,
    whom: &str,
) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "hello.bonny.dev/v1",
        "kind": "Greeting",
        "metadata": { "name": name },
        "spec": { "salutation": salutation, "name": whom },
    }))
    .map_err(|err| err.to_string())?;
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|err| format!("cannot create Greeting {name}: {err}"))
}

async fn status_of(api: &Api<DynamicObject>, name: &str) -> Option<(String, String)> {
    let object = api.get(name).await.ok()?;
    let status = object.data.get("status")?;
    let message = status.get("message")?.as_str()?.to_owned();
    let by = status
        .get("greetedBy")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    Some((message, by))
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

async fn install_crds(client: &Client, yaml: &str) -> Result<(), String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for document in yaml.split("\n---").filter(|doc| doc.contains("kind:")) {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(document)
            .map_err(|err| format!("the generated CRD does not parse: {err}"))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("bonny-demo").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|err| format!("cannot install CRD {name}: {err}"))?;
    }
    Ok(())
}

async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing happened within {timeout:?}; see the replica logs"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
