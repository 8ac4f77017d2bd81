//! The QUIC peer transport over loopback: calls between nodes of one cluster CA, refusal
//! of foreign or missing certificates, garbage on the port, frame limits, deadlines,
//! protocol versions, and reconnection after a peer restarts or crashes.
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_node::cluster::cert::{self, CertifiedPem};
use tollgate_node::cluster::transport::quic::interpret_reply;
use tollgate_node::cluster::transport::{
    frame, NodeIdentity, PeerHandler, PeerRequest, PeerResponse, PeerTransport, QuicConfig,
    QuicTransport, RequestContext, TransportError,
};
use tollgate_proto::peer::{Envelope, PeerError, ProtocolRange, KIND_ERROR, PROTOCOL_VERSION};

/// Echoes its body back.
const KIND_ECHO: u16 = 1;
/// Never answers.
const KIND_HANG: u16 = 2;

/// Deadline of calls that are expected to succeed: generous, loopback answers in ms.
const OK_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct TestHandler {
    calls: AtomicUsize,
}

impl PeerHandler for TestHandler {
    fn handle(
        &self,
        _context: RequestContext,
        request: PeerRequest,
    ) -> impl Future<Output = Result<PeerResponse, PeerError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match request.kind {
                KIND_ECHO => Ok(PeerResponse {
                    kind: KIND_ECHO,
                    body: request.body,
                }),
                KIND_HANG => std::future::pending().await,
                kind => Err(PeerError::UnknownKind { kind }),
            }
        }
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn identity(ca: &CertifiedPem, name: &str) -> NodeIdentity {
    let node = cert::issue_node(ca, name, &[], now()).unwrap();
    NodeIdentity::from_pem(&ca.cert_pem, &node.cert_pem, &node.key_pem).unwrap()
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

struct Node {
    transport: QuicTransport,
    handler: Arc<TestHandler>,
    addr: SocketAddr,
}

fn node_with(config: QuicConfig, identity: &NodeIdentity) -> Node {
    let handler = Arc::new(TestHandler::default());
    let transport = QuicTransport::bind(config, identity, handler.clone()).unwrap();
    let addr = transport.local_addr().unwrap();
    Node {
        transport,
        handler,
        addr,
    }
}

fn node(identity: &NodeIdentity) -> Node {
    node_with(QuicConfig::new(loopback()), identity)
}

fn echo(body: &[u8]) -> PeerRequest {
    PeerRequest {
        kind: KIND_ECHO,
        body: body.to_vec(),
    }
}

async fn assert_echo(from: &QuicTransport, to: SocketAddr, body: &[u8]) {
    let response = from.call(to, echo(body), OK_DEADLINE).await.unwrap();
    assert_eq!(
        response,
        PeerResponse {
            kind: KIND_ECHO,
            body: body.to_vec()
        }
    );
}

#[tokio::test]
async fn nodes_of_one_ca_call_each_other() {
    let ca = cert::generate_ca(now()).unwrap();
    let (a, b) = (node(&identity(&ca, "a")), node(&identity(&ca, "b")));
    assert_echo(&a.transport, b.addr, b"ping").await;
    assert_echo(&b.transport, a.addr, b"pong").await;
    assert_echo(&a.transport, b.addr, b"").await;
    // Many calls at once share one connection, each on its own stream.
    let calls = (0..50u32).map(|i| {
        let body = i.to_be_bytes();
        let transport = &a.transport;
        async move { assert_echo(transport, b.addr, &body).await }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 52);
    // A handler's error reaches the caller typed.
    let unknown = a
        .transport
        .call(
            b.addr,
            PeerRequest {
                kind: 77,
                body: vec![],
            },
            OK_DEADLINE,
        )
        .await;
    assert!(
        matches!(
            unknown,
            Err(TransportError::Remote {
                error: PeerError::UnknownKind { kind: 77 },
                ..
            })
        ),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused_both_ways() {
    let ca = cert::generate_ca(now()).unwrap();
    let other_ca = cert::generate_ca(now()).unwrap();
    let member = node(&identity(&ca, "member"));
    let stranger = node(&identity(&other_ca, "stranger"));
    // A stranger calling a member: the member refuses the client certificate.
    let result = stranger
        .transport
        .call(member.addr, echo(b"let me in"), OK_DEADLINE)
        .await;
    assert!(
        matches!(
            result,
            Err(TransportError::Connect { .. } | TransportError::Stream { .. })
        ),
        "{result:?}"
    );
    // A member calling a stranger: the member refuses the server certificate.
    let result = member
        .transport
        .call(stranger.addr, echo(b"hello?"), OK_DEADLINE)
        .await;
    assert!(
        matches!(result, Err(TransportError::Connect { .. })),
        "{result:?}"
    );
    assert_eq!(member.handler.calls.load(Ordering::SeqCst), 0);
    assert_eq!(stranger.handler.calls.load(Ordering::SeqCst), 0);
}

/// A quinn client that trusts the cluster CA but presents no certificate.
fn client_without_certificate(ca: &CertifiedPem) -> quinn::Endpoint {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![tollgate_node::cluster::transport::tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = cert::generate_ca(now()).unwrap();
    let server = node(&identity(&ca, "server"));
    let client = client_without_certificate(&ca);
    let attempt = async {
        let connection = client
            .connect(server.addr, "127.0.0.1")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let request = Envelope {
            protocol_version: PROTOCOL_VERSION,
            kind: KIND_ECHO,
            body: b"anonymous".to_vec(),
        };
        let payload = tollgate_raft::codec::encode(&request).unwrap();
        frame::write_frame(&mut send, &payload, frame::MAX_FRAME_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        frame::read_frame(&mut recv, frame::MAX_FRAME_BYTES)
            .await
            .map_err(|e| e.to_string())
    };
    let result = tokio::time::timeout(OK_DEADLINE, attempt)
        .await
        .expect("refusal is prompt, not a timeout");
    assert!(result.is_err(), "{result:?}");
    assert_eq!(server.handler.calls.load(Ordering::SeqCst), 0);
}

/// Deterministic bytes for the garbage test (xorshift).
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_datagrams_change_nothing() {
    let ca = cert::generate_ca(now()).unwrap();
    let (a, b) = (node(&identity(&ca, "a")), node(&identity(&ca, "b")));
    assert_echo(&a.transport, b.addr, b"before").await;
    let socket = UdpSocket::bind(loopback()).unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..300usize {
        let mut datagram = garbage(&mut seed, [1, 20, 64, 300, 1200, 1500][i % 6]);
        // Some look like QUIC: a long-header Initial of version 1, a short header, an
        // unknown version (which asks for version negotiation).
        match i % 4 {
            0 if datagram.len() > 5 => {
                datagram[0] = 0xC3;
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            1 => datagram[0] = 0x40 | (datagram[0] & 0x3F),
            2 if datagram.len() > 5 => {
                datagram[0] = 0xC0;
                datagram[1..5].copy_from_slice(&0x1A2A_3A4Au32.to_be_bytes());
            }
            _ => {}
        }
        socket.send_to(&datagram, b.addr).unwrap();
    }
    // The existing connection and a new one both still work.
    assert_echo(&a.transport, b.addr, b"after").await;
    let c = node(&identity(&ca, "c"));
    assert_echo(&c.transport, b.addr, b"newcomer").await;
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 2 + 1);
}

#[tokio::test]
async fn oversized_frames_are_refused_on_both_sides() {
    let ca = cert::generate_ca(now()).unwrap();
    let mut small = QuicConfig::new(loopback());
    small.max_frame_bytes = 1024;
    let server = node_with(small.clone(), &identity(&ca, "server"));
    let client = node(&identity(&ca, "client"));
    // The receiver refuses a frame over its limit with a typed answer, unread; one
    // larger than the stream window too: the refusal still arrives, not a timeout.
    for size in [4096, 8 << 20] {
        let result = client
            .transport
            .call(server.addr, echo(&vec![0u8; size]), OK_DEADLINE)
            .await;
        assert!(
            matches!(
                result,
                Err(TransportError::Remote {
                    error: PeerError::FrameTooLarge { max: 1024, .. },
                    ..
                })
            ),
            "{size} bytes: {result:?}"
        );
    }
    // The sender refuses one over its own limit before sending anything.
    let small_client = node_with(small, &identity(&ca, "small-client"));
    let result = small_client
        .transport
        .call(server.addr, echo(&[0u8; 4096]), OK_DEADLINE)
        .await;
    assert!(
        matches!(result, Err(TransportError::FrameTooLarge { max: 1024, .. })),
        "{result:?}"
    );
    assert_eq!(server.handler.calls.load(Ordering::SeqCst), 0);
    // Within the limit all is well.
    assert_echo(&client.transport, server.addr, &[1u8; 512]).await;
}

#[tokio::test]
async fn a_handler_that_never_answers_hits_the_deadline() {
    let ca = cert::generate_ca(now()).unwrap();
    let (a, b) = (node(&identity(&ca, "a")), node(&identity(&ca, "b")));
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let request = PeerRequest {
        kind: KIND_HANG,
        body: vec![],
    };
    let result = a.transport.call(b.addr, request, deadline).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(
            result,
            Err(TransportError::Timeout {
                deadline_ms: 300,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(elapsed >= deadline && elapsed < OK_DEADLINE, "{elapsed:?}");
    // The connection is not poisoned by the abandoned call.
    assert_echo(&a.transport, b.addr, b"still here").await;
    // A peer that does not exist also ends at the deadline.
    let nobody = UdpSocket::bind(loopback()).unwrap().local_addr().unwrap();
    let result = a.transport.call(nobody, echo(b"?"), deadline).await;
    assert!(
        matches!(
            result,
            Err(TransportError::Timeout { .. } | TransportError::Connect { .. })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn unknown_protocol_versions_and_reserved_kinds_get_typed_errors() {
    let ca = cert::generate_ca(now()).unwrap();
    let (a, b) = (node(&identity(&ca, "a")), node(&identity(&ca, "b")));
    let check = |envelope: Envelope, expect: PeerError| {
        let transport = &a.transport;
        async move {
            let reply = transport
                .call_envelope(b.addr, &envelope, OK_DEADLINE)
                .await
                .unwrap();
            assert_eq!(reply.kind, KIND_ERROR);
            match interpret_reply(b.addr, reply, ProtocolRange::BUILD) {
                Err(TransportError::Remote { error, .. }) => assert_eq!(error, expect),
                other => panic!("{other:?}"),
            }
        }
    };
    check(
        Envelope {
            protocol_version: 99,
            kind: KIND_ECHO,
            body: vec![1],
        },
        PeerError::UnsupportedVersion {
            received: 99,
            min_supported: 1,
            max_supported: PROTOCOL_VERSION,
        },
    )
    .await;
    check(
        Envelope {
            protocol_version: 0,
            kind: KIND_ECHO,
            body: vec![],
        },
        PeerError::UnsupportedVersion {
            received: 0,
            min_supported: 1,
            max_supported: PROTOCOL_VERSION,
        },
    )
    .await;
    check(
        Envelope {
            protocol_version: PROTOCOL_VERSION,
            kind: KIND_ERROR,
            body: vec![],
        },
        PeerError::UnknownKind { kind: KIND_ERROR },
    )
    .await;
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 0);
    assert_echo(&a.transport, b.addr, b"v1").await;
}

/// Binds a node on `addr`, retrying while the previous holder of the port lets go.
async fn rebind(identity: &NodeIdentity, addr: SocketAddr) -> Node {
    let handler = Arc::new(TestHandler::default());
    let started = Instant::now();
    loop {
        match QuicTransport::bind(QuicConfig::new(addr), identity, handler.clone()) {
            Ok(transport) => {
                return Node {
                    transport,
                    handler,
                    addr,
                }
            }
            Err(TransportError::Bind { .. }) if started.elapsed() < OK_DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebind {addr}: {e:?}"),
        }
    }
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected() {
    let ca = cert::generate_ca(now()).unwrap();
    let b_identity = identity(&ca, "b");
    let a = node(&identity(&ca, "a"));
    let b = node(&b_identity);
    let b_addr = b.addr;
    assert_echo(&a.transport, b_addr, b"first life").await;
    b.transport.shutdown().await;
    drop(b);
    // While it is down, calls fail (within their deadline).
    let result = a
        .transport
        .call(b_addr, echo(b"anyone?"), Duration::from_millis(300))
        .await;
    assert!(result.is_err(), "{result:?}");
    let b = rebind(&b_identity, b_addr).await;
    assert_echo(&a.transport, b_addr, b"second life").await;
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 1);
}

/// A UDP relay between a client and one server that can black-hole everything, which
/// makes a peer look crashed: its goodbye never arrives.
struct Relay {
    addr: SocketAddr,
    black_hole: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let socket = Arc::new(tokio::net::UdpSocket::bind(loopback()).await.unwrap());
        let addr = socket.local_addr().unwrap();
        let black_hole = Arc::new(AtomicBool::new(false));
        let drop_all = black_hole.clone();
        let task = tokio::spawn(async move {
            let mut client = None;
            let mut buf = vec![0u8; 65536];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if drop_all.load(Ordering::SeqCst) {
                    continue;
                }
                let to = if from == server {
                    match client {
                        Some(client) => client,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                let _ = socket.send_to(&buf[..len], to).await;
            }
        });
        Relay {
            addr,
            black_hole,
            task,
        }
    }
}

#[tokio::test]
async fn a_crashed_and_restarted_peer_is_reconnected_before_the_idle_timeout() {
    let ca = cert::generate_ca(now()).unwrap();
    let b_identity = identity(&ca, "b");
    let a = node(&identity(&ca, "a"));
    let b = node(&b_identity);
    let b_addr = b.addr;
    let relay = Relay::start(b_addr).await;
    assert_echo(&a.transport, relay.addr, b"first life").await;
    // The crash: b disappears and its close never reaches a.
    relay.black_hole.store(true, Ordering::SeqCst);
    b.transport.shutdown().await;
    drop(b);
    let b = rebind(&b_identity, b_addr).await;
    relay.black_hole.store(false, Ordering::SeqCst);
    // a's cached connection is stale; the restarted b resets it at the first packet
    // (its reset key is derived from its identity) and a retries on a new connection,
    // well before the idle timeout would have noticed.
    let started = Instant::now();
    assert_echo(&a.transport, relay.addr, b"second life").await;
    assert!(
        started.elapsed() < tollgate_node::cluster::transport::quic::IDLE_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.handler.calls.load(Ordering::SeqCst), 1);
    relay.task.abort();
}
