//! Every call a listener serves is counted and timed ([`crate::metrics`]), and refused
//! connections and calls are audit events (DESIGN section 8).
//!
//! A call is refused when its answer is `UNAUTHENTICATED` or `PERMISSION_DENIED`,
//! whichever check gave it: the listener's admission rules, a role, a peer claiming
//! another country, a follow-up that is not the caller's. [`ObserveLayer`] sits
//! outside every service of a listener and reads the status of each answer, so no
//! handler has to remember to record its refusals. A connection is refused when its
//! TLS handshake fails or times out, or when the listener is at `max_connections`.
//! The events are capped per address and per node ([`crate::app::refusals`]).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::{
    app::{
        NodeState,
        refusals::{self, Refused},
    },
    domain::principals::CertIdentity,
    grpc::auth::{Authn, Listener},
    grpc::tls::ConnInfo,
    metrics,
};

/// Longest refusal message kept in an event.
const MESSAGE_CHARS: usize = 200;

/// Who the connection's certificate says the caller is, for a refusal event: the
/// identity URI when the certificate verified, otherwise why it did not count.
fn caller_audit(authn: &Authn) -> String {
    match authn {
        Authn::Verified(id) => id.uri(),
        Authn::Anonymous => "no certificate".into(),
        Authn::Untrusted(_) => "untrusted certificate".into(),
        Authn::Revoked(Some(id)) => format!("{} (revoked certificate)", id.uri()),
        Authn::Revoked(None) => "revoked certificate".into(),
        Authn::NoIdentity(_) => "certificate without an adep identity".into(),
    }
}

/// The metrics label of a caller: a peer's country, a user's role, or why neither.
fn caller_label(state: &NodeState, authn: &Authn) -> String {
    match authn {
        Authn::Verified(CertIdentity::Node(cc)) => cc.to_string(),
        Authn::Verified(CertIdentity::User(cc, id)) if *cc == state.config.country => state
            .config
            .users
            .iter()
            .find(|u| u.id == *id)
            .map_or_else(|| "unknown_user".to_owned(), |u| u.role.to_string()),
        Authn::Verified(CertIdentity::User(..)) => "foreign_user".to_owned(),
        Authn::Anonymous => "none".to_owned(),
        Authn::Untrusted(_) | Authn::Revoked(_) | Authn::NoIdentity(_) => "untrusted".to_owned(),
    }
}

/// The name of a gRPC code, as a label value.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC status code of an answer given in its headers (a refusal is always a
/// trailers-only answer, so the code is in the headers).
fn header_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(code))
}

/// The status message of an answer, decoded and cut to [`MESSAGE_CHARS`].
fn header_message(headers: &http::HeaderMap) -> String {
    let raw = headers
        .get("grpc-message")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let decoded = percent_decode(raw);
    decoded.chars().take(MESSAGE_CHARS).collect()
}

/// Decodes gRPC's percent-encoding of status messages.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request that does not decode, or is over the size limit, is the caller's fault:
/// tonic answers it INTERNAL and OUT_OF_RANGE, which alerting would read as a server
/// fault; the node answers INVALID_ARGUMENT saying what is wrong, or naming the limit.
fn caller_fault(headers: &mut http::HeaderMap, rpc: &str, max_bytes: usize) {
    let Some(code) = header_code(headers) else {
        return;
    };
    let message = header_message(headers);
    let rewritten = match code {
        tonic::Code::Internal
            if message.starts_with("failed to decode Protobuf message")
                || message.starts_with("protocol error: received message with invalid") =>
        {
            format!("the request is not a well-formed {rpc} message")
        }
        tonic::Code::OutOfRange
            if message.starts_with("Error, decoded message length too large") =>
        {
            format!("the request is larger than limits.max_message_bytes ({max_bytes} bytes)")
        }
        _ => return,
    };
    let Ok(value) = http::HeaderValue::from_str(&rewritten) else {
        return;
    };
    headers.insert(
        "grpc-status",
        http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
    );
    headers.insert("grpc-message", value);
}

/// Counts and times every call of a listener and records the refused ones (see the
/// module docs).
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    state: Arc<NodeState>,
    listener: Listener,
}

impl ObserveLayer {
    /// The layer for `listener`.
    pub fn new(state: Arc<NodeState>, listener: Listener) -> ObserveLayer {
        ObserveLayer { state, listener }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ObserveLayer`] wraps around a listener's routes.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        if path.starts_with("/grpc.health.v1.Health/") {
            req.extensions_mut().insert(super::HealthCheck);
        }
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let started = std::time::Instant::now();
        let answer = self.inner.call(req);
        let layer = self.layer.clone();
        Box::pin(async move {
            let mut response = answer.await?;
            let rpc = metrics::rpc_name(&path);
            caller_fault(
                response.headers_mut(),
                rpc,
                layer.state.config.limits.max_message_bytes,
            );
            // A refusal or an early error is a trailers-only answer with the code in
            // its headers; an answer that started normally counts as OK.
            let code = header_code(response.headers()).unwrap_or(tonic::Code::Ok);
            let m = &layer.state.metrics;
            let listener = layer.listener.as_str();
            let caller = conn.as_ref().map_or_else(
                || "none".to_owned(),
                |c| caller_label(&layer.state, &c.authn),
            );
            m.calls
                .get_or_create(&metrics::CallLabels {
                    listener,
                    rpc,
                    caller,
                    code: code_name(code),
                })
                .inc();
            m.call_seconds
                .get_or_create(&metrics::RpcLabels { listener, rpc })
                .observe(started.elapsed().as_secs_f64());
            if let (tonic::Code::Unauthenticated | tonic::Code::PermissionDenied, Some(conn)) =
                (code, conn)
            {
                // Named as the metrics name them; the path comes from the network and
                // is kept only when it names no RPC of this node, cut like the message.
                let mut fields = serde_json::Map::new();
                fields.insert("rpc".into(), rpc.into());
                if rpc == "other" {
                    let path: String = path.chars().take(MESSAGE_CHARS).collect();
                    fields.insert("path".into(), path.into());
                }
                fields.insert("caller".into(), caller_audit(&conn.authn).into());
                fields.insert("code".into(), code_name(code).into());
                fields.insert("message".into(), header_message(response.headers()).into());
                refusals::record(
                    &layer.state,
                    Refused {
                        kind: "call.refused",
                        listener: layer.listener.as_str(),
                        remote: conn.remote,
                        fields,
                    },
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_status_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", "7".parse().unwrap());
        h.insert(
            "grpc-message",
            "the%20officer%20role%20cannot%20make%20this%20call"
                .parse()
                .unwrap(),
        );
        assert_eq!(header_code(&h), Some(tonic::Code::PermissionDenied));
        assert_eq!(header_message(&h), "the officer role cannot make this call");
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%C3%BC"), "ü");
        h.insert("grpc-message", "x".repeat(500).parse().unwrap());
        assert_eq!(header_message(&h).len(), MESSAGE_CHARS);
    }
}
