//! The TLS material of both listeners and of the peer clients, reloadable from its
//! files without a restart: the edge's side of [`Credentials`].

use crate::{
    app::state::{BeforeUse, Credentials, LoadedCertificates},
    config::Config,
    grpc::{
        peers::PeerClients,
        tls::{NodeTls, ServerTls},
    },
};

/// The listeners' server TLS and the peer clients, as in use.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    config: Config,
    /// The federation listener's TLS.
    pub federation: ServerTls,
    /// The national listener's TLS.
    pub national: ServerTls,
    /// The clients to every peer.
    pub peers: PeerClients,
}

impl NodeCredentials {
    /// The credentials in use, as [`NodeTls::from_config`] read them for `config`.
    pub fn new(config: &Config, tls: &NodeTls, peers: PeerClients) -> NodeCredentials {
        NodeCredentials {
            config: config.clone(),
            federation: tls.federation.clone(),
            national: tls.national.clone(),
            peers,
        }
    }
}

impl Credentials for NodeCredentials {
    fn reload(&self, before_use: BeforeUse<'_>) -> Result<LoadedCertificates, String> {
        let fresh = NodeTls::from_config(&self.config.tls).map_err(|e| e.to_string())?;
        let peers =
            PeerClients::from_config(&self.config, &fresh.crls).map_err(|e| e.to_string())?;
        let loaded = LoadedCertificates {
            certificates: fresh.certificates,
            revoked: fresh.revoked,
        };
        before_use(&loaded)?;
        self.federation.replace_with(&fresh.federation);
        self.national.replace_with(&fresh.national);
        self.peers.replace_with(&peers);
        Ok(loaded)
    }
}
