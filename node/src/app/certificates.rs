//! The node's own certificates: reloaded without a restart (`adep certs reload`,
//! SIGHUP in the binary), and warned of before they expire.

use std::sync::{Arc, PoisonError};

use crate::{
    app::{AppError, NodeState, events, state::LoadedCertificates},
    domain::audit::Event,
    store::unix_now,
};

/// How long before its own certificate expires a node starts warning.
pub const CERTIFICATE_WARNING_SECONDS: i64 = 30 * 24 * 3600;

/// The node's own certificates and their expiry, as last loaded.
pub fn loaded(state: &NodeState) -> LoadedCertificates {
    state
        .certificates
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Logs a warning for each of the node's own certificates that expires within
/// [`CERTIFICATE_WARNING_SECONDS`] (at start-up and hourly); the metric
/// `adep_certificate_expiry_seconds` says the same to monitoring.
pub fn warn_of_expiring(state: &NodeState, now: i64) {
    for (certificate, not_after) in loaded(state).certificates {
        let left = not_after - now;
        if left <= 0 {
            tracing::error!(
                certificate,
                "the node's certificate has expired; peers and users will refuse it"
            );
        } else if left < CERTIFICATE_WARNING_SECONDS {
            tracing::warn!(
                certificate,
                days_left = left / 86_400,
                "the node's certificate expires soon; renew it and reload"
            );
        }
    }
}

/// Reads the certificate, key, CA and revocation files of both listeners and of the
/// peer clients again and uses them for new connections. Everything is read and
/// checked before anything changes, so on an error nothing does. An audit event.
pub async fn reload(state: &Arc<NodeState>, by: &str) -> Result<LoadedCertificates, AppError> {
    let fresh = state.credentials.reload().map_err(|e| {
        tracing::warn!(by, error = %e, "certificate reload refused; nothing changed");
        AppError::FailedPrecondition(format!("nothing reloaded: {e}"))
    })?;
    *state
        .certificates
        .write()
        .unwrap_or_else(PoisonError::into_inner) = fresh.clone();
    tracing::info!(by, "certificates reloaded");
    events::record_durably(
        state,
        Event::new(
            "tls.reloaded",
            serde_json::json!({
                "by": by,
                "certificates": fresh
                    .certificates
                    .iter()
                    .map(|(name, until)| serde_json::json!({ "name": name, "not_after": until }))
                    .collect::<Vec<_>>(),
                "revoked": fresh.revoked,
            }),
        ),
    )
    .await;
    warn_of_expiring(state, unix_now());
    Ok(fresh)
}
