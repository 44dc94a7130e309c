//! What a national user sends the node: arbitrary bytes decoded as a national API
//! request (the first byte chooses which) and, when they decode, the edge's own
//! conversion into domain types (`adep_node::grpc::convert`). Never a panic; a refusal
//! is short, names no value, and still names none when a marker is put into one of
//! the strings sent (the rest of the first byte chooses which); what is accepted keeps
//! its bounds, and an accepted record or subject converts back to the same value.

#![no_main]

use adep_node::{
    app::{self, listing::Filter, requester::Request, search::Search},
    domain::{
        followup::{MAX_JUSTIFICATION_BYTES, MAX_TEXT_BYTES},
        identity::Record,
    },
    grpc::convert::{self, Invalid, national as wire},
    tooling::requests,
};
use adep_node_fuzz::{check_identity, check_record, check_refusal, convert_message};
use adep_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let Some((&choice, body)) = bytes.split_first() else {
        return;
    };
    let mark = choice / 11;
    match choice % 11 {
        0 => convert_message(body, mark, |s: &v1::SearchRequest| -> Result<(), Invalid> {
            let search = Search::try_from(s)?;
            assert_eq!(search.subjects.len(), s.subjects.len());
            for (i, subject) in search.subjects.iter().enumerate() {
                check_identity(subject);
                let again = convert::identity("subjects", i, &requests::identity(subject));
                assert_eq!(again.as_ref(), Ok(subject), "subject round trip");
            }
            Ok(())
        }),
        1 => convert_message(body, mark, |m: &v1::ImportRequest| -> Result<(), Invalid> {
            // One message of an ImportRecords stream, as the handler reads it.
            let _ = wire::import_mode(m.mode);
            for (i, data) in m.records.iter().enumerate() {
                record_round_trip(&convert::record(i, data.clone())?);
            }
            Ok(())
        }),
        2 => convert_message(body, mark, |data: &v1::RecordData| -> Result<(), Invalid> {
            record_round_trip(&convert::record(0, data.clone())?);
            Ok(())
        }),
        3 => convert_message(
            body,
            mark,
            |d: &v1::DeleteRecordsRequest| -> Result<(), Invalid> {
                let ids = wire::record_ids(&d.record_ids)?;
                assert_eq!(ids.len(), d.record_ids.len());
                for (id, sent) in ids.iter().zip(&d.record_ids) {
                    assert_eq!(id.as_str(), sent);
                }
                Ok(())
            },
        ),
        4 => convert_message(
            body,
            mark,
            |r: &v1::RequestFollowUpRequest| -> Result<(), Invalid> {
                let request = Request::try_from(r.clone())?;
                check_text(&request.justification, MAX_JUSTIFICATION_BYTES);
                check_text(&request.offence_description, MAX_TEXT_BYTES);
                Ok(())
            },
        ),
        5 => convert_message(
            body,
            mark,
            |l: &v1::ListFollowUpsRequest| -> Result<(), Invalid> {
                let filter = Filter::try_from(l)?;
                assert_ne!(filter.limit, Some(0));
                Ok(())
            },
        ),
        6 => convert_message(
            body,
            mark,
            |d: &v1::DecideFollowUpRequest| -> Result<(), Invalid> {
                let (id, _, reason) = wire::decision(d)?;
                assert_eq!(id.to_string(), d.id);
                check_text(&reason, MAX_TEXT_BYTES);
                Ok(())
            },
        ),
        7 => convert_message(
            body,
            mark,
            |s: &v1::ShowFollowUpRequest| -> Result<(), Invalid> {
                convert::followup_id("id", &s.id).map(drop)
            },
        ),
        8 => convert_message(
            body,
            mark,
            |w: &v1::WithdrawFollowUpRequest| -> Result<(), Invalid> {
                convert::followup_id("id", &w.id).map(drop)
            },
        ),
        9 => {
            let Ok(a) = v1::AuditExportRequest::decode(body) else {
                return;
            };
            let (since, until) = wire::period(&a);
            match app::audit::period(since, until) {
                Ok((since, until)) => assert!(since < until),
                Err(e) => check_refusal(&e.to_string()),
            }
        }
        _ => convert_message(
            body,
            mark,
            |v: &v1::VerifyAuditRequest| -> Result<(), Invalid> {
                let witnesses = wire::witnesses(v)?;
                assert_eq!(witnesses.len(), v.witnesses.len());
                for (i, w) in witnesses.iter().enumerate() {
                    let again = convert::checkpoint("w", Some(&v1::AuditCheckpoint::from(w)));
                    assert_eq!(again, Ok(Some(w.clone())), "witnesses[{i}] round trip");
                }
                Ok(())
            },
        ),
    }
});

/// A free-text field as accepted: trimmed, bounded, no control characters but newline
/// and tab.
fn check_text(value: &str, max: usize) {
    assert_eq!(value.trim(), value);
    assert!(!value.is_empty() && value.len() <= max);
    assert!(
        !value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    );
}

/// An accepted record keeps its bounds, and the forms this node and the CLI send it in
/// convert back to the same record.
fn record_round_trip(record: &Record) {
    check_record(record);
    let shown = convert::record(0, v1::RecordData::from(record));
    assert_eq!(
        shown.as_ref(),
        Ok(record),
        "record round trip (RecordData::from)"
    );
    let imported = convert::record(0, requests::record(record));
    assert_eq!(
        imported.as_ref(),
        Ok(record),
        "record round trip (CLI import)"
    );
}
