//! Peers fail independently (DESIGN section 9): FR's calls to DE and DE's calls to FR
//! go through an in-test TCP proxy (`adep_tests::proxy`) that adds latency, stalls,
//! resets a connection in the middle of a call, or accepts and never answers. Every
//! search of FR's officer returns; its answer says for DE what happened (ok, timed
//! out, unavailable) and ES answers as usual. A decision DE makes while its link to FR
//! is down reaches FR once the link heals.
//!
//! No assertion is about time: these machines are shared and noisy. Each search runs
//! under a one-minute guard only so that a hang fails the test instead of stalling CI.

use std::time::Duration;

use adep_node::{config::Config, domain::principals::Role};
use adep_proto::v1::{
    Decision, FollowUpState, Identity, ImportMode, PeerState, SearchRequest, SearchResponse,
};
use adep_tests::{
    TestNetwork,
    followups::{decide, filed_for_mueller, show, until_owner_state, until_state},
    proxy::{Fault, Proxy},
    reason, record,
};

/// The peer deadline of every node in these tests.
const PEER_TIMEOUT_MS: u64 = 1_000;

/// Far longer than any search may take: a search still running then hangs.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// FR, DE and ES with DE holding Müller and Schmidt; FR reaches DE only through
/// `to_de` and DE reaches FR only through `to_fr`. Both proxies start healthy.
struct Faulty {
    net: TestNetwork,
    /// FR's calls to DE: Match, filings, polls.
    to_de: Proxy,
    /// DE's calls to FR: deliveries of decisions.
    to_fr: Proxy,
}

async fn network() -> Faulty {
    network_with_deadline(PEER_TIMEOUT_MS).await
}

async fn network_with_deadline(peer_timeout_ms: u64) -> Faulty {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    let to_de = Proxy::start(net.federation_addr("DE")).await;
    let to_fr = Proxy::start(net.federation_addr("FR")).await;
    for cc in ["FR", "DE", "ES"] {
        net.edit_config(cc, |c| {
            c.followup.retry_max = Duration::from_secs(1);
            c.limits.peer_timeout_ms = peer_timeout_ms;
        });
    }
    net.edit_config("FR", |c| route(c, "DE", &to_de));
    net.edit_config("DE", |c| route(c, "FR", &to_fr));
    net.start_all().await;
    let records = vec![
        record("de-1", "Müller", "Hans Peter", "1970-05-12"),
        record("de-2", "Schmidt", "Karl", "1955-01-01"),
    ];
    net.import("DE", records, ImportMode::Import, 100)
        .await
        .expect("import");
    Faulty { net, to_de, to_fr }
}

/// Points a node's peer `peer` at `proxy`.
fn route(config: &mut Config, peer: &str, proxy: &Proxy) {
    let p = config
        .peers
        .iter_mut()
        .find(|p| p.country.as_str() == peer)
        .unwrap_or_else(|| panic!("{peer} is a configured peer"));
    p.endpoint = proxy.endpoint();
}

/// FR's officer searches for Müller, whom DE holds; the call must return.
async fn search(net: &TestNetwork) -> SearchResponse {
    let mut officer = net.national("FR", Role::Officer);
    let call = officer.search(SearchRequest {
        reason: Some(reason()),
        subjects: vec![Identity {
            family_name: "Müller".into(),
            given_names: "Hans Peter".into(),
            date_of_birth: "1970-05-12".into(),
            ..Identity::default()
        }],
    });
    tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("the search returns")
        .expect("the search is answered")
        .into_inner()
}

/// A peer's state in a search answer.
fn state(answer: &SearchResponse, country: &str) -> PeerState {
    let peer = answer
        .peers
        .iter()
        .find(|p| p.country == country)
        .unwrap_or_else(|| panic!("{country} is in the answer: {answer:?}"));
    PeerState::try_from(peer.state).unwrap_or(PeerState::Unspecified)
}

fn hits_from(answer: &SearchResponse, country: &str) -> usize {
    answer.hits.iter().filter(|h| h.country == country).count()
}

/// DE answered with its hit for Müller, and ES answered too.
fn assert_all_answer(answer: &SearchResponse) {
    assert_eq!(state(answer, "DE"), PeerState::Ok, "{answer:?}");
    assert!(hits_from(answer, "DE") >= 1, "{answer:?}");
    assert_eq!(state(answer, "ES"), PeerState::Ok, "{answer:?}");
}

/// DE is reported `expected` with no hits, and ES answered as usual.
fn assert_de_failed_as(answer: &SearchResponse, expected: PeerState) {
    assert_eq!(state(answer, "DE"), expected, "{answer:?}");
    assert_eq!(hits_from(answer, "DE"), 0, "{answer:?}");
    assert_eq!(state(answer, "ES"), PeerState::Ok, "{answer:?}");
}

/// Searches until DE answers again (at most 40 searches, a quarter second apart).
async fn until_de_answers(net: &TestNetwork) -> SearchResponse {
    let mut last = None;
    for _ in 0..40 {
        let answer = search(net).await;
        if state(&answer, "DE") == PeerState::Ok {
            return answer;
        }
        last = Some(answer);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("DE never answered again: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_slowed_within_the_deadline_still_answers_with_its_hits() {
    // A generous deadline: 50 ms per chunk each way, from the first handshake byte.
    let f = network_with_deadline(10_000).await;
    f.to_de.set(Fault::Latency(Duration::from_millis(50)));
    let answer = search(&f.net).await;
    assert_all_answer(&answer);
    assert!(f.to_de.accepted() >= 1, "FR reached DE through the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_slower_than_the_deadline_times_out_while_the_others_answer() {
    let f = network().await;
    assert_all_answer(&search(&f.net).await);
    // Every chunk is held twice the deadline: the open connection's next call too.
    f.to_de
        .set(Fault::Latency(Duration::from_millis(2 * PEER_TIMEOUT_MS)));
    assert_de_failed_as(&search(&f.net).await, PeerState::TimedOut);
    f.to_de.heal();
    assert_all_answer(&until_de_answers(&f.net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_times_out_while_the_others_answer_and_answers_once_healed() {
    let f = network().await;
    assert_all_answer(&search(&f.net).await);
    // The connection FR holds to DE forwards nothing from now on, either way.
    f.to_de.set(Fault::Stall);
    assert_de_failed_as(&search(&f.net).await, PeerState::TimedOut);
    assert_de_failed_as(&search(&f.net).await, PeerState::TimedOut);
    f.to_de.heal();
    assert_all_answer(&until_de_answers(&f.net).await);
    assert!(f.to_de.accepted() >= 1, "FR reached DE through the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_accepts_and_never_answers_times_out_while_the_others_answer() {
    let f = network().await;
    // Before FR ever connected: its connection is accepted, and the handshake hangs.
    f.to_de.set(Fault::Unanswered);
    let answer = search(&f.net).await;
    assert!(f.to_de.accepted() >= 1, "FR's connection was accepted");
    assert_de_failed_as(&answer, PeerState::TimedOut);
    f.to_de.heal();
    assert_all_answer(&until_de_answers(&f.net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_call_shows_the_peer_unavailable_while_the_others_answer() {
    let f = network().await;
    assert_all_answer(&search(&f.net).await);
    // The open connection is reset 64 bytes into the next Match request; a new one
    // would be reset 64 bytes into its handshake.
    f.to_de.set(Fault::ResetAfter(64));
    assert_de_failed_as(&search(&f.net).await, PeerState::Unavailable);
    f.to_de.heal();
    assert_all_answer(&until_de_answers(&f.net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_the_requester_is_unreachable_is_delivered_once_the_link_heals() {
    let f = network().await;
    let filed = filed_for_mueller(&f.net).await;
    // DE's deliveries to FR go nowhere; FR's calls to DE (its polls) still pass.
    f.to_fr.set(Fault::Stall);
    let approved = decide(&f.net, "DE", Role::Reviewer, &filed.id, Decision::Approve)
        .await
        .expect("DE's reviewer approves while FR is unreachable");
    assert_eq!(approved.state, FollowUpState::Approved as i32);
    // DE's outbox has tried to deliver (a connection reached the proxy) and given up
    // at least once (attempts end at the 1 s deadline, then wait up to 1 s).
    for _ in 0..200 {
        if f.to_fr.accepted() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f.to_fr.accepted() >= 1, "DE tried to deliver to FR");
    tokio::time::sleep(Duration::from_millis(2 * PEER_TIMEOUT_MS + 500)).await;
    let waiting = show(&f.net, "FR", Role::Officer, &filed.id).await;
    assert_eq!(waiting.state, FollowUpState::Pending as i32, "{waiting:?}");
    assert!(waiting.core_data.is_empty());
    assert_eq!(
        show(&f.net, "DE", Role::Reviewer, &filed.id).await.state,
        FollowUpState::Approved as i32,
        "not delivered while FR is unreachable"
    );

    f.to_fr.heal();
    let delivered = until_state(&f.net, &filed.id, FollowUpState::Delivered).await;
    assert_eq!(delivered.core_data["record_id"], "de-1");
    assert_eq!(delivered.decision_reason, "Checked against the local file.");
    until_owner_state(&f.net, &filed.id, FollowUpState::Delivered).await;
}
