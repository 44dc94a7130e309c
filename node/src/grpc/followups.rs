//! Step 2 at the gRPC edge: filing, deciding and delivering follow-ups, on both the
//! requesting and the owner node, and the owner's outbox that delivers decisions.
//!
//! Personal data moves only here: the subject's identity (requesting state's own
//! data) goes to the owner with a filing; the record's core data goes back only in an
//! approved decision, only to the node that filed, and the owner forgets it once that
//! node acknowledges it. Log lines carry ids, countries and states, never content.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use adep_proto::v1 as pb;
use tonic::Status;

use super::{NodeState, convert};
use crate::domain::audit::AuditLog;
use crate::{
    domain::followup::{
        self, Book, Decided, Decision, Direction, FollowUp, FollowUpError, OutboxChange, Outgoing,
        ReceivedHit, State,
    },
    domain::hitref::{self, HitRef, HitRefError},
    domain::identity::Record,
    domain::principals::{Country, Role},
    store::{Store, StoreError},
};

/// Follow-ups listed when the caller names no limit, and the most it may name.
const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1000;

/// Most request ids in one poll.
pub const MAX_POLL_IDS: usize = 1000;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    crate::store::unix_now()
}

fn store_error(e: StoreError) -> Status {
    tracing::error!(error = %e, "follow-up store operation failed");
    Status::unavailable("the store failed; nothing was changed, try again")
}

fn followup_error(e: FollowUpError) -> Status {
    match e {
        FollowUpError::OwnRequest(_) => Status::permission_denied(e.to_string()),
        FollowUpError::Closed { .. } | FollowUpError::SameReviewer(_) => {
            Status::failed_precondition(e.to_string())
        }
    }
}

/// Runs follow-up store work off the async threads, one piece at a time: each piece
/// reads, changes and writes follow-ups, and two must not interleave (a decision
/// arriving while a poll updates the same request).
async fn blocking<T: Send + 'static>(
    state: &Arc<NodeState>,
    work: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    writing(state, move |state| work(state.store.as_ref())).await
}

/// Like [`blocking`], for work that stores a step together with its audit event
/// ([`NodeState::commit`]).
async fn writing<T: Send + 'static>(
    state: &Arc<NodeState>,
    work: impl FnOnce(&NodeState) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let _one_at_a_time = state
            .followup_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        work(&state)
    })
    .await
    .map_err(|_| Status::internal("a store task failed"))?
    .map_err(store_error)
}

/// Checks a follow-up id: 32 lower-case hexadecimal digits.
pub fn check_id(field: &str, id: &str) -> Result<(), Status> {
    if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Status::invalid_argument(format!(
            "field `{field}` must be 32 lower-case hexadecimal digits"
        )));
    }
    Ok(())
}

/// A bounded free-text field; `required` refuses an empty (or blank) one.
fn text(field: &str, value: &str, max: usize, required: bool) -> Result<String, Status> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "field `{field}` is required"
        )));
    }
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "field `{field}` is longer than {max} bytes"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Status::invalid_argument(format!(
            "field `{field}` contains control characters"
        )));
    }
    Ok(value.to_owned())
}

/// The proto state of a follow-up state.
pub fn state_to_proto(state: State) -> pb::FollowUpState {
    match state {
        State::Pending => pb::FollowUpState::Pending,
        State::OnHold => pb::FollowUpState::OnHold,
        State::Approved => pb::FollowUpState::Approved,
        State::Delivered => pb::FollowUpState::Delivered,
        State::Refused => pb::FollowUpState::Refused,
        State::Expired => pb::FollowUpState::Expired,
        State::Withdrawn => pb::FollowUpState::Withdrawn,
    }
}

/// The follow-up state of a proto state, None for UNSPECIFIED or unknown values.
pub fn state_from_proto(value: i32) -> Option<State> {
    State::ALL
        .into_iter()
        .find(|s| state_to_proto(*s) as i32 == value)
}

fn decision_to_proto(d: Decision) -> pb::Decision {
    match d {
        Decision::Approve => pb::Decision::Approve,
        Decision::Refuse => pb::Decision::Refuse,
        Decision::Hold => pb::Decision::Hold,
    }
}

/// What a user sees of a follow-up; `record` only for a reviewer's incoming view.
pub fn view(f: &FollowUp, record: Option<&Record>, now: i64) -> pb::FollowUp {
    pb::FollowUp {
        id: f.id.clone(),
        direction: match f.direction {
            Direction::Outgoing => pb::Direction::Outgoing,
            Direction::Incoming => pb::Direction::Incoming,
        } as i32,
        country: f.country.clone(),
        hit_ref: f.hit_ref.clone(),
        state: state_to_proto(f.state) as i32,
        overdue: f.overdue(now),
        officer_id: f.officer_id.clone(),
        reason: Some(convert::reason_to_proto(&f.reason)),
        justification: f.justification.clone(),
        offence_description: f.offence_description.clone(),
        subject: Some(convert::matched_identity_to_proto(&f.subject)),
        filed_at: f.filed_at,
        deadline_at: f.deadline_at,
        expires_at: f.expires_at,
        steps: f
            .steps
            .iter()
            .map(|s| pb::ReviewStep {
                reviewer: s.reviewer.clone(),
                decision: decision_to_proto(s.decision) as i32,
                reason: s.reason.clone(),
                at: s.at,
            })
            .collect(),
        decision_reason: f.decision_reason.clone(),
        core_data: f.core_data.clone().into_iter().collect(),
        record: record.map(convert::record_to_proto),
        quality: f
            .quality
            .map_or(pb::Quality::Unspecified, convert::quality_to_proto) as i32,
    }
}

fn receipt(f: &FollowUp) -> pb::FollowUpReceipt {
    pb::FollowUpReceipt {
        request_id: f.id.clone(),
        state: state_to_proto(f.state) as i32,
        deadline_at: f.deadline_at,
        expires_at: f.expires_at,
    }
}

// ---- Owner node ----

/// A peer files a follow-up: resolve the hit reference for that peer, store the
/// request durably, then acknowledge. Filing the same id again returns its state.
pub async fn file(
    state: &Arc<NodeState>,
    peer: Country,
    filing: pb::FollowUpFiling,
) -> Result<pb::FollowUpReceipt, Status> {
    check_id("request_id", &filing.request_id)?;
    let hit: HitRef = filing
        .hit_ref
        .parse()
        .map_err(|e: &str| Status::invalid_argument(format!("field `hit_ref`: {e}")))?;
    let reason = convert::reason(filing.reason.as_ref())?;
    let justification = text(
        "justification",
        &filing.justification,
        followup::MAX_JUSTIFICATION_BYTES,
        true,
    )?;
    let offence_description = text(
        "offence_description",
        &filing.offence_description,
        followup::MAX_TEXT_BYTES,
        true,
    )?;
    let officer_id = text("officer_id", &filing.officer_id, 128, true)?;
    let subject = convert::identity_of("subject", filing.subject.as_ref())?;
    let config = state.config.followup.clone();
    let id = filing.request_id.clone();
    let now = now();
    let stored = writing(state, move |state| {
        let store = state.store.as_ref();
        let book = Book::new(store);
        if let Some(existing) = book.get(Direction::Incoming, &id)? {
            return Ok(Ok(existing));
        }
        let issued = match hitref::resolve(store, &hit, peer, now)? {
            Ok(issued) => issued,
            Err(e) => return Ok(Err(e)),
        };
        let f = FollowUp {
            id,
            direction: Direction::Incoming,
            country: peer.to_string(),
            hit_ref: hit.to_string(),
            state: State::Pending,
            officer_id,
            reason,
            justification,
            offence_description,
            subject,
            filed_at: now,
            deadline_at: now + config.decision_deadline.as_secs() as i64,
            expires_at: now + config.expiry.as_secs() as i64,
            steps: Vec::new(),
            decision_reason: String::new(),
            core_data: BTreeMap::new(),
            record: Some(issued.record),
            quality: quality_of(&issued.quality),
        };
        state.commit(
            Book::batch(&f, OutboxChange::Keep),
            "followup.filed",
            &serde_json::json!({
                "followup": f.id,
                "peer": peer.as_str(),
                "officer": f.officer_id,
                "reason": convert::reason_json(&f.reason),
                "quality": f.quality.map(|q| q.name()),
            }),
        )?;
        Ok(Ok(f))
    })
    .await?;
    match stored {
        Ok(f) if f.country != peer.as_str() => Err(Status::already_exists(
            "field `request_id`: this id is taken; choose another",
        )),
        Ok(f) => {
            tracing::info!(peer = %peer, followup = %f.id, state = f.state.name(), "follow-up filed");
            Ok(receipt(&f))
        }
        // Unknown and another country's reference look the same to the caller.
        Err(HitRefError::Unknown | HitRefError::OtherCountry) => Err(Status::not_found(format!(
            "field `hit_ref`: no hit reference of this node was issued to {peer} under this value"
        ))),
        Err(HitRefError::Expired) => Err(Status::failed_precondition(
            "field `hit_ref`: the hit reference has expired; search again",
        )),
    }
}

fn quality_of(name: &str) -> Option<crate::domain::pseudonymise::Quality> {
    use crate::domain::pseudonymise::Quality;
    [Quality::Exact, Quality::Strong, Quality::Weak]
        .into_iter()
        .find(|q| q.name() == name)
}

/// A peer withdraws one of its undecided requests.
pub async fn withdraw_incoming(
    state: &Arc<NodeState>,
    peer: Country,
    id: String,
) -> Result<pb::FollowUpReceipt, Status> {
    check_id("request_id", &id)?;
    let f = writing(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(mut f) = book.get(Direction::Incoming, &id)? else {
            return Ok(None);
        };
        if f.country != peer.as_str() {
            return Ok(None);
        }
        // A withdrawal that came too late changes nothing but is recorded all the same.
        let batch = match f.withdraw() {
            Ok(()) => Book::batch(&f, OutboxChange::Keep),
            Err(_) => crate::store::Batch::new(),
        };
        state.commit(
            batch,
            "followup.withdrawn",
            &serde_json::json!({ "followup": f.id, "peer": peer.as_str(), "state": f.state.name() }),
        )?;
        Ok(Some(f))
    })
    .await?
    .ok_or_else(|| Status::not_found("field `request_id`: no follow-up of yours has this id"))?;
    tracing::info!(peer = %peer, followup = %f.id, state = f.state.name(), "follow-up withdrawal");
    Ok(receipt(&f))
}

/// A peer asks for the state of its requests; decided ones not yet acknowledged are
/// sent again at once.
pub async fn poll(
    state: &Arc<NodeState>,
    peer: Country,
    ids: Vec<String>,
) -> Result<pb::FollowUpPollResponse, Status> {
    if ids.len() > MAX_POLL_IDS {
        return Err(Status::invalid_argument(format!(
            "field `request_ids`: {} ids exceed the limit of {MAX_POLL_IDS}",
            ids.len()
        )));
    }
    for (i, id) in ids.iter().enumerate() {
        check_id(&format!("request_ids[{i}]"), id)?;
    }
    let now = now();
    let (receipts, resend) = blocking(state, move |store| {
        let book = Book::new(store);
        let mut receipts = Vec::new();
        let mut resend = false;
        for id in ids {
            let Some(f) = book.get(Direction::Incoming, &id)? else {
                continue;
            };
            if f.country != peer.as_str() {
                continue;
            }
            if let Some(mut entry) = book.outbox_entry(&id)? {
                entry.next_attempt = now;
                book.reschedule(&entry)?;
                resend = true;
            }
            receipts.push(receipt(&f));
        }
        Ok((receipts, resend))
    })
    .await?;
    if resend {
        state.outbox_wake.notify_one();
    }
    Ok(pb::FollowUpPollResponse { receipts })
}

/// A reviewer decides an incoming request. A final decision and its outbox entry
/// (with the released core data when approved) are stored in one durable batch.
pub async fn decide(
    state: &Arc<NodeState>,
    reviewer: String,
    req: pb::DecideFollowUpRequest,
) -> Result<pb::FollowUp, Status> {
    check_id("id", &req.id)?;
    let decision = match pb::Decision::try_from(req.decision) {
        Ok(pb::Decision::Approve) => Decision::Approve,
        Ok(pb::Decision::Refuse) => Decision::Refuse,
        Ok(pb::Decision::Hold) => Decision::Hold,
        _ => {
            return Err(Status::invalid_argument(
                "field `decision` must be approve, refuse or hold",
            ));
        }
    };
    let reason = text("reason", &req.reason, followup::MAX_TEXT_BYTES, true)?;
    let config = state.config.followup.clone();
    let index = state.index.active();
    let id = req.id.clone();
    let now = now();
    let (f, record) = writing(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(mut f) = book.get(Direction::Incoming, &id)? else {
            if book.get(Direction::Outgoing, &id)?.is_some() {
                return Ok(Err(FollowUpError::OwnRequest(id).into()));
            }
            return Ok(Err(Status::not_found(format!(
                "no incoming follow-up has id {id}"
            ))));
        };
        let record = match &f.record {
            Some(r) => index
                .record(r)
                .map_err(|e| StoreError::Engine(e.to_string()))?,
            None => None,
        };
        if decision == Decision::Approve && record.is_none() && f.state.is_open() {
            return Ok(Err(Status::failed_precondition(
                "the record this request concerns has been erased; refuse the request instead",
            )));
        }
        let outcome = match f.decide(&reviewer, decision, &reason, now, config.four_eyes) {
            Ok(o) => o,
            Err(e) => return Ok(Err(followup_error(e))),
        };
        let entry = (outcome == Decided::Final).then(|| Outgoing {
            id: f.id.clone(),
            country: f.country.clone(),
            state: f.state,
            reason: f.decision_reason.clone(),
            core_data: match (f.state, &record) {
                (State::Approved, Some(r)) => followup::release(r, &config.release_fields),
                _ => BTreeMap::new(),
            },
            decided_at: now,
            attempts: 0,
            next_attempt: now,
        });
        // The decision, its outbox entry and its audit event: one durable write.
        let last = f.steps.last();
        state.commit(
            Book::batch(
                &f,
                entry.as_ref().map_or(OutboxChange::Keep, OutboxChange::Put),
            ),
            "followup.decided",
            &serde_json::json!({
                "followup": f.id,
                "peer": f.country,
                "reviewer": last.map(|s| s.reviewer.as_str()),
                "decision": last.map(|s| format!("{:?}", s.decision).to_lowercase()),
                "state": f.state.name(),
                "released_fields": entry.as_ref().map(|e| e.core_data.keys().collect::<Vec<_>>()).unwrap_or_default(),
            }),
        )?;
        Ok(Ok((f, record)))
    })
    .await??;
    tracing::info!(followup = %f.id, peer = %f.country, state = f.state.name(), "follow-up decided");
    if !f.state.is_open() {
        state.outbox_wake.notify_one();
    }
    Ok(view(&f, record.as_ref(), now))
}

impl From<FollowUpError> for Status {
    fn from(e: FollowUpError) -> Status {
        followup_error(e)
    }
}

/// Closes undecided incoming requests past their expiry and queues the news for
/// the requesting node; closes this node's own requests whose owner has reported
/// nothing `grace` seconds after their expiry (the owner is down or gone; a decision
/// it sends later still counts). Returns how many closed of each.
fn expire(store: &dyn Store, now: i64, grace: i64) -> Result<(usize, usize), StoreError> {
    let book = Book::new(store);
    let mut closed = 0;
    let mut silent = 0;
    for mut f in book.list(Direction::Outgoing)? {
        if f.state.is_open() && now >= f.expires_at.saturating_add(grace) {
            f.state = State::Expired;
            f.decision_reason =
                "the owner node reported no decision before the request expired".into();
            book.save(&f, OutboxChange::Keep)?;
            silent += 1;
        }
    }
    for mut f in book.list(Direction::Incoming)? {
        if f.state.is_open() && now >= f.expires_at {
            f.state = State::Expired;
            let entry = Outgoing {
                id: f.id.clone(),
                country: f.country.clone(),
                state: State::Expired,
                reason: String::new(),
                core_data: BTreeMap::new(),
                decided_at: now,
                attempts: 0,
                next_attempt: now,
            };
            book.save(&f, OutboxChange::Put(&entry))?;
            closed += 1;
        }
    }
    Ok((closed, silent))
}

/// Delivers due outbox entries until `stop` turns true: each entry is sent to its
/// requesting node, and removed (the follow-up marked delivered when approved) once
/// that node acknowledges; failures are retried with a doubling wait. Also closes
/// expired requests.
pub async fn run_outbox(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let max_wait = state.config.followup.retry_max.as_secs() as i64;
    let mut last_poll: Option<i64> = None;
    let mut last_prune: Option<i64> = None;
    // `serve` warns of expiring certificates at start-up; this loop hourly after.
    let started = now();
    loop {
        let now = now();
        if last_prune.is_none_or(|t| now - t >= PRUNE_EVERY_SECONDS) {
            last_prune = Some(now);
            prune(&state, now).await;
            if now > started {
                state.warn_of_expiring_certificates(now);
            }
        }
        if last_poll.is_none_or(|t| now - t >= max_wait) {
            last_poll = Some(now);
            poll_owners(&state).await;
        }
        let due = writing(&state, move |state| {
            let store = state.store.as_ref();
            // The requester polls the owner every retry_max: two silent polls after
            // the expiry and it closes the request itself.
            let (closed, silent) = expire(store, now, 2 * max_wait)?;
            if closed + silent > 0 {
                tracing::info!(closed, silent, "undecided follow-ups expired");
                let fields = serde_json::json!({ "closed": closed, "owner_silent": silent });
                if let Err(e) =
                    state.commit(crate::store::Batch::new(), "followup.expired", &fields)
                {
                    tracing::error!(error = %e, "cannot record an audit event");
                }
            }
            Book::new(store).outbox()
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e.message(), "cannot read the follow-up outbox");
            Vec::new()
        });
        let mut next = now + max_wait;
        for entry in due {
            if entry.next_attempt > now {
                next = next.min(entry.next_attempt);
                continue;
            }
            let delivered = deliver_one(&state, &entry).await;
            let mut entry = entry;
            let result = match delivered {
                Ok(()) => {
                    let e = entry.clone();
                    writing(&state, move |state| {
                        let book = Book::new(state.store.as_ref());
                        let batch = match book.get(Direction::Incoming, &e.id)? {
                            Some(mut f) => {
                                if f.state == State::Approved {
                                    f.state = State::Delivered;
                                }
                                Book::batch(&f, OutboxChange::Remove)
                            }
                            None => crate::store::Batch::new(),
                        };
                        // The released data leaves the outbox as the delivery is
                        // recorded, in one durable write.
                        state.commit(
                            batch,
                            "followup.delivered",
                            &serde_json::json!({
                                "followup": e.id,
                                "peer": e.country,
                                "state": e.state.name(),
                                "released_fields": e.core_data.keys().collect::<Vec<_>>(),
                            }),
                        )
                    })
                    .await
                    .map(|()| tracing::info!(followup = %entry.id, peer = %entry.country, "decision delivered"))
                }
                Err(why) => {
                    entry.attempts = entry.attempts.saturating_add(1);
                    entry.next_attempt = now + followup::backoff(entry.attempts, max_wait);
                    next = next.min(entry.next_attempt);
                    tracing::warn!(followup = %entry.id, peer = %entry.country, attempts = entry.attempts, error = %why, "decision not delivered; will retry");
                    let e = entry.clone();
                    blocking(&state, move |store| Book::new(store).reschedule(&e)).await
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e.message(), "outbox update failed");
            }
        }
        let wait = Duration::from_secs((next - now).clamp(1, max_wait.max(1)) as u64);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = state.outbox_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How often expired hit references (issued and received) and audit entries past
/// their retention are deleted.
const PRUNE_EVERY_SECONDS: i64 = 3600;

/// Deletes expired hit references (those this node issued, and those its searches
/// received with the subjects they remember) and audit entries older than
/// `audit.retention`; the pruning itself is an audit event.
async fn prune(state: &Arc<NodeState>, now: i64) {
    let store = state.store.clone();
    let ttl = state.config.matching.hit_ref_ttl.as_secs() as i64;
    let before = now.saturating_sub(state.config.audit.retention.as_secs() as i64);
    let pruned = tokio::task::spawn_blocking(move || {
        let issued = hitref::prune(store.as_ref(), now, ttl)?;
        let received = Book::new(store.as_ref()).prune_received_hits(now)?;
        let audit = AuditLog::prune(store.as_ref(), before)?;
        Ok::<_, StoreError>((issued, received, audit))
    })
    .await;
    match pruned {
        Ok(Ok((issued, received, audit))) => {
            if issued + received > 0 {
                tracing::info!(issued, received, "expired hit references deleted");
            }
            if audit > 0 {
                tracing::info!(entries = audit, "audit entries past retention deleted");
                state
                    .audit_durably(
                        "audit.pruned",
                        serde_json::json!({ "entries": audit, "before": before }),
                    )
                    .await;
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot delete expired data"),
        Err(_) => tracing::error!("the clean-up task failed"),
    }
}

/// Asks each owner node about this node's undecided requests: an owner resends any
/// decision not yet acknowledged at once, and a hold shows here. Runs at start-up and
/// then at most every `followup.retry_max`.
async fn poll_owners(state: &Arc<NodeState>) {
    let open = blocking(state, |store| {
        Ok(Book::new(store)
            .list(Direction::Outgoing)?
            .into_iter()
            .filter(|f| f.state.is_open())
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_default();
    let mut by_owner: BTreeMap<String, Vec<FollowUp>> = BTreeMap::new();
    for f in open {
        by_owner.entry(f.country.clone()).or_default().push(f);
    }
    for (owner, followups) in by_owner {
        let Some(peer) = owner.parse().ok().and_then(|c| state.peers.get(c)) else {
            continue;
        };
        let mut client = peer.client.clone();
        for chunk in followups.chunks(MAX_POLL_IDS) {
            let poll = pb::FollowUpPoll {
                country: state.config.country.to_string(),
                request_ids: chunk.iter().map(|f| f.id.clone()).collect(),
            };
            let answer = tokio::time::timeout(
                state.config.limits.peer_timeout(),
                client.poll_follow_ups(poll),
            )
            .await;
            let Ok(Ok(answer)) = answer else {
                tracing::debug!(peer = %owner, "follow-up poll got no answer");
                continue;
            };
            // Holds show here at once; decisions arrive with their reason through the
            // owner's outbox.
            let changed: Vec<(String, State)> = answer
                .into_inner()
                .receipts
                .iter()
                .filter_map(|r| Some((r.request_id.clone(), state_from_proto(r.state)?)))
                .filter(|(_, s)| s.is_open())
                .collect();
            if !changed.is_empty() {
                let result = blocking(state, move |store| {
                    let book = Book::new(store);
                    for (id, new) in changed {
                        if let Some(mut f) = book.get(Direction::Outgoing, &id)?
                            && f.state.is_open()
                            && f.state != new
                        {
                            f.state = new;
                            book.save(&f, OutboxChange::Keep)?;
                        }
                    }
                    Ok(())
                })
                .await;
                if let Err(e) = result {
                    tracing::error!(error = %e.message(), "cannot store polled follow-up states");
                }
            }
        }
    }
}

async fn deliver_one(state: &NodeState, entry: &Outgoing) -> Result<(), String> {
    let country: Country = entry
        .country
        .parse()
        .map_err(|_| "the outbox names no valid country".to_string())?;
    let peer = state
        .peers
        .get(country)
        .ok_or_else(|| format!("{country} is no longer a configured peer"))?;
    let mut client = peer.client.clone();
    let decision = pb::FollowUpDecision {
        request_id: entry.id.clone(),
        state: state_to_proto(entry.state) as i32,
        reason: entry.reason.clone(),
        core_data: entry.core_data.clone().into_iter().collect(),
        country: state.config.country.to_string(),
        decided_at: entry.decided_at,
    };
    let call = client.deliver_decision(decision);
    match tokio::time::timeout(state.config.limits.peer_timeout(), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("no answer before the deadline".into()),
    }
}

// ---- Requesting node ----

/// Remembers the hits of a search so that a follow-up can be filed for them.
pub async fn remember_hits(
    state: &Arc<NodeState>,
    hits: Vec<(String, ReceivedHit)>,
) -> Result<(), Status> {
    // Writes only new keys: no follow-up is read or changed, so this does not wait
    // for the follow-up lock that [`blocking`] takes (a search stays off it).
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || Book::new(store.as_ref()).remember_hits(&hits))
        .await
        .map_err(|_| Status::internal("a store task failed"))?
        .map_err(store_error)
}

/// An officer files a follow-up for a hit their node received.
pub async fn request(
    state: &Arc<NodeState>,
    officer: String,
    req: pb::RequestFollowUpRequest,
) -> Result<pb::FollowUp, Status> {
    let hit_ref: HitRef = req
        .hit_ref
        .parse()
        .map_err(|e: &str| Status::invalid_argument(format!("field `hit_ref`: {e}")))?;
    let hit_ref = hit_ref.to_string();
    let reason = convert::reason(req.reason.as_ref())?;
    let justification = text(
        "justification",
        &req.justification,
        followup::MAX_JUSTIFICATION_BYTES,
        true,
    )?;
    let offence_description = text(
        "offence_description",
        &req.offence_description,
        followup::MAX_TEXT_BYTES,
        true,
    )?;
    let key = hit_ref.clone();
    let hit = blocking(state, move |store| Book::new(store).received_hit(&key))
        .await?
        .ok_or_else(|| {
            Status::not_found("field `hit_ref`: no search of this node received this hit reference")
        })?;
    let now = now();
    if now >= hit.expires_at {
        return Err(Status::failed_precondition(
            "field `hit_ref`: the hit reference has expired; search again",
        ));
    }
    let owner: Country = hit
        .country
        .parse()
        .map_err(|_| Status::internal("a stored hit names no valid country"))?;
    let peer = state.peers.get(owner).ok_or_else(|| {
        Status::failed_precondition(format!("{owner} is no longer a configured peer"))
    })?;
    let id = super::random_id()?;
    let filing = pb::FollowUpFiling {
        request_id: id.clone(),
        country: state.config.country.to_string(),
        hit_ref: hit_ref.clone(),
        justification: justification.clone(),
        offence_description: offence_description.clone(),
        offence_category: String::new(),
        reason: Some(convert::reason_to_proto(&reason)),
        subject: Some(convert::matched_identity_to_proto(&hit.subject)),
        officer_id: officer.clone(),
    };
    let mut client = peer.client.clone();
    let answer = tokio::time::timeout(
        state.config.limits.peer_timeout(),
        client.file_follow_up(filing),
    )
    .await
    .map_err(|_| {
        Status::unavailable(format!(
            "{owner} did not answer in time; the request may not be filed, try again"
        ))
    })?
    .map_err(|s| {
        let message = format!("{owner} refused the follow-up: {}", s.message());
        match s.code() {
            tonic::Code::Unavailable => Status::unavailable(format!(
                "{owner} is unreachable; nothing was filed, try again"
            )),
            code => Status::new(code, message),
        }
    })?
    .into_inner();
    let f = FollowUp {
        id,
        direction: Direction::Outgoing,
        country: owner.to_string(),
        hit_ref,
        state: state_from_proto(answer.state).unwrap_or(State::Pending),
        officer_id: officer,
        reason,
        justification,
        offence_description,
        subject: hit.subject,
        filed_at: now,
        deadline_at: answer.deadline_at,
        expires_at: answer.expires_at,
        steps: Vec::new(),
        decision_reason: String::new(),
        core_data: BTreeMap::new(),
        record: None,
        quality: Some(hit.quality),
    };
    let event = serde_json::json!({
        "followup": f.id,
        "peer": owner.as_str(),
        "officer": f.officer_id,
        "reason": convert::reason_json(&f.reason),
    });
    let batch = Book::batch(&f, OutboxChange::Keep);
    writing(state, move |state| {
        state.commit(batch, "followup.requested", &event)
    })
    .await?;
    tracing::info!(followup = %f.id, peer = %owner, "follow-up requested");
    Ok(view(&f, None, now))
}

/// The owner node delivers a decision on one of this node's requests.
pub async fn deliver(
    state: &Arc<NodeState>,
    peer: Country,
    decision: pb::FollowUpDecision,
) -> Result<(), Status> {
    check_id("request_id", &decision.request_id)?;
    let new_state = match state_from_proto(decision.state) {
        Some(s @ (State::Approved | State::Refused | State::Expired)) => s,
        _ => {
            return Err(Status::invalid_argument(
                "field `state` must be APPROVED, REFUSED or EXPIRED",
            ));
        }
    };
    if new_state != State::Approved && !decision.core_data.is_empty() {
        return Err(Status::invalid_argument(
            "field `core_data`: only an approval releases data",
        ));
    }
    let reason = text("reason", &decision.reason, followup::MAX_TEXT_BYTES, false)?;
    let max_fields = crate::domain::identity::limits::COLUMNS + 16;
    if decision.core_data.len() > max_fields {
        return Err(Status::invalid_argument(format!(
            "field `core_data`: more than {max_fields} fields"
        )));
    }
    for (k, v) in &decision.core_data {
        crate::domain::identity::check_column_name(k)
            .map_err(|p| Status::invalid_argument(format!("field `core_data`: a key {p}")))?;
        text(
            "core_data value",
            v,
            crate::domain::identity::limits::PAYLOAD_VALUE_BYTES,
            false,
        )?;
    }
    let id = decision.request_id.clone();
    let core_data: BTreeMap<String, String> = decision.core_data.into_iter().collect();
    let updated = writing(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let Some(mut f) = book.get(Direction::Outgoing, &id)? else {
            return Ok(None);
        };
        if f.country != peer.as_str() {
            return Ok(None);
        }
        // The owner's decision stands over what this node concluded alone: a
        // withdrawal it had not yet seen, or an expiry while it was unreachable
        // (the owner's own expiry news changes nothing then).
        let concluded_alone = f.state == State::Withdrawn
            || (f.state == State::Expired && new_state != State::Expired);
        // A decision sent again (its acknowledgement was lost) is recorded again.
        let batch = if f.state.is_open() || concluded_alone {
            f.state = match new_state {
                State::Approved => State::Delivered,
                other => other,
            };
            f.decision_reason = reason;
            f.core_data = core_data;
            f.steps.clear();
            Book::batch(&f, OutboxChange::Keep)
        } else {
            crate::store::Batch::new()
        };
        state.commit(
            batch,
            "followup.decision_received",
            &serde_json::json!({
                "followup": f.id,
                "peer": peer.as_str(),
                "state": f.state.name(),
                "released_fields": f.core_data.keys().collect::<Vec<_>>(),
            }),
        )?;
        Ok(Some(f))
    })
    .await?
    .ok_or_else(|| {
        Status::not_found("field `request_id`: this node filed no such follow-up with you")
    })?;
    tracing::info!(followup = %updated.id, peer = %peer, state = updated.state.name(), "decision received");
    Ok(())
}

/// An officer withdraws one of their undecided requests; the owner is told first.
pub async fn withdraw_outgoing(
    state: &Arc<NodeState>,
    officer: String,
    id: String,
) -> Result<pb::FollowUp, Status> {
    check_id("id", &id)?;
    let key = id.clone();
    let f = blocking(state, move |store| {
        Book::new(store).get(Direction::Outgoing, &key)
    })
    .await?
    .filter(|f| f.officer_id == officer)
    .ok_or_else(|| Status::not_found(format!("you filed no follow-up with id {id}")))?;
    if !f.state.is_open() {
        return Err(Status::failed_precondition(format!(
            "follow-up {id} is {} and can no longer be withdrawn",
            f.state.name()
        )));
    }
    let owner: Country = f
        .country
        .parse()
        .map_err(|_| Status::internal("a stored follow-up names no valid country"))?;
    let peer = state.peers.get(owner).ok_or_else(|| {
        Status::failed_precondition(format!("{owner} is no longer a configured peer"))
    })?;
    let mut client = peer.client.clone();
    let answer = tokio::time::timeout(
        state.config.limits.peer_timeout(),
        client.withdraw_follow_up(pb::FollowUpWithdrawal {
            request_id: id.clone(),
            country: state.config.country.to_string(),
        }),
    )
    .await
    .map_err(|_| Status::unavailable(format!("{owner} did not answer in time; try again")))?
    .map_err(|s| Status::new(s.code(), format!("{owner}: {}", s.message())))?
    .into_inner();
    // The owner's answer is the truth: withdrawn, or decided in the meantime (then
    // the decision itself arrives, or has arrived, through the owner's outbox).
    let answered = state_from_proto(answer.state);
    let f = writing(state, move |state| {
        let book = Book::new(state.store.as_ref());
        let (mut f, stored) = match book.get(Direction::Outgoing, &id)? {
            Some(stored) => (stored, true),
            None => (f, false),
        };
        let batch = if stored && answered == Some(State::Withdrawn) && f.state.is_open() {
            f.state = State::Withdrawn;
            Book::batch(&f, OutboxChange::Keep)
        } else {
            crate::store::Batch::new()
        };
        state.commit(
            batch,
            "followup.withdrawn",
            &serde_json::json!({ "followup": f.id, "peer": owner.as_str(), "state": f.state.name() }),
        )?;
        Ok(f)
    })
    .await?;
    tracing::info!(followup = %f.id, peer = %owner, state = f.state.name(), "follow-up withdrawal");
    Ok(view(&f, None, now()))
}

// ---- Both ----

/// Lists follow-ups: an officer's own outgoing ones, or (reviewer) incoming ones.
pub async fn list(
    state: &Arc<NodeState>,
    user: String,
    role: Role,
    req: pb::ListFollowUpsRequest,
) -> Result<pb::ListFollowUpsResponse, Status> {
    let direction = match (role, req.incoming) {
        (Role::Reviewer, true) => Direction::Incoming,
        (Role::Officer, false) => Direction::Outgoing,
        (Role::Reviewer, false) => {
            return Err(Status::permission_denied(
                "reviewers list incoming follow-ups (--incoming); only officers file requests",
            ));
        }
        _ => {
            return Err(Status::permission_denied(format!(
                "the {role} role cannot list incoming follow-ups"
            )));
        }
    };
    let wanted =
        match req.state {
            0 => None,
            s => Some(state_from_proto(s).ok_or_else(|| {
                Status::invalid_argument("field `state` is not a follow-up state")
            })?),
        };
    let now = now();
    let all = blocking(state, move |store| Book::new(store).list(direction)).await?;
    let limit = match req.limit {
        0 => DEFAULT_LIST,
        n if n as usize > MAX_LIST => {
            return Err(Status::invalid_argument(format!(
                "field `limit`: at most {MAX_LIST}"
            )));
        }
        n => n as usize,
    };
    let matching: Vec<&FollowUp> = all
        .iter()
        .filter(|f| direction == Direction::Incoming || f.officer_id == user)
        .filter(|f| wanted.is_none_or(|w| f.state == w))
        .filter(|f| !req.overdue || f.overdue(now))
        .collect();
    Ok(pb::ListFollowUpsResponse {
        total: matching.len() as u32,
        follow_ups: matching
            .into_iter()
            .take(limit)
            .map(|f| view(f, None, now))
            .collect(),
    })
}

/// Shows one follow-up: an officer's own, or (reviewer) an incoming one next to the
/// local record it concerns.
pub async fn show(
    state: &Arc<NodeState>,
    user: String,
    role: Role,
    id: String,
) -> Result<pb::FollowUp, Status> {
    check_id("id", &id)?;
    let index = state.index.active();
    let key = id.clone();
    let found = blocking(state, move |store| {
        let book = Book::new(store);
        Ok(match role {
            Role::Reviewer => match book.get(Direction::Incoming, &key)? {
                Some(f) => {
                    let record = match &f.record {
                        Some(r) => index
                            .record(r)
                            .map_err(|e| StoreError::Engine(e.to_string()))?,
                        None => None,
                    };
                    Some((f, record))
                }
                None => None,
            },
            _ => book
                .get(Direction::Outgoing, &key)?
                .filter(|f| f.officer_id == user)
                .map(|f| (f, None)),
        })
    })
    .await?;
    let (f, record) =
        found.ok_or_else(|| Status::not_found(format!("no follow-up {id} of yours")))?;
    Ok(view(&f, record.as_ref(), now()))
}
