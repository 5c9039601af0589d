//! What each path answers: `/metrics`, the status page, health, readiness and reload, nothing
//! else.

use std::time::Duration;

use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap,
    HeaderValue, VARY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Response, StatusCode};
use tokio::sync::mpsc::error::TrySendError;

use super::WebState;
use super::body::Chunks;
use super::reload::Reload;
use crate::render::exposition::{Format, negotiate, text_to_openmetrics, wants_gzip};
use crate::render::page::{self, PageQuery};

/// A reload waits at most this long for the schedule to take it (it may be rendering a large
/// exposition); one not taken by then is withdrawn.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
const TEXT: &str = "text/plain; charset=utf-8";

fn respond(status: StatusCode, content_type: &'static str, body: Chunks) -> Response<Chunks> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn text(status: StatusCode, body: impl Into<String>) -> Response<Chunks> {
    respond(status, TEXT, Chunks::text(body))
}

fn method_not_allowed(allow: &'static str) -> Response<Chunks> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// The status page for the filters of `query`, under its content security policy.
async fn status_page(state: &WebState, query: Option<&str>) -> Response<Chunks> {
    let query = PageQuery::parse(query);
    let body = state.page().await.respond(&query, &state.live.load(), &state.options.telemetry_path);
    let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", Chunks::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(page::CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
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
    let body = state.exposition.load().body(&own, format, gzip);
    let mut response = respond(StatusCode::OK, format.content_type(), Chunks::new(body));
    let response_headers = response.headers_mut();
    response_headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    if gzip {
        response_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Routes one request.
pub async fn route(state: &WebState, method: &Method, target: &str, headers: &HeaderMap) -> Response<Chunks> {
    let read_only = method == Method::GET || method == Method::HEAD;
    let (path, query) = target.split_once('?').map_or((target, None), |(path, query)| (path, Some(query)));
    match path {
        "/-/reload" if (method == Method::POST || method == Method::PUT) && !state.options.lifecycle => {
            // Prometheus's answer, word for word: tools that drive Prometheus understand it.
            text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.")
        }
        "/-/reload" if method == Method::POST || method == Method::PUT => reload(state).await,
        "/-/reload" => method_not_allowed("POST, PUT"),
        _ if !read_only => method_not_allowed("GET, HEAD"),
        p if p == state.options.telemetry_path => metrics(state, headers),
        "/" => status_page(state, query).await,
        // Browsers ask for it on every page; an empty answer keeps a 404 off their console.
        "/favicon.ico" => respond(StatusCode::NO_CONTENT, TEXT, Chunks::text("")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ServerOptions;
    use crate::render::exposition::Prepared;
    use crate::self_metrics::SelfMetrics;
    use http_body_util::BodyExt as _;
    use hyper::body::Body as _;
    use tokio::sync::mpsc;

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
        assert_eq!(response.headers()[CONTENT_TYPE], crate::render::exposition::CONTENT_TYPE_TEXT);
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
    async fn the_status_page_is_served_under_its_policy_with_its_filters() {
        let s = state();
        let page = route(&s, &Method::GET, "/?image=%3Cscript%3E&page=2", &HeaderMap::new()).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[CONTENT_SECURITY_POLICY], page::CSP);
        assert!(page::CSP.starts_with("default-src 'none'; style-src 'unsafe-inline'"));
        assert_eq!(page.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let html = body_of(page).await;
        assert!(html.contains("value=\"&lt;script&gt;\""), "the query, decoded and escaped: {html}");
        assert!(!html.contains("<script"));
        let icon = route(&s, &Method::GET, "/favicon.ico", &HeaderMap::new()).await;
        assert_eq!(icon.status(), StatusCode::NO_CONTENT);
        let metrics = route(&s, &Method::GET, "/metrics?x=1", &HeaderMap::new()).await;
        assert_eq!(metrics.status(), StatusCode::OK, "a query string does not change the path");
    }

    /// The page is written on the first request after a snapshot is published, once: later
    /// requests share it until the next snapshot.
    #[tokio::test]
    async fn the_page_is_written_once_per_published_snapshot() {
        use crate::snapshot::{ImageStatus, Snapshot};
        use std::sync::Arc;
        let s = state();
        let image = |id: &str| ImageStatus::unpolled("us-east-1".into(), None, id.into());
        s.publish_snapshot(Arc::new(Snapshot::new(vec![image("ami-11111111")])), Default::default());
        let first = s.page().await;
        assert!(Arc::ptr_eq(&first, &s.page().await), "the same page, not written again");
        let html = body_of(route(&s, &Method::GET, "/", &HeaderMap::new()).await).await;
        assert!(html.contains("data-image=\"ami-11111111\""), "{html}");
        s.publish_snapshot(Arc::new(Snapshot::new(vec![image("ami-22222222")])), Default::default());
        let html = body_of(route(&s, &Method::GET, "/", &HeaderMap::new()).await).await;
        assert!(html.contains("data-image=\"ami-22222222\"") && !html.contains("ami-11111111"), "{html}");
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
