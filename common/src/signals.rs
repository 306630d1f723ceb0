//! Waiting for the signals that stop the binaries (Ctrl-C, SIGTERM).

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// SIGHUP, the request to reload policy and certificates. Listening starts
/// at creation: from then on SIGHUP no longer ends the process.
pub struct ReloadRequests {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl ReloadRequests {
    /// Starts listening (inside a Tokio runtime).
    pub fn listen() -> std::io::Result<ReloadRequests> {
        Ok(ReloadRequests {
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        })
    }

    /// Resolves at the next SIGHUP (never, where there are no signals).
    pub async fn next(&mut self) {
        #[cfg(unix)]
        {
            if self.hangup.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}
