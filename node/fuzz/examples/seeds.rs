//! Writes the seed corpus of every fuzz target into `corpus/<target>/`: record files,
//! names, encoded messages and configuration files that the node accepts (each is
//! checked here by the node's own parser or conversion, so a seed it would refuse
//! fails the run). Deterministic: the same files every time. Run from `node/fuzz`:
//! `cargo +nightly run --example seeds`.

// Proto literals end with `..Default::default()` even when every field is set, so that
// a field added to a message does not break this program.
#![allow(clippy::needless_update)]

use std::{collections::BTreeMap, fs, path::Path};

use adep_node::{
    app::{answer::MatchCall, listing::Filter, requester::Request, search::Search},
    config::Config,
    domain::{
        followup::{DecisionNotice, Filing},
        identity::{
            DateOfBirth, Format, IDENTITY_COLUMNS, Identity, Name, OnBadRow, Record, RecordId, Sex,
            read_records,
        },
        pseudonymise::{HmacKey, KeyEpoch, KeyedDigest, Quality, Side},
        reason::{Aim, PersonCategory, Reason},
    },
    grpc::convert::{self, federation as wire, national},
    tooling::{requests, synthetic},
};
use adep_proto::v1;
use prost::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let records = sample_records()?;
    record_files(&root, &records)?;
    names(&root)?;
    federation(&root, &records)?;
    national(&root, &records)?;
    config(&root)?;
    Ok(())
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A message with the selector byte that makes the target decode it.
fn selected(choice: u8, message: &impl Message) -> Vec<u8> {
    let mut bytes = vec![choice];
    bytes.extend(message.encode_to_vec());
    bytes
}

fn sample_records() -> Result<Vec<Record>> {
    let mut records = synthetic::records(7, 3);
    let identity = Identity::from_fields(
        "García López",
        "Ana María",
        "1980-02-29",
        &[
            ("Lopez".into(), "Ana".into()),
            ("van der Berg".into(), "Maria".into()),
        ],
    )?;
    records.push(Record {
        id: RecordId::try_from("ES-2019:000123_a.b")?,
        identity,
        sex: Some(Sex::F),
        place_of_birth: Some("Sevilla".into()),
        nationalities: vec!["ES".into(), "FRA".into()],
        payload: BTreeMap::from([("offence".into(), "theft, \"aggravated\"".into())]),
    });
    records.push(Record {
        id: RecordId::try_from("bg-7")?,
        identity: Identity {
            name: Name {
                family: "Гусев".into(),
                given: String::new(),
            },
            date_of_birth: DateOfBirth::Year { year: 1958 },
            aliases: Vec::new(),
        },
        sex: None,
        place_of_birth: None,
        nationalities: Vec::new(),
        payload: BTreeMap::new(),
    });
    Ok(records)
}

fn identity_columns(record: &Record) -> [String; 8] {
    let aliases: Vec<String> = record
        .identity
        .aliases
        .iter()
        .map(|a| format!("{}/{}", a.family, a.given))
        .collect();
    [
        record.id.to_string(),
        record.identity.name.family.clone(),
        record.identity.name.given.clone(),
        record.identity.date_of_birth.to_string(),
        record.sex.map(|s| s.code().to_owned()).unwrap_or_default(),
        record.place_of_birth.clone().unwrap_or_default(),
        record.nationalities.join(";"),
        aliases.join(";"),
    ]
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

fn record_files(root: &Path, records: &[Record]) -> Result<()> {
    let payload_columns = ["offence", "file_reference", "authority"];
    let mut csv = IDENTITY_COLUMNS.join(",");
    csv.push_str(&format!(",{}\n", payload_columns.join(",")));
    let mut jsonl = String::new();
    for record in records {
        let mut row: Vec<String> = identity_columns(record).to_vec();
        let mut object = serde_json::Map::new();
        for (column, value) in IDENTITY_COLUMNS.iter().zip(&row) {
            object.insert((*column).into(), value.clone().into());
        }
        for column in payload_columns {
            let value = record.payload.get(column).cloned().unwrap_or_default();
            object.insert(column.into(), value.clone().into());
            row.push(value);
        }
        let row: Vec<String> = row.iter().map(|v| csv_field(v)).collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
        jsonl.push_str(&serde_json::Value::Object(object).to_string());
        jsonl.push('\n');
    }
    read_records(csv.as_bytes(), Format::Csv, OnBadRow::Fail)?;
    write(root, "record_file_csv", "valid.csv", csv.as_bytes())?;
    write(
        root,
        "record_file_csv",
        "minimal.csv",
        b"record_id,family_name,given_names,date_of_birth\nr1,Doe,John,1970-01-01\nr2,Madonna,,1958-08\n",
    )?;
    write(
        root,
        "record_file_csv",
        "bad_rows.csv",
        b"record_id,family_name,given_names,date_of_birth,sex,place_of_birth,nationality,aliases\n\
          r1,Doe,John,1970-01-01,M,,FR,Doe/Jack\n\
          r1,Doe,John,1970-02-30,Q,,fr,Doe\n\
          r 3,,John,19700101,,,,\n\
          r4,Doe\n",
    )?;
    read_records(jsonl.as_bytes(), Format::JsonLines, OnBadRow::Fail)?;
    write(root, "record_file_jsonl", "valid.jsonl", jsonl.as_bytes())?;
    write(
        root,
        "record_file_jsonl",
        "bad_rows.jsonl",
        b"{\"record_id\":\"a\",\"family_name\":\"M\\u00fcller\",\"given_names\":null,\"date_of_birth\":\"1970\"}\n\
          \n\
          {\"record_id\":\"b\",\"family_name\":\"X\",\"given_names\":\"Y\",\"date_of_birth\":1970}\n\
          {\"record_id\":\"a\",\"family_name\":\"X\",\"date_of_birth\":\"2000-02-29\",\"Bad\":\"x\"}\n\
          not json\n",
    )?;
    Ok(())
}

fn names(root: &Path) -> Result<()> {
    let seeds: [(&str, &str); 5] = [
        (
            "full",
            "García López\nAna María\n1980-02-29\nLopez\nAna\nvan der Berg\nMaria",
        ),
        ("particles", "van der Berg\nJean-Pierre\n1970-05-12"),
        ("cyrillic", "Гусев\nИван\n1965-11"),
        ("year_only", "Madonna\n\n1958"),
        (
            "apostrophe",
            "O'Brien-Mc Donald\nSeán Óg\n2001-12-31\nStrauß\nMÜLLER",
        ),
    ];
    for (name, text) in seeds {
        let lines: Vec<&str> = text.split('\n').collect();
        let aliases: Vec<(String, String)> = lines[3..]
            .chunks(2)
            .map(|pair| {
                (
                    pair[0].to_owned(),
                    pair.get(1).copied().unwrap_or("").to_owned(),
                )
            })
            .collect();
        Identity::from_fields(lines[0], lines[1], lines[2], &aliases)?;
        write(root, "names_and_keys", name, text.as_bytes())?;
    }
    Ok(())
}

fn reason() -> Result<Reason> {
    Ok(Reason::new(
        "CASE-2026/0017",
        "1001 00",
        Some(PersonCategory::Suspect),
        Some(Aim::Identify),
    )?)
}

/// A node's signed audit head, as nodes send it with their federation calls.
fn checkpoint() -> v1::AuditCheckpoint {
    v1::AuditCheckpoint {
        seq: 41,
        hash: vec![0x3c; 32],
        time: 1_780_000_000,
        signature: vec![0xa5; 64],
    }
}

fn federation(root: &Path, records: &[Record]) -> Result<()> {
    const T: &str = "federation_requests";
    // Proto literals leave new fields at their defaults; each seed is checked by the
    // node's own conversion, so a seed the node would refuse fails here.
    let own = "DE".to_owned();
    let p = HmacKey::from_secret_bytes(&[0x5a; 32], KeyEpoch(3));
    let request = v1::MatchRequest {
        request_id: "0f3a9c1e-match_1".into(),
        country: own.clone(),
        key_epoch: 3,
        reason: Some(v1::Reason::from(&reason()?)),
        audit_head: Some(checkpoint()),
        subjects: records[3..]
            .iter()
            .enumerate()
            .map(|(i, r)| v1::MatchSubject {
                subject: i as u32,
                keys: p
                    .hash_identity(&r.identity, Side::Query)
                    .iter()
                    .map(|k| v1::MatchKey {
                        kind: k.kind.code(),
                        digest: k.digest.0.to_vec().into(),
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    };
    MatchCall::try_from(&request)?;
    write(root, T, "match", &selected(0, &request))?;
    let id = "0123456789abcdef0123456789abcdef";
    let hit_ref = "00112233445566778899aabbccddeeff00112233";
    let filing = v1::FollowUpFiling {
        request_id: id.into(),
        country: own.clone(),
        hit_ref: hit_ref.into(),
        justification: "The subject was arrested in Lyon.\nSame date of birth.".into(),
        offence_description: "Burglary of a pharmacy".into(),
        reason: Some(v1::Reason::from(&reason()?)),
        subject: Some(requests::identity(&records[3].identity)),
        officer_id: "de-officer".into(),
        audit_head: Some(checkpoint()),
        ..Default::default()
    };
    Filing::try_from(filing.clone())?;
    write(root, T, "filing", &selected(1, &filing))?;
    let decision = v1::FollowUpDecision {
        request_id: id.into(),
        state: v1::FollowUpState::Approved as i32,
        reason: "proportionate".into(),
        // One field: prost writes a map in hash order, and a seed stays the same from
        // run to run.
        core_data: [("family_name".to_owned(), "García López".to_owned())].into(),
        country: own.clone(),
        decided_at: 1_780_000_000,
        audit_head: Some(checkpoint()),
        ..Default::default()
    };
    DecisionNotice::try_from(decision.clone())?;
    write(root, T, "decision", &selected(2, &decision))?;
    let poll = v1::FollowUpPoll {
        country: own.clone(),
        request_ids: vec![id.into(), "fedcba9876543210fedcba9876543210".into()],
        ..Default::default()
    };
    write(root, T, "poll", &selected(3, &poll))?;
    let withdrawal = v1::FollowUpWithdrawal {
        request_id: id.into(),
        country: own.clone(),
        ..Default::default()
    };
    write(root, T, "withdrawal", &selected(4, &withdrawal))?;
    let answer = v1::MatchResponse {
        results: vec![v1::SubjectResult {
            subject: 0,
            hits: vec![v1::Hit {
                hit_ref: hit_ref.into(),
                quality: v1::Quality::from(Quality::Strong) as i32,
                expires_at: 1_780_600_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    wire::peer_hits(answer.clone())?;
    write(root, T, "match_answer", &selected(5, &answer))?;
    let receipt = v1::FollowUpReceipt {
        request_id: id.into(),
        state: v1::FollowUpState::Pending as i32,
        deadline_at: 1_780_172_800,
        expires_at: 1_782_592_000,
        ..Default::default()
    };
    wire::peer_receipt(receipt.clone())?;
    write(root, T, "receipt", &selected(6, &receipt))?;
    let hello = v1::HelloRequest {
        country: own,
        protocol_version: adep_proto::PROTOCOL_VERSION,
        ..Default::default()
    };
    write(root, T, "hello", &selected(7, &hello))?;
    Ok(())
}

fn national(root: &Path, records: &[Record]) -> Result<()> {
    const T: &str = "national_requests";
    let reason = Some(v1::Reason::from(&reason()?));
    let search = v1::SearchRequest {
        reason: reason.clone(),
        subjects: records[3..]
            .iter()
            .map(|r| requests::identity(&r.identity))
            .collect(),
        ..Default::default()
    };
    Search::try_from(&search)?;
    write(root, T, "search", &selected(0, &search))?;
    let import = v1::ImportRequest {
        mode: v1::ImportMode::Import as i32,
        records: records.iter().map(single_payload_field).collect(),
        ..Default::default()
    };
    for (i, data) in import.records.iter().enumerate() {
        convert::record(i, data.clone())?;
    }
    write(root, T, "import", &selected(1, &import))?;
    write(
        root,
        T,
        "record",
        &selected(2, &single_payload_field(&records[3])),
    )?;
    let delete = v1::DeleteRecordsRequest {
        record_ids: vec!["ES-2019:000123_a.b".into(), "syn-7-1".into()],
        ..Default::default()
    };
    national::record_ids(&delete.record_ids)?;
    write(root, T, "delete", &selected(3, &delete))?;
    let follow_up = v1::RequestFollowUpRequest {
        hit_ref: "00112233445566778899aabbccddeeff00112233".into(),
        justification: "Same person as in case 17?\tPlease confirm.".into(),
        offence_description: "Burglary".into(),
        reason,
        ..Default::default()
    };
    Request::try_from(follow_up.clone())?;
    write(root, T, "request_follow_up", &selected(4, &follow_up))?;
    let list = v1::ListFollowUpsRequest {
        incoming: true,
        state: v1::FollowUpState::Pending as i32,
        overdue: false,
        limit: 50,
        ..Default::default()
    };
    Filter::try_from(&list)?;
    write(root, T, "list", &selected(5, &list))?;
    let decide = v1::DecideFollowUpRequest {
        id: "0123456789abcdef0123456789abcdef".into(),
        decision: v1::Decision::Approve as i32,
        reason: "proportionate".into(),
        ..Default::default()
    };
    national::decision(&decide)?;
    write(root, T, "decide", &selected(6, &decide))?;
    let show = v1::ShowFollowUpRequest {
        id: "0123456789abcdef0123456789abcdef".into(),
        ..Default::default()
    };
    convert::followup_id("id", &show.id)?;
    write(root, T, "show", &selected(7, &show))?;
    let withdraw = v1::WithdrawFollowUpRequest {
        id: "fedcba9876543210fedcba9876543210".into(),
        ..Default::default()
    };
    convert::followup_id("id", &withdraw.id)?;
    write(root, T, "withdraw", &selected(8, &withdraw))?;
    let export = v1::AuditExportRequest {
        since: 1_700_000_000,
        until: 1_800_000_000,
        ..Default::default()
    };
    write(root, T, "audit_export", &selected(9, &export))?;
    let verify = v1::VerifyAuditRequest {
        witnesses: vec![
            checkpoint(),
            v1::AuditCheckpoint {
                seq: 7,
                ..checkpoint()
            },
        ],
        ..Default::default()
    };
    national::witnesses(&verify)?;
    write(root, T, "verify_audit", &selected(10, &verify))?;
    Ok(())
}

/// A record to import with its first payload field only: prost writes a map in hash
/// order, and a seed stays the same from run to run.
fn single_payload_field(record: &Record) -> v1::RecordData {
    let mut data = requests::record(record);
    data.payload = record.payload.clone().into_iter().take(1).collect();
    data
}

fn config(root: &Path) -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let deployed = fs::read_to_string(repo.join("deploy/k8s/overlays/fr/node.toml"))?;
    write(root, "config", "deploy_fr.toml", deployed.as_bytes())?;
    let minimal = r#"country = "FR"
data_dir = "data"
data_key = "data.key"
federation.listen = "127.0.0.1:7100"
national.listen = "[::1]:7101"
tls = { network_ca = "ca.pem", node_cert = "n.pem", node_key = "n.key", national_ca = "nca.pem", national_cert = "nn.pem", national_key = "nn.key", crls = ["a.crl"] }
matching = { seed_file = "s", previous_epoch_grace = "2m" }
audit = { signing_key = "audit.key" }
peers = [{ country = "DE", endpoint = "https://[2001:db8::1]:7100/", identity = "adep://node/DE", server_name = "de.example" }]
users = [{ id = "fr-officer", role = "officer" }]
log = { level = "adep_node=debug,info", format = "json" }
"#;
    write(root, "config", "minimal.toml", minimal.as_bytes())?;
    for text in [deployed.as_str(), minimal] {
        Config::from_toml(text, Path::new("node.toml"), Path::new("/etc/adep"))?;
    }
    Ok(())
}
