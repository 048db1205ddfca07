//! Service-manager readiness (systemd `Type=notify`): the server tells the
//! manager `READY=1` with a `STATUS=` once every worker is bound and serving,
//! and `STOPPING=1` when a stop signal arrives. Messages go to the Unix
//! datagram socket named by `NOTIFY_SOCKET` (through the `sd-notify` crate);
//! without that variable every call does nothing. A failed notification is
//! reported on stderr and never stops the server.

use crate::stderr;
use sd_notify::NotifyState;

/// `READY=1` and `STATUS=<status>`: call once the server answers datagrams.
pub fn ready(status: &str) {
    send(
        "READY=1",
        &[NotifyState::Ready, NotifyState::Status(status)],
    );
}

/// `STOPPING=1`: call when a stop signal arrives.
pub fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping]);
}

fn send(what: &str, states: &[NotifyState]) {
    // Keep NOTIFY_SOCKET set (false): STOPPING=1 comes later from the same process.
    if let Err(e) = sd_notify::notify(false, states) {
        stderr::line(format_args!(
            "server: warning: cannot send {what} to the service manager at NOTIFY_SOCKET={:?}: {e} (check the unit's Type=notify and NotifyAccess=)",
            std::env::var_os("NOTIFY_SOCKET").unwrap_or_default()
        ));
    }
}
