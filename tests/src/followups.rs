//! Step 2 helpers shared by the follow-up and privacy tests: a network where DE holds
//! Müller and Schmidt, and the calls an officer and a reviewer make.

use std::time::Duration;

use adep_node::domain::principals::Role;
use adep_proto::v1::{
    DecideFollowUpRequest, Decision, FollowUp, FollowUpFiling, FollowUpState,
    Identity as ProtoIdentity, ImportMode, RequestFollowUpRequest, SearchRequest,
    ShowFollowUpRequest,
};

use crate::{TestNetwork, reason, record};

/// FR, DE and ES; DE holds two records; outbox retries at most every second.
pub async fn network() -> TestNetwork {
    network_with(|_| {}).await
}

/// As [`network`], with DE's configuration changed by `edit`.
pub async fn network_with(edit: impl FnOnce(&mut adep_node::config::Config)) -> TestNetwork {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    for cc in ["FR", "DE", "ES"] {
        net.edit_config(cc, |c| c.followup.retry_max = Duration::from_secs(1));
    }
    net.edit_config("DE", edit);
    net.start_all().await;
    let records = vec![
        record("de-1", "Müller", "Hans Peter", "1970-05-12"),
        record("de-2", "Schmidt", "Karl", "1955-01-01"),
    ];
    net.import("DE", records, ImportMode::Import, 100)
        .await
        .expect("import");
    net
}

/// Searches as FR's officer and returns DE's hit reference for the subject.
pub async fn hit_in_de(net: &TestNetwork, family: &str, given: &str, dob: &str) -> String {
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![ProtoIdentity {
                family_name: family.into(),
                given_names: given.into(),
                date_of_birth: dob.into(),
                ..ProtoIdentity::default()
            }],
        })
        .await
        .expect("search")
        .into_inner();
    answer
        .hits
        .iter()
        .find(|h| h.country == "DE")
        .map(|h| h.hit_ref.clone())
        .expect("a hit in DE")
}

/// A filing as a peer node would send it, naming Müller as the subject.
pub fn filing(country: &str, id: char, hit_ref: &str) -> FollowUpFiling {
    FollowUpFiling {
        request_id: id.to_string().repeat(32),
        country: country.into(),
        hit_ref: hit_ref.into(),
        justification: "Needed for the burglary case in Lyon.".into(),
        offence_description: "o".into(),
        reason: Some(reason()),
        subject: Some(ProtoIdentity {
            family_name: "Müller".into(),
            given_names: "Hans".into(),
            date_of_birth: "1970-05-12".into(),
            ..ProtoIdentity::default()
        }),
        officer_id: format!("{}-officer", country.to_lowercase()),
        ..FollowUpFiling::default()
    }
}

pub async fn request(net: &TestNetwork, hit_ref: &str) -> Result<FollowUp, tonic::Status> {
    net.national("FR", Role::Officer)
        .request_follow_up(RequestFollowUpRequest {
            hit_ref: hit_ref.into(),
            justification: "The subject is suspected of a burglary series in Lyon.".into(),
            offence_description: "Burglary of dwellings, 12 cases".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// FR's officer searches for Müller and files a follow-up for DE's hit.
pub async fn filed_for_mueller(net: &TestNetwork) -> FollowUp {
    let hit_ref = hit_in_de(net, "Müller", "Hans Peter", "1970-05-12").await;
    request(net, &hit_ref).await.expect("filed")
}

pub async fn decide(
    net: &TestNetwork,
    cc: &str,
    role: Role,
    id: &str,
    decision: Decision,
) -> Result<FollowUp, tonic::Status> {
    net.national(cc, role)
        .decide_follow_up(DecideFollowUpRequest {
            id: id.into(),
            decision: decision as i32,
            reason: "Checked against the local file.".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn show(net: &TestNetwork, cc: &str, role: Role, id: &str) -> FollowUp {
    net.national(cc, role)
        .show_follow_up(ShowFollowUpRequest { id: id.into() })
        .await
        .expect("show")
        .into_inner()
}

/// Waits until FR's officer sees the follow-up in `state`.
pub async fn until_state(net: &TestNetwork, id: &str, state: FollowUpState) -> FollowUp {
    until_state_at(net, "FR", Role::Officer, id, state).await
}

/// Waits until DE's reviewer sees the follow-up in `state`. The owner marks a
/// release delivered only once the requester acknowledged it, which is a moment
/// after the requester itself shows it delivered.
pub async fn until_owner_state(net: &TestNetwork, id: &str, state: FollowUpState) -> FollowUp {
    until_state_at(net, "DE", Role::Reviewer, id, state).await
}

async fn until_state_at(
    net: &TestNetwork,
    cc: &str,
    role: Role,
    id: &str,
    state: FollowUpState,
) -> FollowUp {
    for _ in 0..150 {
        let f = show(net, cc, role, id).await;
        if f.state == state as i32 {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{cc} never saw follow-up {id} reach {state:?}");
}
