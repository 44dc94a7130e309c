//! The node's own certificates: reloaded without a restart (`adep certs reload`,
//! SIGHUP in the binary), and warned of before they expire.

use std::sync::{Arc, PoisonError};

use crate::{
    app::{AppError, NodeState, events, state::LoadedCertificates},
    domain::audit::Event,
    store::{Batch, unix_now},
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
/// checked, and the reload recorded in the audit log, before anything changes; on an
/// error nothing does. `operator` asked for it with `adep certs reload`; None: the
/// node received SIGHUP.
pub async fn reload(
    state: &Arc<NodeState>,
    operator: Option<&str>,
) -> Result<LoadedCertificates, AppError> {
    let s = state.clone();
    let trigger = if operator.is_some() {
        "adep certs reload"
    } else {
        "SIGHUP"
    };
    let operator = operator.map(str::to_owned);
    let reloaded = tokio::task::spawn_blocking(move || {
        s.credentials.reload(&mut |loaded| {
            let event = Event::new(
                "tls.reloaded",
                serde_json::json!({
                    "operator": operator,
                    "trigger": trigger,
                    "certificates": loaded
                        .certificates
                        .iter()
                        .map(|(name, until)| serde_json::json!({ "name": name, "not_after": until }))
                        .collect::<Vec<_>>(),
                    "revoked": loaded.revoked,
                }),
            );
            events::commit(&s, Batch::new(), &event)
                .map_err(|e| format!("the reload could not be recorded in the audit log: {e}"))
        })
    })
    .await?;
    let fresh = reloaded.map_err(|e| {
        tracing::warn!(trigger, error = %e, "certificate reload refused; nothing changed");
        AppError::FailedPrecondition(format!("nothing reloaded: {e}"))
    })?;
    *state
        .certificates
        .write()
        .unwrap_or_else(PoisonError::into_inner) = fresh.clone();
    tracing::info!(trigger, "certificates reloaded");
    warn_of_expiring(state, unix_now());
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        app::testkit::{FakePeers, audit_entries, audit_kinds, node_with},
        store::Table,
    };

    #[tokio::test]
    async fn a_reload_that_cannot_be_recorded_changes_nothing() {
        let node = node_with("DE", FakePeers::default(), |_| {});
        node.store.fail_writes_to(Table::Audit);
        let refused = reload(&node.state, Some("operator-1")).await;
        assert!(
            matches!(&refused, Err(AppError::FailedPrecondition(m)) if m.contains("audit log")),
            "{refused:?}"
        );
        node.store.fail_writes(false);
        reload(&node.state, Some("operator-1"))
            .await
            .expect("reloaded");
        assert_eq!(audit_kinds(&node), ["tls.reloaded"]);
    }

    #[tokio::test]
    async fn a_reload_names_its_operator_or_the_signal() {
        let node = node_with("DE", FakePeers::default(), |_| {});
        reload(&node.state, Some("operator-1"))
            .await
            .expect("reloaded");
        reload(&node.state, None).await.expect("reloaded");
        let entries = audit_entries(&node, "tls.reloaded");
        assert_eq!(entries[0]["operator"], "operator-1");
        assert_eq!(entries[0]["trigger"], "adep certs reload");
        assert!(entries[1]["operator"].is_null(), "{}", entries[1]);
        assert_eq!(entries[1]["trigger"], "SIGHUP");
    }
}
