//! The HTTP side. Scrapes never wait for AWS: the exposition is bytes prepared when the last
//! poll ended, handed out by reference count (`WebState::publish`); only the exporter's own few
//! dozen series are rendered per scrape. A slow or hung EC2 API therefore cannot slow a scrape.
//!
//! The server is exposed to whatever can reach the port, so every resource a client can tie up
//! is bounded: connections, requests in flight, time to send headers, header and body size.
//! `serve` knows nothing of signals or polls: it serves until its token is cancelled.

mod body;
pub mod reload;
mod routes;
pub mod web_config;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::render::RenderOptions;
use crate::render::exposition::Prepared;
use crate::render::page::StatusPage;
use crate::self_metrics::SelfMetrics;
use crate::snapshot::{LiveTarget, Snapshot};
use body::Chunks;
use reload::Reload;
use routes::{route, text};
use web_config::{WebConfig, WebConfigSource};

/// How long in-flight requests may take to finish after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this are refused (431); none of our routes needs more.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Request bodies are read (to keep the connection reusable) up to this size, never kept.
const MAX_BODY_BYTES: usize = 64 * 1024;

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

/// A published snapshot, and its number (the status page is written once per number).
struct Published {
    number: u64,
    /// When it was published: the page's "figures as of", and what its ages count from.
    at: std::time::SystemTime,
    snapshot: Arc<Snapshot>,
    options: RenderOptions,
}

/// What the HTTP server serves; written by the poller, read by every request.
pub struct WebState {
    options: ServerOptions,
    /// The exposition of the latest polls, swapped whole.
    exposition: ArcSwap<Prepared>,
    /// The snapshot of the same polls, numbered, for the status page.
    snapshot: ArcSwap<Published>,
    /// The status page of the latest snapshot anyone asked to see: written on the first request
    /// after a snapshot changed, once, so that polls pay nothing for a page nobody opens.
    page: tokio::sync::Mutex<Option<(u64, Arc<StatusPage>)>>,
    /// The polls of the targets, live: the page shows those running.
    live: ArcSwap<Vec<LiveTarget>>,
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
            exposition: ArcSwap::from_pointee(Prepared::empty()),
            snapshot: ArcSwap::from_pointee(Published {
                number: 0,
                at: std::time::SystemTime::now(),
                snapshot: Arc::default(),
                options: RenderOptions::default(),
            }),
            page: tokio::sync::Mutex::new(None),
            live: ArcSwap::from_pointee(Vec::new()),
            ready: AtomicBool::new(false),
            metrics,
            requests,
            reload,
        }
    }

    /// Swaps in the exposition composed of the latest polls.
    pub fn publish(&self, exposition: Prepared) {
        self.exposition.store(Arc::new(exposition));
    }

    /// Swaps in the snapshot of the latest polls, for the status page.
    pub fn publish_snapshot(&self, snapshot: Arc<Snapshot>, options: RenderOptions) {
        let number = self.snapshot.load().number + 1;
        let at = std::time::SystemTime::now();
        self.snapshot.store(Arc::new(Published { number, at, snapshot, options }));
    }

    /// The status page of the latest snapshot, written now if it has not been yet (off the
    /// threads that serve requests; concurrent requests wait for the one writing it).
    async fn page(&self) -> Arc<StatusPage> {
        let published = self.snapshot.load_full();
        let mut page = self.page.lock().await;
        if let Some((_, current)) = page.as_ref().filter(|(number, _)| *number == published.number) {
            return Arc::clone(current);
        }
        let number = published.number;
        let built = tokio::task::spawn_blocking(move || {
            StatusPage::build(&published.snapshot, &published.options, published.at)
        })
        .await;
        match built {
            Ok(built) => Arc::clone(&page.insert((number, Arc::new(built))).1),
            Err(error) => {
                tracing::error!(%error, "writing the status page failed; the previous one is served");
                page.as_ref().map_or_else(|| Arc::new(StatusPage::empty()), |(_, last)| Arc::clone(last))
            }
        }
    }

    /// The targets whose running polls the page shows (set when the targets start).
    pub fn watch_polls(&self, live: Vec<LiveTarget>) {
        self.live.store(Arc::new(live));
    }

    /// Marks the exporter ready: every target finished its first poll.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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
    let target = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |p| p.as_str());
    route(state, &parts.method, target, &parts.headers).await
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
                // delayed ACK, a stall of tens of milliseconds (BENCHMARKS.md, "What changed").
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

    #[test]
    fn a_reload_takes_no_request_slot() {
        assert!(!needs_request_slot("/-/reload"));
        for path in ["/metrics", "/", "/-/ready", "/-/healthy", "/nope"] {
            assert!(needs_request_slot(path), "{path}");
        }
    }
}
