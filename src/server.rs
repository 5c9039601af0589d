//! The HTTP side: `/metrics`, a landing page, health, readiness and reload, nothing else.
//!
//! Scrapes never wait for AWS: the usage exposition is bytes rendered when the last poll ended,
//! handed out by reference count; only the exporter's own few dozen series are rendered per
//! scrape. A slow or hung EC2 API therefore cannot slow a scrape down.
//!
//! The server is exposed to whatever can reach the port, so every resource a client can tie up
//! is bounded: connections, requests in flight, time to send headers, header and body size.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, VARY, WWW_AUTHENTICATE,
};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::exposition::{Format, Prepared, negotiate, text_to_openmetrics, wants_gzip};
use crate::metrics::SelfMetrics;
use crate::web_config::{self, WebConfig, WebConfigSource};

/// How long in-flight requests may take to finish after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this are refused (431); none of our routes needs more.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Request bodies are read (to keep the connection reusable) up to this size, never kept.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// A reload waits at most this long for the schedule to take it (it may be rendering a large
/// exposition); one not taken by then is withdrawn.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
const TEXT: &str = "text/plain; charset=utf-8";

/// A request to re-read the configuration file: from SIGHUP (nobody waits), or from
/// `/-/reload` (a ticket the requester waits on, and may give up). The server hands these to
/// whoever owns the configuration (`app`), through the channel given to `WebState::new`.
pub struct Reload {
    pub ticket: Option<ReloadTicket>,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// The schedule's side of a reload request made over HTTP.
pub struct ReloadTicket {
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The requester's side: the outcome, or giving up.
pub struct ReloadWaiter {
    state: Arc<AtomicU8>,
    outcome: oneshot::Receiver<Result<(), String>>,
}

impl Reload {
    /// A reload someone waits for.
    pub fn requested() -> (Reload, ReloadWaiter) {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (reply, outcome) = oneshot::channel();
        (Reload { ticket: Some(ReloadTicket { state: Arc::clone(&state), reply }) }, ReloadWaiter { state, outcome })
    }
}

impl ReloadTicket {
    /// Takes the request for applying; `false` when its requester gave up waiting, in which case
    /// it must not be applied: the requester was told it was not.
    pub fn claim(&self) -> bool {
        self.state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Tells the requester what happened.
    pub fn reply(self, outcome: Result<(), String>) {
        // The requester may have gone (its connection closed); nothing to tell then.
        let _ = self.reply.send(outcome);
    }
}

impl ReloadWaiter {
    /// Waits up to `limit` for the outcome. A reload still queued then is withdrawn (`None`: not
    /// applied, and never applied later); one already being applied is waited for to the end,
    /// so that what is reported is what happened.
    pub async fn outcome(mut self, limit: Duration) -> Option<Result<(), String>> {
        if let Ok(outcome) = tokio::time::timeout(limit, &mut self.outcome).await {
            return outcome.ok();
        }
        let withdrawn = self.state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if withdrawn { None } else { self.outcome.await.ok() }
    }
}

/// How the server protects itself; from the command line.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub telemetry_path: String,
    /// 0: unlimited.
    pub max_requests: usize,
    /// 0: unlimited.
    pub max_connections: usize,
    /// Also bounds the TLS handshake.
    pub header_timeout: Duration,
    /// `--web.config.file`: TLS, basic authentication, extra headers.
    pub web_config: Option<Arc<WebConfigSource>>,
    /// `--web.enable-lifecycle`: whether `/-/reload` may be used (SIGHUP always reloads).
    pub lifecycle: bool,
}

/// What the HTTP server serves; written by the poller, read by every request.
pub struct WebState {
    options: ServerOptions,
    usage: ArcSwap<Prepared>,
    ready: AtomicBool,
    metrics: SelfMetrics,
    requests: Option<Arc<Semaphore>>,
    reload: Option<mpsc::Sender<Reload>>,
}

impl WebState {
    pub fn new(options: ServerOptions, metrics: SelfMetrics, reload: Option<mpsc::Sender<Reload>>) -> Self {
        let requests = (options.max_requests > 0).then(|| Arc::new(Semaphore::new(options.max_requests)));
        Self {
            options,
            usage: ArcSwap::from_pointee(Prepared::empty()),
            ready: AtomicBool::new(false),
            metrics,
            requests,
            reload,
        }
    }

    /// Swaps in the exposition composed of the latest polls.
    pub fn publish(&self, usage: Prepared) {
        self.usage.store(Arc::new(usage));
    }

    /// Marks the exporter ready: every target finished its first poll.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A response body made of a few shared buffers, sent without copying them together.
pub struct Chunks {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|b| !b.is_empty()).collect();
        let remaining = parts.iter().map(|b| b.len() as u64).sum();
        Self { parts, remaining }
    }

    fn text(s: impl Into<String>) -> Self {
        Self::new([Bytes::from(s.into())])
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.parts.pop_front().map(|part| {
            this.remaining -= part.len() as u64;
            Ok(Frame::data(part))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Chunks) -> Response<Chunks> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Chunks> {
    respond(status, TEXT, Chunks::text(body))
}

fn method_not_allowed(allow: &'static str) -> Response<Chunks> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn landing_page(telemetry_path: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>AMI Usage Exporter</title></head>\n<body>\n\
<h1>AMI Usage Exporter</h1>\n<p>Version {}. Who uses your shared AMIs, from EC2 AMI usage reports.</p>\n\
<ul>\n<li><a href=\"{telemetry_path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
<li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n",
        crate::VERSION_LINE
    )
}

/// The metrics in the format and encoding the scraper asked for.
fn metrics(state: &WebState, headers: &HeaderMap) -> Response<Chunks> {
    let header = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let format = negotiate(header(ACCEPT));
    let gzip = wants_gzip(header(ACCEPT_ENCODING));
    let own = state.metrics.render();
    let own = match format {
        Format::Text => own,
        Format::OpenMetrics => text_to_openmetrics(&own),
    };
    let body = state.usage.load().body(&own, format, gzip);
    let mut response = respond(StatusCode::OK, format.content_type(), Chunks::new(body));
    let response_headers = response.headers_mut();
    response_headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    if gzip {
        response_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Routes one request.
pub async fn route(state: &WebState, method: &Method, path: &str, headers: &HeaderMap) -> Response<Chunks> {
    let read_only = method == Method::GET || method == Method::HEAD;
    match path {
        "/-/reload" if (method == Method::POST || method == Method::PUT) && !state.options.lifecycle => {
            // Prometheus's answer, word for word: tools that drive Prometheus understand it.
            text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.")
        }
        "/-/reload" if method == Method::POST || method == Method::PUT => reload(state).await,
        "/-/reload" => method_not_allowed("POST, PUT"),
        _ if !read_only => method_not_allowed("GET, HEAD"),
        p if p == state.options.telemetry_path => metrics(state, headers),
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Chunks::text(landing_page(&state.options.telemetry_path)),
        ),
        "/-/healthy" => text(StatusCode::OK, "Healthy\n"),
        "/-/ready" if state.is_ready() => text(StatusCode::OK, "Ready\n"),
        "/-/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "Not ready: the first poll has not finished\n"),
        _ => text(StatusCode::NOT_FOUND, "Not found\n"),
    }
}

async fn reload(state: &WebState) -> Response<Chunks> {
    let Some(reloads) = &state.reload else {
        return text(StatusCode::NOT_FOUND, "Reloading is not enabled\n");
    };
    let (request, waiter) = Reload::requested();
    match reloads.try_send(request) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Reloads are already queued; try again shortly\n");
        }
        Err(TrySendError::Closed(_)) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "The exporter is shutting down\n");
        }
    }
    match waiter.outcome(RELOAD_TIMEOUT).await {
        Some(Ok(())) => text(StatusCode::OK, "Configuration reloaded\n"),
        Some(Err(error)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("Failed to reload the configuration: {error}\n"))
        }
        None => text(StatusCode::SERVICE_UNAVAILABLE, "The reload did not start in time; it was not applied\n"),
    }
}

async fn handle(state: Arc<WebState>, request: Request<Incoming>) -> Result<Response<Chunks>, Infallible> {
    let (parts, body) = request.into_parts();
    // The web configuration in force for this request (re-read first if its files changed).
    let web = match &state.options.web_config {
        Some(source) => Some((source.as_ref(), source.current().await)),
        None => None,
    };
    let mut response =
        answer(&state, web.as_ref().map(|(source, config)| (*source, config.as_ref())), &parts, body).await;
    if let Some((_, config)) = &web {
        for (name, value) in config.extra_headers() {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(response)
}

async fn answer(
    state: &WebState,
    web: Option<(&WebConfigSource, &WebConfig)>,
    parts: &Parts,
    body: Incoming,
) -> Response<Chunks> {
    // A reload may wait for the poll loop; it must never hold a slot that scrapes need. The
    // reload queue and the connection limit bound these requests instead.
    let _permit = match &state.requests {
        Some(limit) if needs_request_slot(parts.uri.path()) => match Arc::clone(limit).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "Too many concurrent requests\n"),
        },
        _ => None,
    };
    // Our routes take no body; read and drop a small one so keep-alive stays usable. A large one
    // is cut off, and hyper closes the connection instead of reading it.
    drop(Limited::new(body, MAX_BODY_BYTES).collect().await);
    // Basic authentication applies to every path, as with the exporter-toolkit.
    if let Some((source, config)) = web
        && source.authorize(config, &parts.headers).await.is_err()
    {
        tracing::debug!(method = %parts.method, path = parts.uri.path(), "request refused: no valid credentials");
        let mut refused = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        refused.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(web_config::WWW_AUTHENTICATE));
        return refused;
    }
    route(state, &parts.method, parts.uri.path(), &parts.headers).await
}

/// Whether a request to `path` takes one of the `--web.max-requests` slots: every one but a
/// reload, which may wait for the poll loop.
fn needs_request_slot(path: &str) -> bool {
    path != "/-/reload"
}

/// Accepts connections on one listener and hands them to the server loop.
async fn accept_loop(listener: TcpListener, connections: mpsc::Sender<(TcpStream, SocketAddr)>) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                // A response goes out as several writes (head, the prepared body, the own
                // metrics); with Nagle's algorithm the last small one waits for the client's
                // delayed ACK, adding 40 ms to scrapes (measured: p99 42 ms at p50 0.3 ms).
                if let Err(error) = accepted.0.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                if connections.send(accepted).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it closes or shutdown ends it.
async fn serve_connection<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    state: Arc<WebState>,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
    watcher.watch(http.serve_connection(TokioIo::new(io), service)).await
}

/// Serves the listeners until `shutdown` is cancelled, then lets in-flight requests finish
/// (bounded).
pub async fn serve(listeners: Vec<TcpListener>, state: Arc<WebState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(state.options.header_timeout).max_buf_size(MAX_HEAD_BYTES);
    let connections =
        (state.options.max_connections > 0).then(|| Arc::new(Semaphore::new(state.options.max_connections)));
    let (tx, mut accepted) = mpsc::channel(64);
    let acceptors: Vec<_> = listeners.into_iter().map(|l| tokio::spawn(accept_loop(l, tx.clone()))).collect();
    drop(tx);
    loop {
        let (stream, peer) = tokio::select! {
            Some(pair) = accepted.recv() => pair,
            () = shutdown.cancelled() => break,
            else => break,
        };
        let permit = match &connections {
            Some(limit) => match Arc::clone(limit).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(%peer, "connection limit reached; closing the new connection");
                    continue;
                }
            },
            None => None,
        };
        // The TLS handshake (if any) happens in the connection's own task, bounded like the
        // request head, so a slow client cannot hold up the others.
        let (state, http, watcher) = (Arc::clone(&state), http.clone(), graceful.watcher());
        tokio::spawn(async move {
            let acceptor = match &state.options.web_config {
                Some(source) => source.current().await.acceptor(),
                None => None,
            };
            let served = match acceptor {
                None => serve_connection(&http, stream, state, watcher).await,
                Some(acceptor) => match web_config::accept_tls(acceptor, stream, state.options.header_timeout).await {
                    Ok(tls) => serve_connection(&http, tls, state, watcher).await,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        Ok(())
                    }
                },
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    for acceptor in acceptors {
        acceptor.abort();
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ServerOptions {
        ServerOptions {
            telemetry_path: "/metrics".into(),
            max_requests: 40,
            max_connections: 10,
            header_timeout: Duration::from_secs(10),
            web_config: None,
            lifecycle: true,
        }
    }

    fn state() -> WebState {
        WebState::new(options(), SelfMetrics::new("0", "r", true).expect("metrics"), None)
    }

    async fn body_of(response: Response<Chunks>) -> String {
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn readiness_follows_the_first_poll() {
        let s = state();
        assert_eq!(
            route(&s, &Method::GET, "/-/ready", &HeaderMap::new()).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(route(&s, &Method::GET, "/-/healthy", &HeaderMap::new()).await.status(), StatusCode::OK);
        s.publish(Prepared::new(b"ami_usage_resources 1\n".to_vec()));
        assert_eq!(
            route(&s, &Method::GET, "/-/ready", &HeaderMap::new()).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "one target's result is not every target's"
        );
        s.mark_ready();
        assert_eq!(route(&s, &Method::GET, "/-/ready", &HeaderMap::new()).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_serves_usage_then_own_metrics_with_exact_length() {
        let s = state();
        s.publish(Prepared::new(b"# TYPE ami_usage_resources gauge\nami_usage_resources 7\n".to_vec()));
        let response = route(&s, &Method::GET, "/metrics", &HeaderMap::new()).await;
        assert_eq!(response.headers()[CONTENT_TYPE], crate::exposition::CONTENT_TYPE_TEXT);
        let hint = response.body().size_hint().exact();
        let text = body_of(response).await;
        assert_eq!(hint, Some(text.len() as u64));
        assert!(text.starts_with("# TYPE ami_usage_resources gauge\nami_usage_resources 7\n"), "{text}");
        assert!(text.contains("ami_usage_build_info"));
    }

    #[tokio::test]
    async fn other_paths_and_methods() {
        let s = state();
        assert_eq!(route(&s, &Method::GET, "/nope", &HeaderMap::new()).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&s, &Method::GET, "/metrics/", &HeaderMap::new()).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&s, &Method::GET, "//metrics", &HeaderMap::new()).await.status(), StatusCode::NOT_FOUND);
        let post = route(&s, &Method::POST, "/metrics", &HeaderMap::new()).await;
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        let get_reload = route(&s, &Method::GET, "/-/reload", &HeaderMap::new()).await;
        assert_eq!(get_reload.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(get_reload.headers()[ALLOW], "POST, PUT");
        let landing = body_of(route(&s, &Method::GET, "/", &HeaderMap::new()).await).await;
        assert!(landing.contains("href=\"/metrics\""), "{landing}");
    }

    #[tokio::test]
    async fn reload_reports_the_outcome() {
        let (tx, mut rx) = mpsc::channel::<Reload>(1);
        let s = WebState::new(options(), SelfMetrics::new("0", "r", true).expect("metrics"), Some(tx));
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(reload) = rx.recv().await {
                n += 1;
                let outcome = if n == 1 { Ok(()) } else { Err("targets: bad".to_owned()) };
                if let Some(ticket) = reload.ticket.filter(|t| t.claim()) {
                    ticket.reply(outcome);
                }
            }
        });
        assert_eq!(route(&s, &Method::POST, "/-/reload", &HeaderMap::new()).await.status(), StatusCode::OK);
        let failed = route(&s, &Method::PUT, "/-/reload", &HeaderMap::new()).await;
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body_of(failed).await.contains("targets: bad"));
    }

    #[tokio::test]
    async fn a_reload_that_timed_out_while_queued_is_never_applied() {
        let (request, waiter) = Reload::requested();
        let outcome = waiter.outcome(Duration::from_millis(20)).await;
        assert_eq!(outcome, None, "not applied, and said so");
        let ticket = request.ticket.expect("an HTTP reload has a ticket");
        assert!(!ticket.claim(), "the schedule must not apply it later");
    }

    #[tokio::test]
    async fn a_reload_taken_before_the_timeout_is_reported_whatever_it_takes() {
        let (request, waiter) = Reload::requested();
        let ticket = request.ticket.expect("an HTTP reload has a ticket");
        assert!(ticket.claim());
        let waiting = tokio::spawn(waiter.outcome(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        ticket.reply(Err("targets: bad".into()));
        assert_eq!(waiting.await.expect("joins"), Some(Err("targets: bad".into())), "applied and reported");
    }

    #[test]
    fn a_reload_takes_no_request_slot() {
        assert!(!needs_request_slot("/-/reload"));
        for path in ["/metrics", "/", "/-/ready", "/-/healthy", "/nope"] {
            assert!(needs_request_slot(path), "{path}");
        }
    }

    #[tokio::test]
    async fn reload_needs_the_lifecycle_flag() {
        let (tx, mut rx) = mpsc::channel::<Reload>(1);
        let options = ServerOptions { lifecycle: false, ..options() };
        let s = WebState::new(options, SelfMetrics::new("0", "r", true).expect("metrics"), Some(tx));
        for method in [Method::POST, Method::PUT] {
            let refused = route(&s, &method, "/-/reload", &HeaderMap::new()).await;
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
            assert_eq!(body_of(refused).await, "Lifecycle API is not enabled.");
        }
        assert!(rx.try_recv().is_err(), "nothing was queued");
    }

    #[tokio::test]
    async fn a_full_reload_queue_is_refused_at_once() {
        let (tx, _rx) = mpsc::channel::<Reload>(1);
        let s = WebState::new(options(), SelfMetrics::new("0", "r", true).expect("metrics"), Some(tx.clone()));
        tx.try_send(Reload { ticket: None }).expect("room for one");
        let started = std::time::Instant::now();
        let busy = route(&s, &Method::POST, "/-/reload", &HeaderMap::new()).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(1), "not waiting for room in the queue");
    }
}
