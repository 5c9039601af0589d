//! Signals: SIGTERM and SIGINT stop the exporter; SIGHUP reloads the configuration.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::http::reload::Reload;

/// SIGTERM and SIGINT stop the exporter; SIGHUP reloads the configuration.
pub(super) async fn watch_signals(shutdown: CancellationToken, reloads: mpsc::Sender<Reload>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            tracing::error!("cannot install signal handlers; stop the exporter with SIGKILL");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received, shutting down"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received, shutting down"); break; }
                _ = hup.recv() => {
                    // Never awaited: a full queue must not keep this loop from seeing SIGTERM.
                    match reloads.try_send(Reload::unattended()) {
                        Ok(()) => tracing::info!("SIGHUP received, reloading the configuration"),
                        Err(_) => tracing::info!("SIGHUP received; a reload is already queued, which will read the file as it is now"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloads;
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupt received, shutting down");
        }
    }
    shutdown.cancel();
    // Shutdown is bounded whatever hangs: a second signal, or the deadline, ends the process.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                () = tokio::time::sleep(SHUTDOWN_DEADLINE) => {}
            }
            tracing::warn!("shutdown did not finish in time; exiting now");
            std::process::exit(1);
        }
    }
}

/// The longest a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
