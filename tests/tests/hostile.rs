//! Hostile connections over real nodes (DESIGN section 9): a stranger without a
//! certificate of the listener's CA holds nothing that users and peers need, and one
//! connection cannot open more HTTP/2 streams than the node allows. The long
//! campaign (thousands of connections) is documented in docs/reliability.md; this is
//! its short run.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use adep_node::{domain::principals::Role, grpc::tls};
use adep_proto::v1::{Identity as ProtoIdentity, SearchRequest, StatusRequest};
use adep_tests::{TestNetwork, reason, record};
use rustls_pki_types::ServerName;
use tokio::{
    io::AsyncReadExt as _,
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Connects from `from` (another loopback address than the users') to `to` and
/// completes a TLS handshake presenting `cert`, or none.
async fn tls_from(
    from: &str,
    to: SocketAddr,
    ca: &std::path::Path,
    cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    alpn_h2: bool,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("address"))?;
    let tcp = socket.connect(to).await?;
    let identity = cert.map(|(c, k)| {
        (
            tls::load_certs(&c).expect("cert"),
            tls::load_key(&k).expect("key"),
        )
    });
    let config = tls::client_config(tls::root_store(ca).expect("roots"), identity).expect("tls");
    let mut config = Arc::unwrap_or_clone(config);
    if alpn_h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = connector.connect(name, tcp).await?;
    if alpn_h2 {
        // The caller speaks HTTP/2 on it: nothing of the server's preface is read here.
        return Ok(stream);
    }
    // TLS 1.3: the server's refusal (or closing) shows on the first read.
    let mut probe = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe)).await {
        Ok(Ok(0)) => Err(std::io::ErrorKind::ConnectionReset.into()),
        Ok(Err(e)) => Err(e),
        _ => Ok(stream),
    }
}

/// Whether the server has closed `stream`, waiting at most `within`.
async fn closed_within(stream: &mut TlsStream<TcpStream>, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_without_a_certificate_lock_nobody_out() {
    let mut net = TestNetwork::new(&["FR", "DE", "ES"]).await;
    net.edit_config("DE", |c| {
        c.limits.max_connections = 16;
        c.limits.max_unverified_connections = 32;
        c.limits.max_unverified_per_address = 4;
        c.limits.unverified_lifetime_ms = 1_500;
    });
    net.start_all().await;
    net.import(
        "DE",
        vec![record("de-1", "Müller", "Hans", "1970-05-12")],
        adep_proto::v1::ImportMode::Import,
        10,
    )
    .await
    .expect("import");

    // A stranger on 127.0.0.2 opens far more connections than max_connections, on
    // both listeners, completes each handshake without a certificate and goes idle.
    let dir = net.dir().to_owned();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        for (addr, ca) in [
            (
                net.national_addr("DE"),
                dir.join("DE").join("national-ca.pem"),
            ),
            (net.federation_addr("DE"), dir.join("network-ca.pem")),
        ] {
            match tls_from("127.0.0.2", addr, &ca, None, false).await {
                Ok(stream) => held.push(stream),
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        held.len() <= 2 * 4,
        "{} connections held: more than max_unverified_per_address per listener",
        held.len()
    );
    assert!(refused >= 80 - 8, "{refused} refused");

    // Meanwhile an officer in FR searches (FR → DE over the federation listener) and
    // DE's operator asks for its status on the national listener.
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![ProtoIdentity {
                family_name: "Müller".into(),
                given_names: "Hans".into(),
                date_of_birth: "1970-05-12".into(),
                ..ProtoIdentity::default()
            }],
        })
        .await
        .expect("the search is served")
        .into_inner();
    assert!(answer.hits.iter().any(|h| h.country == "DE"), "{answer:?}");
    net.national("DE", Role::Operator)
        .status(StatusRequest::default())
        .await
        .expect("the operator is served");

    // The stranger's connections are closed at the end of their unverified lifetime.
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "an unverified connection outlived its lifetime"
        );
    }
    // The refusals name the address that holds the connections.
    let events = net.audit_entries_of("DE", "connection.refused").await;
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("limits.max_unverified_per_address"))
            && e["holders"][0]["remote"] == "127.0.0.2"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_filling_the_whole_unverified_pool_locks_nobody_out() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    // One stranger may fill the pool here; with the defaults it takes 32 addresses.
    net.edit_config("DE", |c| {
        c.limits.max_unverified_connections = 6;
        c.limits.max_unverified_per_address = 6;
        c.limits.unverified_lifetime_ms = 120_000;
    });
    net.start_all().await;
    net.import(
        "DE",
        vec![record("de-1", "Müller", "Hans", "1970-05-12")],
        adep_proto::v1::ImportMode::Import,
        10,
    )
    .await
    .expect("import");
    let dir = net.dir().to_owned();
    let listeners = [
        (
            net.national_addr("DE"),
            dir.join("DE").join("national-ca.pem"),
        ),
        (net.federation_addr("DE"), dir.join("network-ca.pem")),
    ];
    let mut held = Vec::new();
    for (addr, ca) in &listeners {
        for _ in 0..6 {
            held.push(
                tls_from("127.0.0.2", *addr, ca, None, false)
                    .await
                    .expect("a slot while the pool has room"),
            );
        }
    }
    // Both pools are full and will stay so for two minutes, unless made room in.
    net.national("DE", Role::Operator)
        .status(StatusRequest::default())
        .await
        .expect("the operator is served");
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![ProtoIdentity {
                family_name: "Müller".into(),
                given_names: "Hans".into(),
                date_of_birth: "1970-05-12".into(),
                ..ProtoIdentity::default()
            }],
        })
        .await
        .expect("the search is served")
        .into_inner();
    assert!(answer.hits.iter().any(|h| h.country == "DE"), "{answer:?}");
    // A peer's new connection, whether or not FR's node reused one above.
    let fr = dir.join("FR");
    tls_from(
        "127.0.0.1",
        net.federation_addr("DE"),
        &dir.join("network-ca.pem"),
        Some((fr.join("node.pem"), fr.join("node.key.pem"))),
        false,
    )
    .await
    .expect("a peer connects");
    // Room was made by closing the stranger's oldest connection on each listener.
    assert!(closed_within(&mut held[0], Duration::from_secs(5)).await);
    assert!(closed_within(&mut held[6], Duration::from_secs(5)).await);
    assert!(!closed_within(&mut held[5], Duration::from_millis(200)).await);
    let events = net.audit_entries_of("DE", "connection.refused").await;
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("to admit a newer connection"))
            && e["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.2:"))
            && e["holders"][0]["remote"] == "127.0.0.2"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_gets_no_more_streams_than_the_limit() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.edit_config("DE", |c| c.limits.max_streams_per_connection = 8);
    net.start_all().await;
    let d = net.dir().join("FR");
    let stream = tls_from(
        "127.0.0.1",
        net.federation_addr("DE"),
        &net.dir().join("network-ca.pem"),
        Some((d.join("node.pem"), d.join("node.key.pem"))),
        true,
    )
    .await
    .expect("FR's node connects");
    let (client, connection) = h2::client::handshake(stream).await.expect("HTTP/2");
    let mut connection = Box::pin(connection);
    let mut ping = connection.as_mut().ping_pong().expect("ping");
    // Drive the connection until the node answers a ping: its SETTINGS come first.
    tokio::select! {
        ended = connection.as_mut() => panic!("the connection ended: {ended:?}"),
        pong = ping.ping(h2::Ping::opaque()) => {
            pong.expect("pong");
        }
    }
    // The node allows this connection eight streams at once, as configured; an
    // HTTP/2 peer opening more has them refused (REFUSED_STREAM).
    assert_eq!(
        connection.as_ref().get_ref().max_concurrent_send_streams(),
        8
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_and_verified_connections_are_capped() {
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.edit_config("DE", |c| {
        c.limits.handshake_timeout_ms = 300;
        c.limits.max_connections = 2;
    });
    net.start_all().await;

    // A client that connects and never says hello is cut at the handshake deadline.
    let mut silent = TcpStream::connect(net.federation_addr("DE"))
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let cut = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(cut, Ok(Ok(0) | Err(_))), "{cut:?}");
    let events = net.audit_entries_of("DE", "connection.refused").await;
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("limits.handshake_timeout"))),
        "{events:?}"
    );

    // Verified connections are capped at max_connections; the next is refused.
    let d = net.dir().join("FR");
    let ca = net.dir().join("network-ca.pem");
    let cert = || Some((d.join("node.pem"), d.join("node.key.pem")));
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tls_from("127.0.0.1", net.federation_addr("DE"), &ca, cert(), false)
                .await
                .expect("within max_connections"),
        );
    }
    assert!(
        tls_from("127.0.0.1", net.federation_addr("DE"), &ca, cert(), false)
            .await
            .is_err(),
        "a third verified connection"
    );
    let events = net.audit_entries_of("DE", "connection.refused").await;
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("limits.max_connections"))),
        "{events:?}"
    );
    drop(held);
}

/// The node's resident memory (this process: the test runs its nodes in-process).
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The long campaign (docs/reliability.md): `ADEP_HOSTILE_CONNECTIONS` idle
/// certificate-less connections from one address and, from a peer, connections each
/// holding as many open HTTP/2 streams as the node allows, while an officer's search
/// and a peer's Match are served. Prints what it held and the memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long campaign: ADEP_HOSTILE_CONNECTIONS=2000 cargo test -p adep-tests --release --test hostile -- --ignored --nocapture"]
async fn campaign() {
    let attempts: usize = std::env::var("ADEP_HOSTILE_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let mut net = TestNetwork::new(&["FR", "DE"]).await;
    net.edit_config("DE", |c| c.limits.unverified_lifetime_ms = 600_000);
    net.start_all().await;
    net.import(
        "DE",
        vec![record("de-1", "Müller", "Hans", "1970-05-12")],
        adep_proto::v1::ImportMode::Import,
        10,
    )
    .await
    .expect("import");
    let before = resident_mib();

    // Idle certificate-less connections from 127.0.0.2, kept open for the campaign.
    let ca = net.dir().join("network-ca.pem");
    let mut idle = Vec::new();
    let mut refused = 0usize;
    for _ in 0..attempts {
        match tls_from("127.0.0.2", net.federation_addr("DE"), &ca, None, false).await {
            Ok(s) => idle.push(s),
            Err(_) => refused += 1,
        }
    }

    // A peer's connections, each with as many open streams as the node allows.
    let d = net.dir().join("FR");
    let limit = 100usize;
    let mut streams = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let stream = tls_from(
            "127.0.0.1",
            net.federation_addr("DE"),
            &ca,
            Some((d.join("node.pem"), d.join("node.key.pem"))),
            true,
        )
        .await
        .expect("FR connects");
        let (client, connection) = h2::client::handshake(stream).await.expect("HTTP/2");
        tokio::spawn(connection);
        for _ in 0..limit {
            let mut ready = client.clone().ready().await.expect("ready");
            let request = http::Request::post("https://localhost/adep.v1.Federation/Hello")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            streams.push(ready.send_request(request, false).expect("a stream"));
        }
        clients.push(client);
    }

    // Meanwhile an officer searches (FR → DE) and FR's node calls Match on DE.
    let answer = net
        .national("FR", Role::Officer)
        .search(SearchRequest {
            reason: Some(reason()),
            subjects: vec![ProtoIdentity {
                family_name: "Müller".into(),
                given_names: "Hans".into(),
                date_of_birth: "1970-05-12".into(),
                ..ProtoIdentity::default()
            }],
        })
        .await
        .expect("the search is served")
        .into_inner();
    assert!(answer.hits.iter().any(|h| h.country == "DE"), "{answer:?}");
    let during = resident_mib();
    println!(
        "campaign: {} idle certificate-less connections attempted, {} held, {refused} refused; \
         {} open streams on {} peer connections; the officer's search served with DE's hit; \
         resident memory {before:.0} MiB before, {during:.0} MiB during",
        attempts,
        idle.len(),
        streams.len(),
        clients.len()
    );
    assert!(idle.len() <= 8, "{} held", idle.len());
}
