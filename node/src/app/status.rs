//! The node's status for any of its users: who they are, the store, and each peer.

use std::sync::Arc;

use crate::{
    app::{
        NodeState,
        peers::{self, PeerInfo},
        search::{PeerReport, count_peer_calls},
    },
    domain::principals::Role,
    store::StoreInfo,
};

/// What `Status` answers.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The caller's id.
    pub user: String,
    /// The caller's role.
    pub role: Role,
    /// Store facts as of start-up.
    pub store: StoreInfo,
    /// Each peer: checked with a Hello when asked, otherwise unchecked (None).
    pub peers: Vec<(PeerInfo, Option<PeerReport>)>,
}

/// The status, checking every peer with a Hello when `check_peers`.
pub async fn status(
    state: &Arc<NodeState>,
    user: &str,
    role: Role,
    check_peers: bool,
) -> NodeStatus {
    let peers = if check_peers {
        let outcomes = peers::fan_out(&state.peers, |peers, peer| {
            Box::pin(async move { peers.hello(peer).await })
        })
        .await;
        count_peer_calls(state, "Hello", &outcomes);
        outcomes
            .iter()
            .map(|o| (o.peer.clone(), Some(PeerReport::from(o))))
            .collect()
    } else {
        state.peers.peers().into_iter().map(|p| (p, None)).collect()
    };
    NodeStatus {
        user: user.to_owned(),
        role,
        store: state.store_info.clone(),
        peers,
    }
}
