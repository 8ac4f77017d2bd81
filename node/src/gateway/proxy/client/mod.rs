//! The client that carries requests to providers: HTTP/1.1 over TCP or rustls (the
//! platform's roots, ring), connections pooled per scheme and authority, as nginx's
//! `proxy_pass` does it. Each provider's URLs are `Uri`s made once from its config.
//!
//! The request's own task drives its connection: it writes the request, reads the
//! answer's head and then its body, so an answer takes no hop between tasks, and bytes
//! that arrived together are handed on together: a stream's events read in one go leave
//! in one write to the client, not one write each.
//!
//! # Layout
//! - `connect`: a new TCP or TLS connection within the connect timeout.
//! - `pool`: idle connections per scheme and authority, dropped when closed or expired.

mod connect;
mod pool;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::http::HeaderValue;
use hyper::{HeaderMap, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use pool::{Conn, Key, Pool};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long an unused connection to a provider stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per provider host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// The most body bytes handed on as one chunk when more arrived at once.
const MAX_GATHER: usize = 64 * 1024;

/// A cheap-to-clone handle on the pooled client.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Shared>,
}

struct Shared {
    pool: Arc<Pool>,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the URL has no host")]
    NoHost,
}

/// How an exchange on a connection failed.
enum Failed {
    /// The connection was closed before the request went out: it can go on another.
    Unsent(Box<Request<Full<Bytes>>>),
    Error(hyper::Error),
}

impl UpstreamClient {
    /// A client that gives up connecting after `connect_timeout`. Fails only when the
    /// platform's certificate store cannot be read. Its pool is swept on the current
    /// runtime.
    pub fn new(connect_timeout: Duration) -> Result<UpstreamClient, rustls::Error> {
        let tls = tokio_rustls::TlsConnector::from(connect::tls_config()?);
        Ok(UpstreamClient {
            inner: Arc::new(Shared {
                pool: Pool::new(POOL_IDLE, POOL_MAX_IDLE_PER_HOST),
                tls,
                connect_timeout,
            }),
        })
    }

    /// POSTs `body` to `uri` with `headers` (`host` and `content-length` added).
    pub async fn post(
        &self,
        uri: &Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, ClientError> {
        let authority = uri.authority().ok_or(ClientError::NoHost)?;
        let key = Key {
            https: uri.scheme() == Some(&Scheme::HTTPS),
            authority: authority.clone(),
        };
        headers.insert(hyper::header::HOST, host_header(&key)?);
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = Uri::from(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        *request.headers_mut() = headers;
        // A pooled connection the provider has just closed gives the request back
        // unsent; it then goes on a new connection.
        if let Some(idle) = self.inner.pool.take(&key) {
            match exchange(idle.sender, idle.conn, request).await {
                Ok((head, sender, conn)) => return Ok(self.answer(key, head, sender, conn)),
                Err(Failed::Unsent(back)) => request = *back,
                Err(Failed::Error(e)) => return Err(e.into()),
            }
        }
        let (sender, conn) = self.open(&key).await?;
        match exchange(sender, conn, request).await {
            Ok((head, sender, conn)) => Ok(self.answer(key, head, sender, conn)),
            Err(Failed::Unsent(_)) => Err(ClientError::Connect(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection closed before the request was sent",
            ))),
            Err(Failed::Error(e)) => Err(e.into()),
        }
    }

    async fn open(&self, key: &Key) -> Result<(SendRequest<Full<Bytes>>, Conn), ClientError> {
        let port = key
            .authority
            .port_u16()
            .unwrap_or(if key.https { 443 } else { 80 });
        let tls = key.https.then_some(&self.inner.tls);
        let io = connect::connect(key.authority.host(), port, tls, self.inner.connect_timeout)
            .await
            .map_err(ClientError::Connect)?;
        Ok(hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await?)
    }

    fn answer(
        &self,
        key: Key,
        head: Response<Incoming>,
        sender: SendRequest<Full<Bytes>>,
        conn: Option<Conn>,
    ) -> UpstreamResponse {
        let lease = conn.map(|conn| Lease {
            key,
            sender,
            conn,
            pool: Arc::clone(&self.inner.pool),
        });
        UpstreamResponse { head, lease }
    }
}

/// The `host` header for `key`: its authority, without the scheme's default port.
fn host_header(key: &Key) -> Result<HeaderValue, ClientError> {
    let default = if key.https { 443 } else { 80 };
    let text = match key.authority.port_u16() {
        Some(port) if port == default => key.authority.host(),
        _ => key.authority.as_str(),
    };
    HeaderValue::from_str(text).map_err(|_| ClientError::NoHost)
}

/// Sends `request` on a connection and drives it until the answer's head is in.
/// The connection comes back unless it ended meanwhile.
async fn exchange(
    mut sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    request: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, SendRequest<Full<Bytes>>, Option<Conn>), Failed> {
    let mut conn = Some(conn);
    let answer = sender.try_send_request(request);
    futures_util::pin_mut!(answer);
    let result = std::future::poll_fn(|cx| {
        if let Some(c) = conn.as_mut() {
            if Pin::new(c).poll(cx).is_ready() {
                // Ended (closed or failed): the answer future reports why.
                conn = None;
            }
        }
        answer.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(head) => Ok((head, sender, conn)),
        Err(mut e) => match e.take_message() {
            Some(request) => Err(Failed::Unsent(Box::new(request))),
            None => Err(Failed::Error(e.into_error())),
        },
    }
}

/// A connection carrying an answer's body, back to the pool when the body is done.
struct Lease {
    key: Key,
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    pool: Arc<Pool>,
}

/// A provider's answer: its head read, its body still to come.
pub struct UpstreamResponse {
    head: Response<Incoming>,
    /// None once the connection has ended (its body is then all in hyper's hands).
    lease: Option<Lease>,
}

impl UpstreamResponse {
    pub fn status(&self) -> hyper::StatusCode {
        self.head.status()
    }

    pub fn headers(&self) -> &hyper::HeaderMap {
        self.head.headers()
    }

    /// The body's data as it arrives (trailers skipped), what arrived together in one
    /// chunk of at most `MAX_GATHER` bytes.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send {
        BodyStream {
            body: self.head.into_body(),
            lease: self.lease,
            failed: None,
            done: false,
        }
    }
}

struct BodyStream {
    body: Incoming,
    lease: Option<Lease>,
    /// An error met after data that was handed on first.
    failed: Option<hyper::Error>,
    done: bool,
}

impl BodyStream {
    /// Lets the connection read and parse what has arrived.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(lease) = self.lease.as_mut() {
            if Pin::new(&mut lease.conn).poll(cx).is_ready() {
                self.lease = None;
            }
        }
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let mut gathered: Option<Bytes> = None;
        let mut more = BytesMut::new();
        loop {
            this.drive(cx);
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match &gathered {
                        None => gathered = Some(data),
                        Some(first) => {
                            if more.is_empty() {
                                more.reserve(first.len() + data.len());
                                more.extend_from_slice(first);
                            }
                            more.extend_from_slice(&data);
                        }
                    }
                    if more.len() >= MAX_GATHER {
                        break;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.lease = None;
                    if gathered.is_none() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.failed = Some(e);
                    break;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(lease) = this.lease.take() {
                        lease.pool.put(lease.key, lease.sender, lease.conn);
                    }
                    if gathered.is_none() {
                        return Poll::Ready(None);
                    }
                    break;
                }
                Poll::Pending if gathered.is_none() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        let chunk = if more.is_empty() {
            gathered.unwrap_or_default()
        } else {
            more.freeze()
        };
        Poll::Ready(Some(Ok(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    /// Reads one request (head and content-length body); false at the end of input.
    async fn read_request(sock: &mut TcpStream) -> bool {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                return false;
            }
            seen.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        sock.read_exact(&mut body).await.is_ok()
    }

    /// A provider on loopback answering every request on a connection with `answer`,
    /// closing the connection after `per_conn` answers. Counts the connections and
    /// reports each close once it is done.
    async fn provider(
        answer: &'static [u8],
        per_conn: usize,
    ) -> (Uri, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/v1/messages", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let (closed_tx, closed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    for _ in 0..per_conn {
                        // One write: the whole answer arrives at once.
                        if !read_request(&mut sock).await || sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    let _ = sock.shutdown().await;
                    drop(sock);
                    let _ = closed_tx.send(());
                });
            }
        });
        (uri, accepted, closed)
    }

    async fn body_chunks(resp: UpstreamResponse) -> Vec<Bytes> {
        let stream = resp.bytes_stream();
        futures_util::pin_mut!(stream);
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.unwrap());
        }
        chunks
    }

    async fn post(client: &UpstreamClient, uri: &Uri) -> UpstreamResponse {
        client
            .post(uri, HeaderMap::new(), Bytes::from_static(b"{}"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn chunks_that_arrive_together_go_on_together_and_connections_are_reused() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n\
            6\r\nevent1\r\n6\r\nevent2\r\n6\r\nevent3\r\n0\r\n\r\n";
        let (uri, accepted, _closed) = provider(answer, usize::MAX).await;
        let client = UpstreamClient::new(Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let resp = post(&client, &uri).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(
                body_chunks(resp).await,
                vec![Bytes::from_static(b"event1event2event3")]
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
    }

    #[tokio::test]
    async fn a_connection_the_provider_closed_is_not_used_again() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (uri, accepted, mut closed) = provider(answer, 1).await;
        let client = UpstreamClient::new(Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let resp = post(&client, &uri).await;
            assert_eq!(body_chunks(resp).await, vec![Bytes::from_static(b"ok")]);
            // The pooled connection has been closed by the provider when the next
            // request goes out.
            closed.recv().await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_provider_that_is_not_there_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/v1", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let client = UpstreamClient::new(Duration::from_secs(5)).unwrap();
        let err = client
            .post(&uri, HeaderMap::new(), Bytes::new())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ClientError::Connect(_)), "{err}");
    }
}
