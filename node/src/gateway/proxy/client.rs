//! The client that carries requests to providers: hyper's pooled client over rustls
//! (the platform's roots, ring), HTTP/1.1 or HTTP/2 by ALPN. Each provider's URLs are
//! `Uri`s made once from its config, so a request is sent without parsing, formatting or
//! checking a URL; that, and no redirect or proxy layers, is what it saves over reqwest
//! on every request.

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

/// How long an unused connection to a provider stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per provider host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A cheap-to-clone handle on the pooled client.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<Connector, Full<Bytes>>,
}

impl UpstreamClient {
    /// A client that gives up connecting after `connect_timeout`. Fails only when the
    /// platform's certificate store cannot be read.
    pub fn new(connect_timeout: Duration) -> Result<UpstreamClient, rustls::Error> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let tls = rustls::ClientConfig::builder()
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(UpstreamClient { inner })
    }

    /// POSTs `body` to `uri` with `headers` (hyper adds `host` and `content-length`).
    pub async fn post(
        &self,
        uri: &hyper::Uri,
        headers: hyper::HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, hyper_util::client::legacy::Error> {
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        self.inner.request(request).await.map(UpstreamResponse)
    }
}

/// A provider's answer: its head read, its body still to come.
pub struct UpstreamResponse(hyper::Response<Incoming>);

impl UpstreamResponse {
    pub fn status(&self) -> hyper::StatusCode {
        self.0.status()
    }

    pub fn headers(&self) -> &hyper::HeaderMap {
        self.0.headers()
    }

    /// The body's data as it arrives (trailers skipped).
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send {
        self.0.into_body().into_data_stream()
    }
}
