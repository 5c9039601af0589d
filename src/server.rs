//! The HTTP side: `/metrics`, a landing page, health and readiness, nothing else.
//!
//! Scrapes never wait for AWS: the usage exposition is bytes rendered when the last poll ended,
//! handed out by reference count; only the exporter's own few dozen series are rendered per
//! scrape. A slow or hung EC2 API therefore cannot slow a scrape down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CONTENT_TYPE_TEXT, SelfMetrics};

/// A client that has not sent its request headers by then is cut off (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP server serves; written by the poller, read by every request.
pub struct WebState {
    telemetry_path: String,
    usage: ArcSwap<Bytes>,
    ready: AtomicBool,
    metrics: SelfMetrics,
}

impl WebState {
    pub fn new(telemetry_path: String, metrics: SelfMetrics) -> Self {
        Self { telemetry_path, usage: ArcSwap::from_pointee(Bytes::new()), ready: AtomicBool::new(false), metrics }
    }

    /// Swaps in the exposition of a finished poll and marks the exporter ready.
    pub fn publish(&self, usage: Bytes) {
        self.usage.store(Arc::new(usage));
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

fn landing_page(telemetry_path: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>AMI Usage Exporter</title></head>\n<body>\n\
<h1>AMI Usage Exporter</h1>\n<p>Version {}. Who uses your shared AMIs, from EC2 AMI usage reports.</p>\n\
<ul>\n<li><a href=\"{telemetry_path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
<li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n",
        crate::VERSION_LINE
    )
}

/// Routes one request. Only GET and HEAD exist here.
pub fn route(state: &WebState, method: &Method, path: &str) -> Response<Chunks> {
    if method != Method::GET && method != Method::HEAD {
        let mut r =
            respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", Chunks::text("Method not allowed\n"));
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        p if p == state.telemetry_path => {
            let usage = Bytes::clone(&state.usage.load());
            let own = Bytes::from(state.metrics.render());
            respond(StatusCode::OK, CONTENT_TYPE_TEXT, Chunks::new([usage, own]))
        }
        "/" => respond(StatusCode::OK, "text/html; charset=utf-8", Chunks::text(landing_page(&state.telemetry_path))),
        "/-/healthy" => respond(StatusCode::OK, "text/plain; charset=utf-8", Chunks::text("Healthy\n")),
        "/-/ready" if state.is_ready() => respond(StatusCode::OK, "text/plain; charset=utf-8", Chunks::text("Ready\n")),
        "/-/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Chunks::text("Not ready: the first poll has not finished\n"),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Chunks::text("Not found\n")),
    }
}

async fn handle(state: Arc<WebState>, request: Request<Incoming>) -> Result<Response<Chunks>, Infallible> {
    let (parts, body) = request.into_parts();
    // Our routes take no body; read and drop whatever came, so keep-alive stays usable.
    drop(body.collect().await);
    Ok(route(&state, &parts.method, parts.uri.path()))
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish (bounded).
pub async fn serve(listener: TcpListener, state: Arc<WebState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> WebState {
        WebState::new("/metrics".into(), SelfMetrics::new("0", "r").expect("metrics"))
    }

    async fn body_of(response: Response<Chunks>) -> String {
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn readiness_follows_the_first_poll() {
        let s = state();
        assert_eq!(route(&s, &Method::GET, "/-/ready").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(route(&s, &Method::GET, "/-/healthy").status(), StatusCode::OK);
        s.publish(Bytes::from_static(b"ami_usage_resources 1\n"));
        assert_eq!(route(&s, &Method::GET, "/-/ready").status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_serves_usage_then_own_metrics_with_exact_length() {
        let s = state();
        s.publish(Bytes::from_static(b"# TYPE ami_usage_resources gauge\nami_usage_resources 7\n"));
        let response = route(&s, &Method::GET, "/metrics");
        assert_eq!(response.headers()[CONTENT_TYPE], CONTENT_TYPE_TEXT);
        let hint = response.body().size_hint().exact();
        let text = body_of(response).await;
        assert_eq!(hint, Some(text.len() as u64));
        assert!(text.starts_with("# TYPE ami_usage_resources gauge\nami_usage_resources 7\n"), "{text}");
        assert!(text.contains("ami_usage_build_info"));
    }

    #[tokio::test]
    async fn other_paths_and_methods() {
        let s = state();
        assert_eq!(route(&s, &Method::GET, "/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&s, &Method::GET, "/metrics/").status(), StatusCode::NOT_FOUND);
        let post = route(&s, &Method::POST, "/metrics");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        let landing = body_of(route(&s, &Method::GET, "/")).await;
        assert!(landing.contains("href=\"/metrics\""), "{landing}");
    }
}
