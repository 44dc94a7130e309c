//! [`Strings`] for the request messages the targets convert, and the peers' answers.

use adep_proto::v1;

use super::Strings;

impl<T: Strings> Strings for Option<T> {
    fn strings<'a>(&'a mut self, out: &mut Vec<&'a mut String>) {
        if let Some(message) = self {
            message.strings(out);
        }
    }
}

impl<T: Strings> Strings for Vec<T> {
    fn strings<'a>(&'a mut self, out: &mut Vec<&'a mut String>) {
        for message in self {
            message.strings(out);
        }
    }
}

impl Strings for String {
    fn strings<'a>(&'a mut self, out: &mut Vec<&'a mut String>) {
        out.push(self);
    }
}

/// `impl Strings for X { fields }`: each field is a string or a message, in order;
/// maps give their values, in key order.
macro_rules! strings {
    ($($message:ident { $($field:ident),* $(; map $map:ident)? })*) => {$(
        impl Strings for v1::$message {
            fn strings<'a>(&'a mut self, out: &mut Vec<&'a mut String>) {
                $(self.$field.strings(out);)*
                $(
                    let mut entries: Vec<_> = self.$map.iter_mut().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    out.extend(entries.into_iter().map(|(_, value)| value));
                )?
            }
        }
    )*};
}

strings! {
    Reason { case_reference, offence_category }
    Alias { family_name, given_names }
    Identity { family_name, given_names, date_of_birth, sex, place_of_birth, nationalities, aliases }
    MatchRequest { request_id, country, reason }
    EvaluateRequest { request_id, country }
    FollowUpFiling { request_id, country, hit_ref, justification, offence_description, offence_category, reason, subject, officer_id }
    FollowUpDecision { request_id, reason, country; map core_data }
    FollowUpPoll { country, request_ids }
    FollowUpWithdrawal { request_id, country }
    MatchResponse { results }
    SubjectResult { hits }
    Hit { hit_ref }
    FollowUpReceipt { request_id }
    SearchRequest { reason, subjects }
    ImportRequest { records }
    RecordData { record_id, identity; map payload }
    DeleteRecordsRequest { record_ids }
    RequestFollowUpRequest { hit_ref, justification, offence_description }
    DecideFollowUpRequest { id, reason }
    ShowFollowUpRequest { id }
    WithdrawFollowUpRequest { id }
}

impl Strings for v1::ListFollowUpsRequest {
    fn strings<'a>(&'a mut self, _: &mut Vec<&'a mut String>) {}
}

impl Strings for v1::VerifyAuditRequest {
    fn strings<'a>(&'a mut self, _: &mut Vec<&'a mut String>) {}
}
