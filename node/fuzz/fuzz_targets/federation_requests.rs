//! What a peer sends this node, and what peers answer it: arbitrary bytes decoded as a
//! federation message (the first byte chooses which) and, when they decode, the edge's
//! own conversion into domain types (`adep_node::grpc::convert`). Never a panic; a
//! refusal is short, names no value, and still names none when a marker is put into
//! one of the strings sent (the rest of the first byte chooses which); what is
//! accepted survives the trip back: this node's own outbound message for it converts
//! to the same value.

#![no_main]

use adep_node::{
    app::{
        answer::MatchCall,
        evaluate::EvaluateCall,
        peers::{EvaluateQuery, MatchQuery},
    },
    domain::{
        audit::Checkpoint,
        followup::{DecisionNotice, Filing, State},
        principals::Country,
        pseudonymise::{KeyEpoch, oprf::NodeKey},
    },
    grpc::convert::{self, Invalid, federation as wire},
};
use adep_node_fuzz::{check_identity, convert_message};
use adep_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let Some((&choice, body)) = bytes.split_first() else {
        return;
    };
    let mark = choice / 9;
    match choice % 9 {
        0 => convert_message(body, mark, |m: &v1::MatchRequest| -> Result<(), Invalid> {
            wire::request_id(&m.request_id)?;
            let call = MatchCall::try_from(m)?;
            match_round_trip(m, call);
            Ok(())
        }),
        1 => convert_message(
            body,
            mark,
            |f: &v1::FollowUpFiling| -> Result<(), Invalid> {
                let filing = Filing::try_from(f.clone())?;
                check_identity(&filing.subject);
                let again = decode::<v1::FollowUpFiling>(&wire::filing(own(), &filing));
                assert_eq!(Filing::try_from(again), Ok(filing), "filing round trip");
                Ok(())
            },
        ),
        2 => convert_message(
            body,
            mark,
            |d: &v1::FollowUpDecision| -> Result<(), Invalid> {
                let notice = DecisionNotice::try_from(d.clone())?;
                assert!(matches!(
                    notice.state,
                    State::Approved | State::Refused | State::Expired
                ));
                assert!(notice.state == State::Approved || notice.core_data.is_empty());
                let again = decode::<v1::FollowUpDecision>(&wire::decision(own(), &notice));
                assert_eq!(
                    DecisionNotice::try_from(again),
                    Ok(notice),
                    "decision round trip"
                );
                Ok(())
            },
        ),
        3 => convert_message(body, mark, |p: &v1::FollowUpPoll| -> Result<(), Invalid> {
            for (i, id) in p.request_ids.iter().enumerate() {
                let parsed = convert::followup_id(&format!("request_ids[{i}]"), id)?;
                assert_eq!(&parsed.to_string(), id);
            }
            Ok(())
        }),
        4 => convert_message(
            body,
            mark,
            |w: &v1::FollowUpWithdrawal| -> Result<(), Invalid> {
                let parsed = convert::followup_id("request_id", &w.request_id)?;
                assert_eq!(parsed.to_string(), w.request_id);
                Ok(())
            },
        ),
        5 => convert_message(
            body,
            mark,
            |answer: &v1::MatchResponse| -> Result<(), String> {
                // A peer's answer to this node's Match.
                let total: usize = answer.results.iter().map(|r| r.hits.len()).sum();
                let hits = wire::peer_hits(answer.clone())?;
                assert_eq!(hits.len(), total);
                Ok(())
            },
        ),
        6 => convert_message(
            body,
            mark,
            |r: &v1::FollowUpReceipt| -> Result<(), String> {
                // A peer's receipt for a filing, a withdrawal or a poll.
                let receipt = wire::peer_receipt(r.clone())?;
                let again = decode::<v1::FollowUpReceipt>(&v1::FollowUpReceipt::from(&receipt));
                assert_eq!(wire::peer_receipt(again), Ok(receipt), "receipt round trip");
                Ok(())
            },
        ),
        7 => convert_message(
            body,
            mark,
            |m: &v1::EvaluateRequest| -> Result<(), Invalid> {
                wire::request_id(&m.request_id)?;
                let call = EvaluateCall::try_from(m)?;
                let query = EvaluateQuery {
                    request_id: call.request_id.clone(),
                    subjects: call.subjects.clone(),
                };
                let again = decode::<v1::EvaluateRequest>(&wire::evaluate_request(own(), &query));
                let again = EvaluateCall::try_from(&again).expect("this node's own Evaluate converts");
                assert_eq!(again.subjects, call.subjects, "evaluate round trip");
                // Any 32 bytes: evaluated, or refused naming the element, never a panic.
                if call.subjects.iter().map(Vec::len).sum::<usize>() <= 64 {
                    let key = NodeKey::derive(&[0x5a; 32], KeyEpoch(1)).expect("a key");
                    if let Ok(out) = key.evaluate(&call.subjects) {
                        assert_eq!(out.len(), call.subjects.len());
                    }
                }
                Ok(())
            },
        ),
        _ => {
            let _ = v1::HelloRequest::decode(body);
        }
    }
});

/// The country this node's outbound messages claim.
fn own() -> Country {
    "FR".parse().expect("a country code")
}

/// A message through its encoding, as a peer receives it.
fn decode<M: Message + Default>(message: &impl Message) -> M {
    M::decode(message.encode_to_vec().as_slice()).expect("an encoded message decodes")
}

/// The Match this node would send for the same keys converts to the same call.
fn match_round_trip(request: &v1::MatchRequest, call: MatchCall) {
    assert_eq!(call.subjects.len(), request.subjects.len());
    // This node always sends its audit head; a peer may leave it out.
    let head = call.peer_head.clone().unwrap_or(Checkpoint {
        seq: 0,
        hash: [0; 32],
        time: 0,
        signature: Vec::new(),
    });
    let query = MatchQuery {
        request_id: call.request_id.clone(),
        reason: call.reason.clone(),
        epoch: call.epoch,
        subjects: call.subjects.clone(),
        head: head.clone(),
    };
    let again = decode::<v1::MatchRequest>(&wire::match_request(own(), &query));
    let again = MatchCall::try_from(&again).expect("this node's own Match converts");
    assert_eq!(again.request_id, call.request_id);
    assert_eq!(again.reason, call.reason);
    assert_eq!(again.epoch, call.epoch);
    assert_eq!(again.subjects, call.subjects);
    assert_eq!(again.peer_head, Some(head));
}
