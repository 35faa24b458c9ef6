//! SIGTERM/SIGINT handling: the first signal asks for a graceful stop, a second exits at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT; exits the process (status 130) on the
/// second. Runs until the second signal or until the returned task is aborted.
pub(crate) async fn watch_signals(token: CancellationToken) {
    let mut count = 0u32;
    loop {
        if wait_for_signal().await.is_err() {
            tracing::warn!("cannot listen for termination signals; stop the operator with SIGKILL");
            return;
        }
        count += 1;
        if count == 1 {
            tracing::info!(
                "termination signal received; shutting down gracefully (send again to exit at once)"
            );
            token.cancel();
        } else {
            tracing::warn!("second termination signal; exiting now");
            std::process::exit(130);
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
