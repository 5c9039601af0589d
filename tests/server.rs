//! The HTTP server under abuse: idle and slow clients, oversized and garbage requests, too many
//! requests at once. Throughout, `/metrics` must keep answering.

mod common;

use std::time::{Duration, Instant};

use common::{Exporter, config_for, http_get, raw_exchange, simulator};
use ec2_sim::{Fault, FaultRule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn ready_exporter(extra_args: &[&str]) -> (ec2_sim::RunningSimulator, Exporter) {
    let running = simulator(2, 3, Duration::from_secs(60)).await;
    let config = config_for(&running.sim.image_ids(), "poll_interval: 1h");
    let exporter = Exporter::start_with(&config, &running.endpoint_url(), extra_args);
    exporter.wait_ready().await;
    (running, exporter)
}

/// Scrapes until one succeeds, failing the test after `limit`.
async fn scrape_within(exporter: &Exporter, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if exporter.get("/metrics").await.0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "no successful scrape within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_real_http() {
    let (_sim, exporter) = ready_exporter(&[]).await;
    let (status, body) = exporter.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<a href=\"/metrics\">"), "{body}");
    assert_eq!(exporter.get("/-/healthy").await.0, 200);
    assert_eq!(exporter.get("/-/ready").await.0, 200);
    assert_eq!(exporter.get("/nope").await.0, 404);
    assert_eq!(exporter.get("/metrics/../metrics").await.0, 404);
    assert_eq!(exporter.get("/metrics?debug=1").await.0, 200, "a query string does not change the route");
    assert_eq!(common::http_post(exporter.addr, "/metrics").await.0, 405);
    let head = raw_exchange(
        exporter.addr,
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&head);
    assert_eq!(status_of(&head), Some(200));
    assert!(text.to_ascii_lowercase().contains("content-length:"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_scrapers_out() {
    let (_sim, exporter) = ready_exporter(&["--web.max-connections=20", "--web.read-header-timeout=1s"]).await;
    let mut idle = Vec::new();
    for _ in 0..60 {
        if let Ok(stream) = TcpStream::connect(exporter.addr).await {
            idle.push(stream);
        }
    }
    // Connections past the cap are closed at once; the capped ones are cut after the header
    // timeout; either way a scraper gets through within a couple of seconds.
    scrape_within(&exporter, Duration::from_secs(5)).await;
    let mut closed = 0;
    for stream in &mut idle {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "every idle connection was closed by the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_client_is_cut_off() {
    let (_sim, exporter) = ready_exporter(&["--web.read-header-timeout=1s"]).await;
    let mut slow = TcpStream::connect(exporter.addr).await.expect("connect");
    let started = Instant::now();
    let mut cut_off = false;
    for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        // Meanwhile, normal scrapes are served.
        if started.elapsed() < Duration::from_millis(500) {
            assert_eq!(exporter.get("/metrics").await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !cut_off {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
        cut_off = matches!(read, Ok(Ok(_)));
    }
    assert!(cut_off, "the slow client was not disconnected");
    assert!(started.elapsed() < Duration::from_secs(8));
    scrape_within(&exporter, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_requests_are_refused() {
    let (_sim, exporter) = ready_exporter(&[]).await;
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let answer = raw_exchange(exporter.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), Some(431), "{}", String::from_utf8_lossy(&answer));

    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
        b"\x00\xff\xfe\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
    ] {
        let answer = raw_exchange(exporter.addr, garbage, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), Some(400), "{}", String::from_utf8_lossy(&answer));
    }
    let body = format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{}", "b".repeat(100_000));
    let answer = raw_exchange(exporter.addr, body.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), Some(405));
    assert_eq!(http_get(exporter.addr, "/metrics").await.0, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_above_the_limit_get_503() {
    let running = simulator(2, 3, Duration::from_secs(60)).await;
    let config = config_for(
        &running.sim.image_ids(),
        "poll_interval: 1s\naws:\n  attempt_timeout: 20s\n  operation_timeout: 20s\n  max_attempts: 1",
    );
    let exporter =
        Exporter::start_with(&config, &running.endpoint_url(), &["--web.max-requests=1", "--web.enable-lifecycle"]);
    exporter.wait_ready().await;
    // A request whose body never comes holds the only request slot while it is read.
    let mut slow = tokio::net::TcpStream::connect(exporter.addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = exporter.get("/metrics").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Too many concurrent requests"));
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A reload holds no slot, and a hung poll does not hold the reload up: the target's task is
    // stopped and started anew.
    running.sim.add_fault(FaultRule::new(Fault::Latency { millis: 15_000 }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed = config.replace("poll_interval: 1s", "poll_interval: 2s");
    std::fs::write(exporter.config_path(), changed).expect("write");
    let addr = exporter.addr;
    let started = std::time::Instant::now();
    let reload = tokio::spawn(async move { common::http_post(addr, "/-/reload").await });
    let (status, body) = exporter.get("/metrics").await;
    assert_eq!(status, 200, "a scrape beside the reload: {body}");
    let (status, body) = reload.await.expect("joins");
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "the reload did not wait for the hung poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_gets_gzipped_openmetrics_and_others_text() {
    use std::io::Read as _;
    let (_sim, exporter) = ready_exporter(&[]).await;
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(exporter.addr, request.as_bytes(), Duration::from_secs(5)).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut body = String::new();
    flate2::read::GzDecoder::new(&raw[split..]).read_to_string(&mut body).expect("one gzip member");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE ami_usage_polls counter\nami_usage_polls_total 1\n"), "{body}");
    assert!(body.contains("ami_usage_resources{"), "{body}");

    let (status, plain) = exporter.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(!plain.contains("# EOF") && plain.contains("# TYPE ami_usage_polls_total counter"), "{plain}");
}
