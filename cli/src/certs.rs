//! `adep certs`: the operator's commands on the node's own certificates.

use std::process::ExitCode;

use adep_node::tooling::profile::Profile;
use adep_proto::v1::ReloadCertificatesRequest;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::output;

/// `adep certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Operator: make the node read its certificates, keys, CA files and revocation
    /// lists again.
    ///
    /// Replace the files the node's configuration names (a renewed node or national
    /// certificate, a new CA bundle, a CA's new revocation list in `tls.crls`), then
    /// run this: new connections, on both listeners and to peers, use them, and a
    /// revoked client certificate is refused; open connections keep the old ones. The
    /// node checks every file first and changes nothing if one is wrong. SIGHUP to the
    /// node process does the same. Prints each certificate's expiry and how many
    /// certificates the lists revoke.
    Reload,
}

/// Runs an `adep certs` command.
pub async fn run(cmd: CertsCommand, profile: &Profile, json: bool) -> Result<ExitCode> {
    match cmd {
        CertsCommand::Reload => {
            let resp = profile
                .national_client()?
                .reload_certificates(ReloadCertificatesRequest {})
                .await
                .map_err(|s| output::call_error(&profile.node, s))?
                .into_inner();
            if json {
                let certs: Vec<_> = resp
                    .certificates
                    .iter()
                    .map(|c| json!({ "name": c.name, "not_after": c.not_after }))
                    .collect();
                println!(
                    "{}",
                    json!({ "reloaded": true, "certificates": certs, "revoked": resp.revoked })
                );
            } else {
                println!("certificates reloaded");
                for c in &resp.certificates {
                    println!("  {:<9} valid until {}", c.name, output::utc(c.not_after));
                }
                println!(
                    "  {} revoked by the lists in tls.crls",
                    output::count(resp.revoked, "certificate", "certificates")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
