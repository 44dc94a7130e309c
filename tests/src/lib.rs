//! Integration-test harness: a development PKI written by the product's own `pki` code
//! into a temp dir, and real nodes started in-process on `127.0.0.1:0`.
//!
//! Listeners are bound before the PKI is written, so the configurations name the real
//! ports and no port is guessed. A stopped node can be started again on the same
//! addresses and data directory.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use adep_node::{
    config::Config,
    domain::principals::{Country, Role},
    grpc::server::{self, Listeners, NodeError},
    grpc::tls::{self, Target},
    tooling::pki::{self, Ca, Leaf, NodePlan},
    tooling::profile::Profile,
};
use adep_proto::v1::{
    HelloRequest, Identity, ImportMode, ImportRequest, ImportSummary, RecordData,
    federation_client::FederationClient, national_client::NationalClient,
};
pub mod followups;
pub mod logs;
pub mod proxy;

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// Parses a country code in tests.
pub fn cc(s: &str) -> Country {
    s.parse().expect("test country code")
}

/// A node running in this process.
#[derive(Debug)]
struct RunningNode {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), NodeError>>,
}

/// A test network: its PKI directory and the nodes started so far.
#[derive(Debug)]
pub struct TestNetwork {
    dir: tempfile::TempDir,
    plans: HashMap<Country, NodePlan>,
    bound: HashMap<Country, Listeners>,
    running: HashMap<Country, RunningNode>,
}

impl TestNetwork {
    /// Binds two loopback listeners per country and writes the PKI for them. No node runs yet.
    pub async fn new(countries: &[&str]) -> TestNetwork {
        adep_node::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut plans = Vec::new();
        let mut bound = HashMap::new();
        for c in countries {
            let country = cc(c);
            let federation = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let national = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            plans.push(NodePlan {
                country,
                federation: federation.local_addr().expect("addr"),
                national: national.local_addr().expect("addr"),
                metrics: Some(metrics.local_addr().expect("addr")),
                reach: None,
            });
            bound.insert(
                country,
                Listeners {
                    federation,
                    national,
                    metrics: Some(metrics),
                },
            );
        }
        pki::init(dir.path(), &plans).expect("pki init");
        TestNetwork {
            dir,
            plans: plans.into_iter().map(|p| (p.country, p)).collect(),
            bound,
            running: HashMap::new(),
        }
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node configuration file of a country.
    pub fn config_path(&self, country: &str) -> PathBuf {
        self.dir().join(country).join("node.toml")
    }

    /// The loaded node configuration of a country.
    pub fn config(&self, country: &str) -> Config {
        Config::load(&self.config_path(country)).expect("config from pki init loads")
    }

    /// The CLI profile of a country's user of `role`.
    pub fn profile_path(&self, country: &str, role: Role) -> PathBuf {
        self.dir().join(country).join(format!("{role}.toml"))
    }

    /// The federation address of a country's node.
    pub fn federation_addr(&self, country: &str) -> SocketAddr {
        self.plans[&cc(country)].federation
    }

    /// The metrics address of a country's node.
    pub fn metrics_addr(&self, country: &str) -> SocketAddr {
        self.plans[&cc(country)]
            .metrics
            .expect("the harness binds a metrics address")
    }

    /// The national address of a country's node.
    pub fn national_addr(&self, country: &str) -> SocketAddr {
        self.plans[&cc(country)].national
    }

    /// Starts a country's node (again) on its addresses and data directory, and waits
    /// until its national listener answers.
    pub async fn start(&mut self, country: &str) {
        let c = cc(country);
        assert!(!self.running.contains_key(&c), "{country} already runs");
        let config = self.config(country);
        let listeners = match self.bound.remove(&c) {
            Some(l) => l,
            None => Listeners::bind(&config)
                .await
                .expect("rebind node addresses"),
        };
        let prepared = server::prepare(config).expect("node prepares");
        let (stop, rx) = oneshot::channel();
        let handle = tokio::spawn(server::serve(prepared, listeners, async move {
            let _ = rx.await;
        }));
        self.running.insert(c, RunningNode { stop, handle });
        self.wait_ready(country).await;
    }

    /// Starts every country's node.
    pub async fn start_all(&mut self) {
        let mut all: Vec<Country> = self.plans.keys().copied().collect();
        all.sort();
        for c in all {
            self.start(c.as_str()).await;
        }
    }

    /// Closes the listeners of a country that was never started, so calls to it are
    /// refused at once, like calls to a stopped machine. (Until then they are accepted by
    /// the kernel and never answered, like calls to a hung node.)
    pub fn release(&mut self, country: &str) {
        self.bound.remove(&cc(country));
    }

    /// Stops a country's node, waiting for it to drain and release its data directory.
    pub async fn stop(&mut self, country: &str) {
        let node = self
            .running
            .remove(&cc(country))
            .unwrap_or_else(|| panic!("{country} is not running"));
        let _ = node.stop.send(());
        node.handle
            .await
            .expect("node task")
            .expect("node stops cleanly");
    }

    async fn wait_ready(&self, country: &str) {
        let mut client = self.national(country, Role::Operator);
        for _ in 0..100 {
            if client
                .status(adep_proto::v1::StatusRequest { check_peers: false })
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{country} did not become ready");
    }

    /// A national client as a country's user of `role`, through its CLI profile.
    pub fn national(&self, country: &str, role: Role) -> NationalClient<Channel> {
        Profile::load(&self.profile_path(country, role))
            .expect("profile loads")
            .national_client()
            .expect("client")
    }

    /// A federation client to `target` as the node of `as_country` (its real certificate).
    pub fn federation_as_peer(&self, target: &str, as_country: &str) -> FederationClient<Channel> {
        let d = self.dir().join(as_country);
        self.federation_with(target, Some((d.join("node.pem"), d.join("node.key.pem"))))
    }

    /// A federation client to `target` presenting any certificate (or none), trusting the
    /// network CA for the server.
    pub fn federation_with(
        &self,
        target: &str,
        cert: Option<(PathBuf, PathBuf)>,
    ) -> FederationClient<Channel> {
        FederationClient::new(self.federation_channel(target, cert))
    }

    /// A channel to `target`'s federation listener presenting any certificate (or none).
    pub fn federation_channel(&self, target: &str, cert: Option<(PathBuf, PathBuf)>) -> Channel {
        self.channel(
            self.federation_addr(target),
            &self.dir().join("network-ca.pem"),
            cert,
        )
    }

    /// A channel to `target`'s national listener presenting any certificate (or none).
    pub fn national_channel(&self, target: &str, cert: Option<(PathBuf, PathBuf)>) -> Channel {
        self.channel(
            self.national_addr(target),
            &self.dir().join(target).join("national-ca.pem"),
            cert,
        )
    }

    /// A national client to `target` presenting any certificate (or none), trusting the
    /// target's national CA for the server.
    pub fn national_with(
        &self,
        target: &str,
        cert: Option<(PathBuf, PathBuf)>,
    ) -> NationalClient<Channel> {
        NationalClient::new(self.national_channel(target, cert))
    }

    fn channel(&self, addr: SocketAddr, roots: &Path, cert: Option<(PathBuf, PathBuf)>) -> Channel {
        let identity = cert.map(|(c, k)| {
            (
                tls::load_certs(&c).expect("cert"),
                tls::load_key(&k).expect("key"),
            )
        });
        let config =
            tls::client_config(tls::root_store(roots).expect("roots"), identity).expect("tls");
        tls::channel(
            Target {
                host: addr.ip().to_string(),
                port: addr.port(),
                server_name: None,
                identity: None,
            },
            config,
            Duration::from_secs(5),
        )
        .expect("channel")
    }

    /// Issues an extra certificate from the network CA (`national: None`) or from a
    /// country's national CA, and writes it into the temp dir. Returns (cert, key) paths.
    pub fn issue(&self, national: Option<&str>, leaf: Leaf, name: &str) -> (PathBuf, PathBuf) {
        self.issue_for_days(national, leaf, name, 365)
    }

    /// As [`TestNetwork::issue`], valid for `days` from now.
    pub fn issue_for_days(
        &self,
        national: Option<&str>,
        leaf: Leaf,
        name: &str,
        days: i64,
    ) -> (PathBuf, PathBuf) {
        let (dir, ca_name) = match national {
            None => (self.dir().to_owned(), pki::NETWORK_CA_NAME.to_owned()),
            Some(c) => (self.dir().join(c), pki::national_ca_name(cc(c))),
        };
        let prefix = if national.is_some() {
            "national-ca"
        } else {
            "network-ca"
        };
        let read = |f: String| std::fs::read_to_string(dir.join(f)).expect("CA file");
        let ca = Ca::from_pem(
            &ca_name,
            &read(format!("{prefix}.pem")),
            &read(format!("{prefix}.key.pem")),
        )
        .expect("CA loads");
        let pair = ca.issue_for_days(&leaf, days).expect("issue");
        let cert = self.dir().join(format!("extra-{name}.pem"));
        let key = self.dir().join(format!("extra-{name}.key.pem"));
        pki::write(&cert, &pair.cert_pem, false).expect("write");
        pki::write(&key, &pair.key_pem, true).expect("write");
        (cert, key)
    }

    /// A Hello as `country` would send it.
    pub fn hello(country: &str) -> HelloRequest {
        HelloRequest {
            country: country.to_owned(),
            protocol_version: adep_proto::PROTOCOL_VERSION,
        }
    }
}

/// A complete query reason for tests.
pub fn reason() -> adep_proto::v1::Reason {
    use adep_proto::v1::{Aim, PersonCategory};
    adep_proto::v1::Reason {
        case_reference: "FR-2026-0042".into(),
        offence_category: "0301 00".into(),
        person_category: PersonCategory::Suspect as i32,
        aim: Aim::Identify as i32,
    }
}

/// The match keys a requesting node would send `target` for a subject: blinded here,
/// evaluated by `target` through `client` (a federation client presenting `caller`'s
/// node certificate), and finalized here. Returns the epoch `target` named and the
/// keys, or the Evaluate call's error.
pub async fn evaluated_keys(
    client: &mut FederationClient<Channel>,
    caller: &str,
    (family, given, dob): (&str, &str, &str),
) -> Result<(u32, Vec<adep_proto::v1::MatchKey>), tonic::Status> {
    use adep_node::domain::pseudonymise::{
        Side, derive_keys,
        oprf::{Blinded, Element},
    };
    let identity = adep_node::domain::identity::Identity::from_fields(family, given, dob, &[])
        .expect("identity");
    let blinded = Blinded::blind(vec![derive_keys(&identity, Side::Query)]).expect("random");
    let answer = client
        .evaluate(adep_proto::v1::EvaluateRequest {
            request_id: "test-evaluation".into(),
            country: caller.into(),
            subjects: vec![adep_proto::v1::BlindedSubject {
                elements: blinded.elements()[0]
                    .iter()
                    .map(|e| prost::bytes::Bytes::copy_from_slice(&e.0))
                    .collect(),
            }],
        })
        .await?
        .into_inner();
    let evaluated: Vec<Vec<Element>> = answer
        .subjects
        .iter()
        .map(|s| {
            s.elements
                .iter()
                .map(|e| Element::try_from(e.as_ref()).expect("32 bytes"))
                .collect()
        })
        .collect();
    let keys = blinded.finalize(&evaluated).expect("a usable evaluation");
    Ok((
        answer.key_epoch,
        keys[0]
            .iter()
            .map(|k| adep_proto::v1::MatchKey {
                kind: k.kind.code(),
                digest: prost::bytes::Bytes::copy_from_slice(&k.digest.0),
            })
            .collect(),
    ))
}

/// As [`evaluated_keys`], the keys only, for a caller within its limits.
pub async fn match_keys(
    client: &mut FederationClient<Channel>,
    caller: &str,
    subject: (&str, &str, &str),
) -> Vec<adep_proto::v1::MatchKey> {
    evaluated_keys(client, caller, subject)
        .await
        .expect("the evaluation")
        .1
}

/// A record for tests: id, family name, given names, date of birth, one payload field.
pub fn record(id: &str, family: &str, given: &str, dob: &str) -> RecordData {
    RecordData {
        record_id: id.to_owned(),
        identity: Some(Identity {
            family_name: family.to_owned(),
            given_names: given.to_owned(),
            date_of_birth: dob.to_owned(),
            ..Identity::default()
        }),
        payload: [("offence".to_owned(), format!("payload of {id}"))].into(),
    }
}

impl TestNetwork {
    /// Imports (or syncs) records into a country's node as its operator, in batches of
    /// `batch`, and returns the summary from the last progress message.
    pub async fn import(
        &self,
        country: &str,
        records: Vec<RecordData>,
        mode: ImportMode,
        batch: usize,
    ) -> Result<ImportSummary, tonic::Status> {
        use tokio_stream::StreamExt as _;
        let mut messages: Vec<ImportRequest> = records
            .chunks(batch.max(1))
            .map(|c| ImportRequest {
                mode: 0,
                records: c.to_vec(),
            })
            .collect();
        if messages.is_empty() {
            messages.push(ImportRequest::default());
        }
        messages[0].mode = mode as i32;
        let mut progress = self
            .national(country, Role::Operator)
            .import_records(tokio_stream::iter(messages))
            .await?
            .into_inner();
        let mut summary = None;
        while let Some(p) = progress.next().await {
            if let Some(s) = p?.summary {
                summary = Some(s);
            }
        }
        Ok(summary.expect("the import ends with a summary"))
    }

    /// Changes a country's node configuration file (before the node starts, or
    /// between a stop and a start).
    pub fn edit_config(&self, country: &str, edit: impl FnOnce(&mut Config)) {
        let mut config = self.config(country);
        edit(&mut config);
        let text = toml::to_string_pretty(&config).expect("config serialises");
        std::fs::write(self.config_path(country), text).expect("write config");
    }

    /// The kinds of a node's audit entries, oldest first, as its auditor exports them.
    pub async fn audit_kinds(&self, country: &str) -> Vec<String> {
        self.audit_entries(country)
            .await
            .into_iter()
            .map(|(kind, _)| kind)
            .collect()
    }

    /// Every message of an export of a node's audit log, its closing head included.
    pub async fn audit_export(&self, country: &str) -> Vec<adep_proto::v1::AuditEntry> {
        use tokio_stream::StreamExt as _;
        let mut stream = self
            .national(country, Role::Auditor)
            .export_audit(adep_proto::v1::AuditExportRequest::default())
            .await
            .expect("export")
            .into_inner();
        let mut all = Vec::new();
        while let Some(e) = stream.next().await {
            all.push(e.expect("entry"));
        }
        all
    }

    /// A node's audit entries, oldest first, as kind and fields (the export's closing
    /// head left out).
    pub async fn audit_entries(&self, country: &str) -> Vec<(String, serde_json::Value)> {
        self.audit_export(country)
            .await
            .into_iter()
            .filter(|e| e.checkpoint.is_none())
            .map(|e| {
                let fields = serde_json::from_str(&e.fields_json).expect("fields are JSON");
                (e.kind, fields)
            })
            .collect()
    }

    /// Waits (up to 5 s) for a node's audit entries of `kind`; refusals are recorded
    /// in the background, just after the answer.
    pub async fn audit_entries_of(&self, country: &str, kind: &str) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let found: Vec<_> = self
                .audit_entries(country)
                .await
                .into_iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, f)| f)
                .collect();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{country} recorded no {kind} event");
    }

    /// `GET path` on a node's metrics address: the status line and the body.
    pub async fn metrics_get(&self, country: &str, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(self.metrics_addr(country))
            .await
            .expect("connect to metrics");
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    }

    /// A node's metrics: each sample line's name with labels, and its value.
    pub async fn metrics(&self, country: &str) -> HashMap<String, f64> {
        let (status, body) = self.metrics_get(country, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// A node's key seed, as its configuration names it.
    pub fn key_seed(&self, country: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(&self.config(country).matching.seed_file).expect("seed");
        let hex = text.trim();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
