//! The peer benchmark: the Widget controller of bonny-rs, of plain kube-runtime and of Go's
//! controller-runtime, each on its own fresh local control plane in the same run, and what
//! each cost: time, API requests (from the API server's `apiserver_request_total`), memory
//! and CPU. It prints figures and ratios; it asserts nothing about them, and fails only when a
//! peer does not do the job (a widget not reconciled or not deleted within the deadline).
//!
//! `cargo run --release --manifest-path bench/driver/Cargo.toml -- --sizes 1000,5000,10000`

mod failover;
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
    /// Widgets created at once, one or more sizes, e.g. 1000,5000,10000 [default: 200; 50
    /// with --quick]. With two sizes or more the run ends with the RSS slope over N.
    #[arg(long, visible_alias = "n", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Steady-state window, e.g. 30s [default: 30s, 10s with --quick].
    #[arg(long, value_parser = duration)]
    window: Option<Duration>,
    /// The CI size: 50 widgets, a 10 s window, bonny-rs and kube-runtime only (no Go build),
    /// the scale scenario only.
    #[arg(long)]
    quick: bool,
    /// How long reconciling or deleting all widgets may take before a peer fails.
    #[arg(long, value_parser = duration, default_value = "300s")]
    deadline: Duration,
    /// The peers, in order [default: bonny,kube-runtime,controller-runtime; bonny,kube-runtime
    /// with --quick].
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<Peer>,
    /// What to run: `scale` (every size), `foreign` (widgets beside ConfigMaps no widget
    /// owns), `failover` (kill the leader of two replicas).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "scale")]
    scenarios: Vec<Scenario>,
    /// Runs of every peer per size; the table shows medians. The order of the peers rotates per
    /// round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Requests the driver has in flight while creating or touching widgets.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Foreign scenario: ConfigMaps of about 2 KiB in ten other namespaces.
    #[arg(long, default_value_t = 10_000)]
    foreign: usize,
    /// Foreign scenario: widgets.
    #[arg(long, default_value_t = 1_000)]
    foreign_widgets: usize,
    /// Failover scenario: widgets reconciled before the leader is killed.
    #[arg(long, default_value_t = 5_000)]
    failover_n: usize,
    /// Also print every peer's requests by verb and resource.
    #[arg(long)]
    verbose: bool,
}

/// A scenario of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Scale,
    Foreign,
    Failover,
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
    let sizes = match (args.sizes.is_empty(), args.quick) {
        (false, _) => args.sizes.clone(),
        (true, true) => vec![50],
        (true, false) => vec![200],
    };
    let peers = match (args.peers.is_empty(), args.quick) {
        (false, _) => args.peers.clone(),
        (true, true) => vec![Peer::Bonny, Peer::KubeRuntime],
        (true, false) => vec![Peer::Bonny, Peer::KubeRuntime, Peer::ControllerRuntime],
    };
    let scenarios = if args.quick {
        vec![Scenario::Scale]
    } else {
        args.scenarios.clone()
    };
    let base = Settings {
        n: sizes[0],
        window: args
            .window
            .unwrap_or(Duration::from_secs(if args.quick { 10 } else { 30 })),
        deadline: args.deadline,
        concurrency: args.concurrency,
        foreign: 0,
    };
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the driver has no parent directory")?
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench.join("target"));

    let mut binaries = Vec::new();
    for &peer in &peers {
        eprintln!("building {} ...", peer.label());
        binaries.push((peer, peer.build(&bench, &target)?));
    }
    let logs = tempfile_dir()?;
    eprintln!(
        "sizes {sizes:?}, scenarios {scenarios:?}, {:?} steady-state window, {} round(s); peer logs in {}; load average {}",
        base.window,
        args.rounds,
        logs.display(),
        load_average()
    );

    let mut ok = true;
    if scenarios.contains(&Scenario::Scale) {
        let mut by_size = Vec::new();
        for &n in &sizes {
            let settings = Settings { n, ..base.clone() };
            let outcomes = rounds(&binaries, &settings, &args, &logs, &mut ok).await;
            println!();
            println!(
                "scale: {n} widgets, {} s steady-state window, {} round(s), load average at the end {}",
                settings.window.as_secs_f64(),
                args.rounds,
                load_average()
            );
            println!();
            print!("{}", table(&outcomes, n));
            by_size.push((n, outcomes));
        }
        if sizes.len() >= 2 {
            println!();
            println!("per-object memory: least-squares slope of RSS over N ({sizes:?})");
            println!();
            print!("{}", slopes(&by_size));
        }
    }
    if scenarios.contains(&Scenario::Foreign) {
        let settings = Settings {
            n: args.foreign_widgets,
            foreign: args.foreign,
            ..base.clone()
        };
        let outcomes = rounds(&binaries, &settings, &args, &logs, &mut ok).await;
        println!();
        println!(
            "foreign: {} widgets beside {} ConfigMaps of 2 KiB in other namespaces, load average at the end {}",
            settings.n,
            settings.foreign,
            load_average()
        );
        println!();
        print!("{}", table(&outcomes, settings.n));
    }
    if scenarios.contains(&Scenario::Failover) {
        let mut variants = Vec::new();
        for (peer, binary) in &binaries {
            match peer {
                Peer::Bonny => {
                    variants.push((
                        failover::Variant {
                            peer: *peer,
                            warm: false,
                        },
                        binary,
                    ));
                    variants.push((
                        failover::Variant {
                            peer: *peer,
                            warm: true,
                        },
                        binary,
                    ));
                }
                Peer::ControllerRuntime => {
                    variants.push((
                        failover::Variant {
                            peer: *peer,
                            warm: false,
                        },
                        binary,
                    ));
                }
                Peer::KubeRuntime => {}
            }
        }
        let mut rows = Vec::new();
        for round in 0..args.rounds {
            for (variant, binary) in &variants {
                eprintln!("failover round {}: {} ...", round + 1, variant.label());
                let outcome = failover::run(
                    *variant,
                    binary,
                    args.failover_n,
                    args.deadline,
                    args.concurrency,
                    &logs,
                )
                .await
                .map_err(|err| err.to_string());
                match &outcome {
                    Ok(o) => eprintln!("  {o:?}"),
                    Err(err) => {
                        eprintln!("  FAILED: {err}");
                        ok = false;
                    }
                }
                rows.push((*variant, outcome));
            }
        }
        println!();
        println!(
            "failover: {} widgets, two replicas, leader SIGKILLed; load average at the end {}",
            args.failover_n,
            load_average()
        );
        println!();
        print!("{}", failover::table(&rows));
    }
    Ok(ok)
}

/// Every peer through the scenario `args.rounds` times, rotating their order.
async fn rounds(
    binaries: &[(Peer, PathBuf)],
    settings: &Settings,
    args: &Args,
    logs: &Path,
    ok: &mut bool,
) -> Vec<(Peer, Vec<Outcome>)> {
    let mut outcomes: Vec<(Peer, Vec<Outcome>)> =
        binaries.iter().map(|&(p, _)| (p, Vec::new())).collect();
    for round in 0..args.rounds {
        for k in 0..binaries.len() {
            let (peer, binary) = &binaries[(k + round) % binaries.len()];
            eprintln!(
                "round {}: {} with {} widgets ...",
                round + 1,
                peer.label(),
                settings.n
            );
            match scenario::run(*peer, binary, settings, logs).await {
                Ok(outcome) => {
                    eprintln!(
                        "  reconciled {} in {:.2} s, deleted in {:.2} s, {} steady-state writes, peak RSS {:.1} MiB",
                        settings.n,
                        outcome.reconcile.as_secs_f64(),
                        outcome.deletion.as_secs_f64(),
                        outcome.steady.peer_writes(),
                        outcome.peak_rss_kib as f64 / 1024.0
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
                    *ok = false;
                }
            }
        }
    }
    outcomes
}

/// Least-squares fit `y = a + b x`: `(a, b)`; `None` with fewer than two distinct `x`.
fn least_squares(points: &[(f64, f64)]) -> Option<Line> {
    let count = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / count;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((mean_y - slope * mean_x, slope))
}

/// Every peer's outcomes (one per round) at one size.
type SizeOutcomes = (usize, Vec<(Peer, Vec<Outcome>)>);

/// A straight line fitted to points: intercept and slope.
type Line = (f64, f64);

/// Per peer: KiB of peak and steady RSS per widget (the slope over the sizes) and the
/// intercept, then bonny-rs's slope over every other peer's.
fn slopes(by_size: &[SizeOutcomes]) -> String {
    let peers: Vec<Peer> = by_size
        .first()
        .map(|(_, o)| o.iter().map(|(p, _)| *p).collect())
        .unwrap_or_default();
    let fit = |peer: Peer, value: fn(&Outcome) -> u64| {
        let points: Vec<(f64, f64)> = by_size
            .iter()
            .filter_map(|(n, outcomes)| {
                let (_, list) = outcomes.iter().find(|(p, _)| *p == peer)?;
                let y = median(list.iter().map(|o| value(o) as f64).collect())?;
                Some((*n as f64, y))
            })
            .collect();
        least_squares(&points)
    };
    let rows: Vec<(Peer, Option<Line>, Option<Line>)> = peers
        .iter()
        .map(|&p| (p, fit(p, |o| o.peak_rss_kib), fit(p, |o| o.steady_rss_kib)))
        .collect();
    let cell = |f: &Option<(f64, f64)>, pick: fn(&(f64, f64)) -> f64, scale: f64| {
        f.as_ref()
            .map_or("—".to_owned(), |f| format!("{:.2}", pick(f) / scale))
    };
    let mut text = String::from(
        "| peer | peak RSS KiB/widget | peak RSS at N=0 MiB | steady RSS KiB/widget | steady RSS at N=0 MiB |
|---|---:|---:|---:|---:|
",
    );
    for (peer, peak, steady) in &rows {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} |
",
            peer.label(),
            cell(peak, |f| f.1, 1.0),
            cell(peak, |f| f.0, 1024.0),
            cell(steady, |f| f.1, 1.0),
            cell(steady, |f| f.0, 1024.0),
        ));
    }
    if let Some((_, bonny_peak, bonny_steady)) = rows.iter().find(|(p, _, _)| *p == Peer::Bonny) {
        let ratio = |b: &Option<(f64, f64)>, o: &Option<(f64, f64)>| match (b, o) {
            (Some(b), Some(o)) if o.1 > 0.0 => format!("{:.2}×", b.1 / o.1),
            _ => "—".to_owned(),
        };
        for (peer, peak, steady) in rows.iter().filter(|(p, _, _)| *p != Peer::Bonny) {
            text.push_str(&format!(
                "| bonny-rs ÷ {} | {} | | {} | |\n",
                peer.label(),
                ratio(bonny_peak, peak),
                ratio(bonny_steady, steady),
            ));
        }
    }
    text
}

/// One column: header, value from an outcome, format.
struct Column {
    header: &'static str,
    value: fn(&Outcome, usize) -> f64,
    decimals: usize,
    /// Whether bonny-rs's value over another peer's means something (not for shares, nor for
    /// the driver's own cost).
    ratio: bool,
}

impl Column {
    /// A column with bonny-rs's ratio to each other peer.
    const fn new(header: &'static str, value: fn(&Outcome, usize) -> f64, decimals: usize) -> Self {
        Self {
            header,
            value,
            decimals,
            ratio: true,
        }
    }

    /// A column without ratios.
    const fn without_ratio(self) -> Self {
        Self {
            ratio: false,
            ..self
        }
    }
}

const COLUMNS: &[Column] = &[
    Column::new("startup s", |o, _| o.startup.as_secs_f64(), 2),
    Column::new("reconcile N s", |o, _| o.reconcile.as_secs_f64(), 2),
    Column::new("delete N s", |o, _| o.deletion.as_secs_f64(), 2),
    Column::new(
        "writes/widget (create)",
        |o, n| o.create.peer_writes() as f64 / n.max(1) as f64,
        2,
    ),
    Column::new(
        "writes/no-op reconcile",
        |o, n| o.steady.peer_writes() as f64 / n.max(1) as f64,
        2,
    ),
    Column::new(
        "requests/no-op reconcile",
        |o, n| o.steady.total() as f64 / n.max(1) as f64,
        2,
    ),
    Column::new("requests (run)", |o, _| o.total.total() as f64, 0),
    Column::new("409s", |o, _| o.total.conflicts() as f64, 0),
    Column::new(
        "startup RSS MiB",
        |o, _| o.startup_rss_kib as f64 / 1024.0,
        1,
    ),
    Column::new("peak RSS MiB", |o, _| o.peak_rss_kib as f64 / 1024.0, 1),
    Column::new("steady RSS MiB", |o, _| o.steady_rss_kib as f64 / 1024.0, 1),
    Column::new("CPU s", |o, _| o.cpu.as_secs_f64(), 2),
    Column::new(
        "reconcile N: peer CPU s",
        |o, _| o.reconcile_load.peer.as_secs_f64(),
        2,
    ),
    Column::new(
        "reconcile N: control plane CPU s",
        |o, _| o.reconcile_load.control_plane.as_secs_f64(),
        2,
    ),
    Column::new(
        "reconcile N: driver CPU s",
        |o, _| o.reconcile_load.driver.as_secs_f64(),
        2,
    )
    .without_ratio(),
    Column::new(
        "reconcile N: machine idle %",
        |o, _| o.reconcile_load.idle * 100.0,
        1,
    )
    .without_ratio(),
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
            .zip(COLUMNS)
            .map(|((b, p), column)| match (b, p) {
                _ if !column.ratio => String::new(),
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

    #[test]
    fn least_squares_fits_a_line() {
        let (a, b) = least_squares(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]).unwrap();
        assert!((a - 1.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9, "{a} {b}");
        assert_eq!(least_squares(&[(1.0, 3.0)]), None);
        assert_eq!(least_squares(&[(1.0, 3.0), (1.0, 4.0)]), None);
    }
}
