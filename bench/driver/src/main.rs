//! The peer benchmark: the Widget controller of bonny-rs, of plain kube-runtime and of Go's
//! controller-runtime, each on its own fresh local control plane in the same run, and what
//! each cost: time, API requests (from the API server's `apiserver_request_total`), memory
//! and CPU. It prints figures and ratios; it asserts nothing about them, and fails only when a
//! peer does not do the job (a widget not reconciled or not deleted within the deadline).
//!
//! `cargo run --release --manifest-path bench/driver/Cargo.toml -- --n 200`

mod peer;
mod requests;
mod scenario;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;

use peer::Peer;
use scenario::{Outcome, Settings};

/// Errors end the run with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Benchmarks bonny-rs against plain kube-runtime and controller-runtime on the same Widget
/// controller.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Widgets created at once [default: 200, 50 with --quick].
    #[arg(long)]
    n: Option<usize>,
    /// Steady-state window, e.g. 30s [default: 30s, 10s with --quick].
    #[arg(long, value_parser = duration)]
    window: Option<Duration>,
    /// A short run: fewer widgets and a shorter window.
    #[arg(long)]
    quick: bool,
    /// How long reconciling or deleting all widgets may take before a peer fails.
    #[arg(long, value_parser = duration, default_value = "300s")]
    deadline: Duration,
    /// The peers, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bonny,kube-runtime,controller-runtime"
    )]
    peers: Vec<Peer>,
    /// Runs of every peer; the table shows medians. The order of the peers rotates per round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Requests the driver has in flight while creating or touching widgets.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Also print every peer's requests by verb and resource.
    #[arg(long)]
    verbose: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    bonny::operator::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 30s, 500ms or 2m"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)` when a peer failed functionally.
async fn run(args: Args) -> Result<bool, BoxError> {
    let settings = Settings {
        n: args.n.unwrap_or(if args.quick { 50 } else { 200 }),
        window: args
            .window
            .unwrap_or(Duration::from_secs(if args.quick { 10 } else { 30 })),
        deadline: args.deadline,
        concurrency: args.concurrency,
    };
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the driver has no parent directory")?
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench.join("target"));

    let mut binaries = Vec::new();
    for &peer in &args.peers {
        eprintln!("building {} ...", peer.label());
        binaries.push((peer, peer.build(&bench, &target)?));
    }
    let logs = tempfile_dir()?;
    eprintln!(
        "{} widgets, {:?} steady-state window, {} round(s); peer logs in {}; load average {}",
        settings.n,
        settings.window,
        args.rounds,
        logs.display(),
        load_average()
    );

    let mut outcomes: Vec<(Peer, Vec<Outcome>)> =
        args.peers.iter().map(|&p| (p, Vec::new())).collect();
    let mut ok = true;
    for round in 0..args.rounds {
        for k in 0..binaries.len() {
            let (peer, binary) = &binaries[(k + round) % binaries.len()];
            eprintln!("round {}: {} ...", round + 1, peer.label());
            match scenario::run(*peer, binary, &settings, &logs).await {
                Ok(outcome) => {
                    eprintln!(
                        "  reconciled {} in {:.2} s, deleted in {:.2} s, {} steady-state writes",
                        settings.n,
                        outcome.reconcile.as_secs_f64(),
                        outcome.deletion.as_secs_f64(),
                        outcome.steady.peer_writes()
                    );
                    if args.verbose {
                        eprintln!("  create phase: {}", outcome.create.describe());
                        eprintln!("  steady window: {}", outcome.steady.describe());
                        eprintln!("  whole run: {}", outcome.total.describe());
                    }
                    if let Some((_, list)) = outcomes.iter_mut().find(|(p, _)| p == peer) {
                        list.push(outcome);
                    }
                }
                Err(err) => {
                    eprintln!("  FAILED: {err}");
                    ok = false;
                }
            }
        }
    }
    println!();
    println!(
        "{} widgets, {} s steady-state window, {} round(s), load average at the end {}",
        settings.n,
        settings.window.as_secs_f64(),
        args.rounds,
        load_average()
    );
    println!();
    print!("{}", table(&outcomes, settings.n));
    Ok(ok)
}

/// One column: header, value from an outcome, format.
struct Column {
    header: &'static str,
    value: fn(&Outcome, usize) -> f64,
    decimals: usize,
}

const COLUMNS: &[Column] = &[
    Column {
        header: "startup s",
        value: |o, _| o.startup.as_secs_f64(),
        decimals: 2,
    },
    Column {
        header: "reconcile N s",
        value: |o, _| o.reconcile.as_secs_f64(),
        decimals: 2,
    },
    Column {
        header: "delete N s",
        value: |o, _| o.deletion.as_secs_f64(),
        decimals: 2,
    },
    Column {
        header: "writes/widget (create)",
        value: |o, n| o.create.peer_writes() as f64 / n.max(1) as f64,
        decimals: 2,
    },
    Column {
        header: "writes/no-op reconcile",
        value: |o, n| o.steady.peer_writes() as f64 / n.max(1) as f64,
        decimals: 2,
    },
    Column {
        header: "requests/no-op reconcile",
        value: |o, n| o.steady.total() as f64 / n.max(1) as f64,
        decimals: 2,
    },
    Column {
        header: "requests (run)",
        value: |o, _| o.total.total() as f64,
        decimals: 0,
    },
    Column {
        header: "409s",
        value: |o, _| o.total.conflicts() as f64,
        decimals: 0,
    },
    Column {
        header: "peak RSS MiB",
        value: |o, _| o.peak_rss_kib as f64 / 1024.0,
        decimals: 1,
    },
    Column {
        header: "steady RSS MiB",
        value: |o, _| o.steady_rss_kib as f64 / 1024.0,
        decimals: 1,
    },
    Column {
        header: "CPU s",
        value: |o, _| o.cpu.as_secs_f64(),
        decimals: 2,
    },
];

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

/// A Markdown table of medians, then bonny-rs's ratio to every other peer (below 1: bonny-rs
/// spent less).
fn table(outcomes: &[(Peer, Vec<Outcome>)], n: usize) -> String {
    let medians: Vec<(Peer, Vec<Option<f64>>)> = outcomes
        .iter()
        .map(|(peer, list)| {
            let values = COLUMNS
                .iter()
                .map(|c| median(list.iter().map(|o| (c.value)(o, n)).collect()))
                .collect();
            (*peer, values)
        })
        .collect();
    let mut text = String::new();
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.header).collect();
    text.push_str(&format!("| peer | {} |\n", header.join(" | ")));
    text.push_str(&format!("|---|{}\n", "---:|".repeat(COLUMNS.len())));
    for (peer, values) in &medians {
        let cells: Vec<String> = values
            .iter()
            .zip(COLUMNS)
            .map(|(v, c)| match v {
                Some(v) => format!("{v:.*}", c.decimals),
                None => "failed".to_owned(),
            })
            .collect();
        text.push_str(&format!("| {} | {} |\n", peer.label(), cells.join(" | ")));
    }
    let Some((_, bonny)) = medians.iter().find(|(p, _)| *p == Peer::Bonny) else {
        return text;
    };
    for (peer, values) in medians.iter().filter(|(p, _)| *p != Peer::Bonny) {
        let cells: Vec<String> = bonny
            .iter()
            .zip(values)
            .map(|(b, p)| match (b, p) {
                (Some(b), Some(p)) if *p > 0.0 => format!("{:.2}×", b / p),
                (Some(b), Some(_)) if *b == 0.0 => "0 vs 0".to_owned(),
                (Some(_), Some(_)) => "∞".to_owned(),
                _ => "—".to_owned(),
            })
            .collect();
        text.push_str(&format!(
            "| bonny-rs ÷ {} | {} |\n",
            peer.label(),
            cells.join(" | ")
        ));
    }
    text
}

/// A directory for the peers' logs that outlives the run (it is small).
fn tempfile_dir() -> Result<PathBuf, BoxError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = std::env::temp_dir().join(format!("bonny-bench-{stamp}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
    }
}
