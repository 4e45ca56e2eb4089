//! systemd integration for `Type=notify` services: READY once the service serves, STOPPING on shutdown, and the
//! watchdog kept alive while the async runtime is responsive (`WatchdogSec=`). Without `NOTIFY_SOCKET` (not run by
//! systemd) every call does nothing.

use sd_notify::NotifyState;

/// Tells systemd the service is up, with a one-line status.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!("cannot notify systemd (READY): {e}");
    }
}

/// Tells systemd the service is shutting down.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// When systemd asked for a watchdog (`WATCHDOG_USEC` for this process), pings it at half the interval from a task
/// on the runtime: a runtime too stuck to run it gets the service restarted.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let every = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                tracing::warn!("cannot notify systemd (WATCHDOG): {e}");
            }
        }
    }))
}
