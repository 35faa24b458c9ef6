//! A test process stopped by SIGTERM or SIGINT leaves neither control plane processes nor the
//! environment's directory behind.
//!
//! The test runs this test binary again as a child (the ignored `child_holds_an_env`, only
//! active with `BONNY_SIGNAL_CHILD` set), reads the child's directory and process ids, signals
//! it and looks.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bonny::testing::TestEnv;

const CHILD_ENV: &str = "BONNY_SIGNAL_CHILD";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "run by the signal tests as their child process"]
async fn child_holds_an_env() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let env = TestEnv::start().await.unwrap();
    let pids: Vec<String> = env.pids().iter().map(u32::to_string).collect();
    println!("dir={}", env.dir().display());
    println!("pids={}", pids.join(","));
    std::future::pending::<()>().await;
}

/// Whether `pid` is gone (or a zombie waiting for a reaper that is not us).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn stopped_by(signal: &str, number: i32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holds_an_env", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut dir = None;
    let mut pids = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("dir=") {
            dir = Some(PathBuf::from(path));
        } else if let Some(list) = line.strip_prefix("pids=") {
            pids = list.split(',').map(str::to_owned).collect();
            break;
        }
    }
    let dir = dir.expect("the child printed its directory");
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    assert!(dir.is_dir());

    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(number), "{status}");

    assert!(
        !Path::new(&dir).exists(),
        "{} still there after {signal}",
        dir.display()
    );
    let deadline = Instant::now() + WAIT;
    while !pids.iter().all(|pid| gone(pid)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} still there after {signal}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_removes_the_directory() {
    stopped_by("TERM", 15);
}

#[test]
fn sigint_removes_the_directory() {
    stopped_by("INT", 2);
}
