//! What the use cases' unit tests share: a node on the in-memory store, with a fake
//! peer network and credentials; no sockets, no files.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use crate::{
    app::{
        NodeState,
        evaluate::Evaluation,
        limits::RateLimits,
        peers::{EvaluateQuery, MatchQuery, PeerCall, PeerFailure, PeerHit, PeerInfo, PeerNetwork},
        refusals::Refusals,
        state::{BeforeUse, Credentials, LoadedCertificates},
    },
    config::Config,
    domain::{
        audit::{self, AuditLog},
        epochs::Indexes,
        followup::{DecisionNotice, Filing, FollowUpId, Receipt, State},
        identity::{Identity, Record, RecordId},
        index::NationalIndex,
        principals::Country,
        pseudonymise::{KeyEpoch, oprf::NodeKey},
    },
    metrics::Metrics,
    store::{Store, StoreInfo, memory::MemoryStore},
};

/// A country code.
pub fn cc(code: &str) -> Country {
    code.parse().expect("a country code")
}

/// A configuration for `country` with `peers`; the files it names are never read.
pub fn config(country: &str, peers: &[&str]) -> Config {
    let peers: String = peers
        .iter()
        .map(|p| format!("[[peers]]\ncountry = \"{p}\"\nendpoint = \"127.0.0.1:1\"\n"))
        .collect();
    let text = format!(
        r#"
country = "{country}"
data_dir = "/nonexistent"
data_key = "/nonexistent"
federation = {{ listen = "127.0.0.1:0" }}
national = {{ listen = "127.0.0.1:0" }}
audit = {{ signing_key = "/nonexistent" }}
[tls]
network_ca = "/n"
node_cert = "/n"
node_key = "/n"
national_ca = "/n"
national_cert = "/n"
national_key = "/n"
[matching]
seed_file = "/nonexistent"
{peers}"#
    );
    toml::from_str(&text).expect("a valid test configuration")
}

/// How a fake peer answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers: Match with these hits, filings and withdrawals with a receipt in
    /// this state.
    Answers {
        /// The hits of every Match.
        hits: Vec<PeerHit>,
        /// The state of every receipt.
        state: State,
    },
    /// Fails every call this way.
    Fails(PeerFailure),
    /// Stores filings and answers polls about them, but every filing's answer is
    /// lost (the call times out).
    LosesFilingAnswers {
        /// The state polls report.
        state: State,
    },
}

/// Peers that answer as told and remember what they were sent.
#[derive(Debug, Default)]
pub struct FakePeers {
    behaviour: Mutex<BTreeMap<Country, Behaviour>>,
    /// Every filing received, by peer.
    pub filings: Mutex<Vec<(Country, Filing)>>,
    /// Every decision delivered, by peer.
    pub delivered: Mutex<Vec<(Country, DecisionNotice)>>,
}

impl FakePeers {
    /// Peers behaving as given, in that order.
    pub fn new(peers: &[(&str, Behaviour)]) -> FakePeers {
        FakePeers {
            behaviour: Mutex::new(peers.iter().map(|(c, b)| (cc(c), b.clone())).collect()),
            ..FakePeers::default()
        }
    }

    /// Changes how `peer` answers from now on.
    pub fn set(&self, peer: &str, behaviour: Behaviour) {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cc(peer), behaviour);
    }

    fn behaviour(&self, peer: Country) -> Behaviour {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .cloned()
            .unwrap_or(Behaviour::Fails(PeerFailure::Unavailable(
                "not a peer".into(),
            )))
    }

    fn receipt(&self, peer: Country, id: FollowUpId) -> Result<Receipt, PeerFailure> {
        match self.behaviour(peer) {
            Behaviour::Answers { state, .. } | Behaviour::LosesFilingAnswers { state } => {
                let now = crate::store::unix_now();
                Ok(Receipt {
                    id,
                    state,
                    deadline_at: now + 30,
                    expires_at: now + 60,
                })
            }
            Behaviour::Fails(f) => Err(f),
        }
    }
}

impl PeerNetwork for FakePeers {
    fn peers(&self) -> Vec<PeerInfo> {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .map(|c| PeerInfo {
                country: *c,
                endpoint: format!("{c}.test:7300"),
            })
            .collect()
    }

    fn hello(&self, peer: Country) -> PeerCall<'_, ()> {
        let answer = match self.behaviour(peer) {
            Behaviour::Answers { .. } | Behaviour::LosesFilingAnswers { .. } => Ok(()),
            Behaviour::Fails(f) => Err(f),
        };
        Box::pin(async move { answer })
    }

    fn evaluate(&self, peer: Country, query: Arc<EvaluateQuery>) -> PeerCall<'_, Evaluation> {
        let answer = match self.behaviour(peer) {
            Behaviour::Answers { .. } | Behaviour::LosesFilingAnswers { .. } => {
                // Each fake peer has a key of its own.
                let mut seed = [0u8; 32];
                seed[..2].copy_from_slice(peer.as_str().as_bytes());
                let key = NodeKey::derive(&seed, KeyEpoch(1)).expect("a key");
                key.evaluate(&query.subjects)
                    .map(|subjects| Evaluation {
                        epoch: KeyEpoch(1),
                        subjects,
                    })
                    .map_err(|e| PeerFailure::Unavailable(e.to_string()))
            }
            Behaviour::Fails(f) => Err(f),
        };
        Box::pin(async move { answer })
    }

    fn match_keys(&self, peer: Country, _query: Arc<MatchQuery>) -> PeerCall<'_, Vec<PeerHit>> {
        let answer = match self.behaviour(peer) {
            Behaviour::Answers { hits, .. } => Ok(hits),
            Behaviour::LosesFilingAnswers { .. } => Ok(Vec::new()),
            Behaviour::Fails(f) => Err(f),
        };
        Box::pin(async move { answer })
    }

    fn file(&self, peer: Country, filing: Filing) -> PeerCall<'_, Receipt> {
        let mut answer = self.receipt(peer, filing.id.clone());
        if answer.is_ok() {
            self.filings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((peer, filing));
            if let Behaviour::LosesFilingAnswers { .. } = self.behaviour(peer) {
                answer = Err(PeerFailure::TimedOut);
            }
        }
        Box::pin(async move { answer })
    }

    fn withdraw(&self, peer: Country, id: FollowUpId) -> PeerCall<'_, Receipt> {
        let answer = self.receipt(peer, id);
        Box::pin(async move { answer })
    }

    /// Receipts for the ids filed with `peer`; others are unknown there.
    fn poll(&self, peer: Country, ids: Vec<FollowUpId>) -> PeerCall<'_, Vec<Receipt>> {
        let filed: Vec<FollowUpId> = self
            .filings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(c, _)| *c == peer)
            .map(|(_, f)| f.id.clone())
            .collect();
        let answer = ids
            .into_iter()
            .filter(|id| filed.contains(id))
            .map(|id| self.receipt(peer, id))
            .collect::<Result<Vec<_>, _>>();
        Box::pin(async move { answer })
    }

    fn deliver(&self, peer: Country, decision: DecisionNotice) -> PeerCall<'_, ()> {
        let answer = match self.behaviour(peer) {
            Behaviour::Answers { .. } | Behaviour::LosesFilingAnswers { .. } => {
                self.delivered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((peer, decision));
                Ok(())
            }
            Behaviour::Fails(f) => Err(f),
        };
        Box::pin(async move { answer })
    }
}

/// Credentials that reload nothing.
#[derive(Debug)]
pub struct NoCredentials;

impl Credentials for NoCredentials {
    fn reload(&self, before_use: BeforeUse<'_>) -> Result<LoadedCertificates, String> {
        let loaded = LoadedCertificates::default();
        before_use(&loaded)?;
        Ok(loaded)
    }
}

/// A test node: its state, its in-memory store and its fake peers.
#[derive(Debug)]
pub struct TestNode {
    /// The node.
    pub state: Arc<NodeState>,
    /// Its store, to make writes fail.
    pub store: Arc<MemoryStore>,
    /// Its peers.
    pub peers: Arc<FakePeers>,
}

/// A node of `country` with `config` changed by `edit`, and `peers`.
pub fn node_with(country: &str, peers: FakePeers, edit: impl FnOnce(&mut Config)) -> TestNode {
    let names: Vec<String> = peers
        .peers()
        .iter()
        .map(|p| p.country.to_string())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut config = config(country, &names);
    edit(&mut config);
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let key = audit::generate_key().expect("an audit key");
    let audit = AuditLog::open(dyn_store.as_ref(), &key).expect("the audit log");
    let node_key = NodeKey::derive(&[7; 32], KeyEpoch(1)).expect("a key");
    let index =
        NationalIndex::load(dyn_store.clone(), node_key, &mut |_| {}).expect("an empty index");
    let peers = Arc::new(peers);
    let state = Arc::new(NodeState {
        store: dyn_store,
        store_info: StoreInfo {
            schema_version: crate::store::SCHEMA_VERSION,
            engine: "memory",
            created_at: 0,
            starts: 1,
        },
        peers: peers.clone(),
        credentials: Arc::new(NoCredentials),
        index: Indexes::new(Arc::new(index), Vec::new()),
        outbox_wake: tokio::sync::Notify::new(),
        followup_writes: Mutex::new(()),
        audit,
        rate_limits: RateLimits::new(&config.limits),
        refusals: Refusals::default(),
        metrics: Metrics::new(),
        certificates: RwLock::new(LoadedCertificates::default()),
        config,
    });
    TestNode {
        state,
        store,
        peers,
    }
}

/// A record of Hans Müller, born 12 May 1970, with a payload field.
pub fn mueller(id: &str) -> Record {
    Record {
        id: RecordId::try_from(id).expect("a record id"),
        identity: Identity::from_fields("Müller", "Hans", "1970-05-12", &[]).expect("valid"),
        sex: None,
        place_of_birth: None,
        nationalities: Vec::new(),
        payload: [("offence".to_owned(), "payload of ".to_owned() + id)]
            .into_iter()
            .collect(),
    }
}

/// The kinds of the node's audit entries, oldest first.
pub fn audit_kinds(node: &TestNode) -> Vec<String> {
    AuditLog::export(node.state.store.as_ref(), 0, i64::MAX)
        .map(|e| e.expect("an audit entry").kind)
        .collect()
}

/// The fields of the audit entries of one kind, oldest first.
pub fn audit_entries(node: &TestNode, kind: &str) -> Vec<serde_json::Value> {
    AuditLog::export(node.state.store.as_ref(), 0, i64::MAX)
        .map(|e| e.expect("an audit entry"))
        .filter(|e| e.kind == kind)
        .map(|e| serde_json::from_str(&e.fields).expect("JSON fields"))
        .collect()
}

/// A reason for a search.
pub fn reason() -> crate::domain::reason::Reason {
    use crate::domain::reason::{Aim, PersonCategory, Reason};
    Reason::new(
        "FR-2026-1",
        "0101 00",
        Some(PersonCategory::Suspect),
        Some(Aim::Identify),
    )
    .expect("a valid reason")
}
