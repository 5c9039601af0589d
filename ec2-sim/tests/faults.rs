//! Fault injection over real HTTP on loopback, with a hand-written client that records exactly the bytes that
//! arrive before the connection ends, so broken connections and bodies can be checked as a client sees them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ec2_sim::{Fault, FaultRule, RunningSimulator, SimConfig, Simulator};

const REPORTS: &str = "DescribeImageUsageReports";
const ENTRIES: &str = "DescribeImageUsageReportEntries";

/// Everything the server sent until it closed the connection (or reset it, or 10 s passed).
fn exchange_raw(addr: SocketAddr, request: String) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length").and_then(|v| v.parse().ok()).expect("content-length")
    }

    fn texts(&self, tag: &str) -> Vec<String> {
        texts(&self.body, tag)
    }

    fn code(&self) -> String {
        self.texts("Code").pop().unwrap_or_default()
    }
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8(raw.to_vec()).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

fn texts(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

async fn send_raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> Vec<u8> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || exchange_raw(addr, request)).await.expect("join")
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    parse(&send_raw(addr, method, path, body).await)
}

/// An EC2 Query call: `Action=…&Version=…` plus `params` (already URL-encoded where needed).
async fn ec2(addr: SocketAddr, action: &str, params: &str) -> Reply {
    send(addr, "POST", "/", &ec2_body(action, params)).await
}

fn ec2_body(action: &str, params: &str) -> String {
    let mut body = format!("Action={action}&Version=2016-11-15");
    if !params.is_empty() {
        body.push('&');
        body.push_str(params);
    }
    body
}

async fn start(rules: Vec<FaultRule>) -> RunningSimulator {
    Simulator::start(SimConfig { faults: rules, ..SimConfig::default() }).await.expect("start")
}

/// A refused request: the status, the EC2 error envelope, the request ID in header and body, nothing done.
async fn assert_refusal(fault: Fault, status: u16, code: &str, message: &str) {
    let running = start(vec![FaultRule::new(fault.clone()).on(REPORTS)]).await;
    let reply = ec2(running.addr(), REPORTS, "MaxResults=2").await;
    assert_eq!(reply.status, status, "{fault:?}: {}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/xml;charset=UTF-8"));
    let request_id = reply.header("x-amzn-requestid").expect("request id header").to_string();
    let expected = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n    <Errors>\n        <Error>\n            \
         <Code>{code}</Code>\n            <Message>{message}</Message>\n        </Error>\n    </Errors>\n    \
         <RequestID>{request_id}</RequestID>\n</Response>\n"
    );
    assert_eq!(reply.body, expected);
    assert_eq!(reply.content_length(), reply.body.len());
    // Other operations are unaffected, and the refused request was counted.
    assert_eq!(ec2(running.addr(), "DescribeImages", "").await.status, 200);
    assert_eq!(running.sim.request_counts().get(REPORTS), Some(&1));
    assert_eq!(running.sim.fault_hits().get(fault.kind()), Some(&1));
    running.shutdown().await;
}

#[tokio::test]
async fn throttle_is_503_request_limit_exceeded() {
    assert_refusal(Fault::Throttle, 503, "RequestLimitExceeded", "Request limit exceeded.").await;
}

#[tokio::test]
async fn internal_error_is_500() {
    assert_refusal(Fault::InternalError, 500, "InternalError", "An internal error has occurred.").await;
}

#[tokio::test]
async fn unauthorized_is_403_naming_the_action() {
    let message = "You are not authorized to perform this operation. User: arn:aws:iam::111111111111:user/x is not \
                   authorized to perform: ec2:DescribeImageUsageReports";
    assert_refusal(Fault::Unauthorized, 403, "UnauthorizedOperation", message).await;
}

#[tokio::test]
async fn auth_failure_is_401() {
    let message = "AWS was not able to validate the provided access credentials";
    assert_refusal(Fault::AuthFailure, 401, "AuthFailure", message).await;
}

#[tokio::test]
async fn close_connection_sends_nothing() {
    let running = start(vec![FaultRule::new(Fault::CloseConnection).on(REPORTS).with_limit(1)]).await;
    let raw = send_raw(running.addr(), "POST", "/", &ec2_body(REPORTS, "")).await;
    assert!(raw.is_empty(), "got {:?}", String::from_utf8_lossy(&raw));
    // The server is fine afterwards.
    assert_eq!(ec2(running.addr(), REPORTS, "").await.status, 200);
    assert_eq!(running.sim.request_counts().get(REPORTS), Some(&2));
    running.shutdown().await;
}

#[tokio::test]
async fn close_mid_response_sends_half_the_promised_body() {
    let running = start(vec![FaultRule::new(Fault::CloseMidResponse).on(REPORTS).with_limit(1)]).await;
    let reply = parse(&send_raw(running.addr(), "POST", "/", &ec2_body(REPORTS, "")).await);
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-amzn-requestid").is_some());
    let promised = reply.content_length();
    assert!(promised > 1000, "a real body: {promised}");
    assert_eq!(reply.body.len(), promised / 2, "half the body, then the connection closed");
    assert!(reply.body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeImageUsageReportsResponse"));
    let whole = ec2(running.addr(), REPORTS, "").await;
    assert_eq!(whole.body.len(), promised);
    running.shutdown().await;
}

#[tokio::test]
async fn not_xml_is_an_html_page_with_status_200() {
    let running = start(vec![FaultRule::new(Fault::NotXml).on(REPORTS)]).await;
    let reply = ec2(running.addr(), REPORTS, "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert_eq!(reply.body, "<html><body>Service Unavailable</body></html>");
    assert_eq!(reply.content_length(), reply.body.len());
    assert!(reply.header("x-amzn-requestid").is_none());
    running.shutdown().await;
}

#[tokio::test]
async fn truncated_body_is_well_framed_broken_xml() {
    let running = start(vec![FaultRule::new(Fault::TruncatedBody).on(REPORTS).with_limit(1)]).await;
    let cut = ec2(running.addr(), REPORTS, "").await;
    let whole = ec2(running.addr(), REPORTS, "").await;
    assert_eq!(cut.status, 200);
    assert_eq!(cut.content_length(), cut.body.len(), "Content-Length matches what is sent");
    assert_eq!(cut.body.len(), whole.body.len() / 2);
    assert!(!cut.body.contains("</DescribeImageUsageReportsResponse>"));
    assert!(whole.body.contains("</DescribeImageUsageReportsResponse>"));
    running.shutdown().await;
}

#[tokio::test]
async fn latency_delays_one_answer_without_holding_up_others() {
    let running = start(vec![FaultRule::new(Fault::Latency { millis: 1500 }).on("DescribeImages")]).await;
    let addr = running.addr();
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let reply = ec2(addr, "DescribeImages", "").await;
        (reply, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fast_started = Instant::now();
    let fast = ec2(addr, REPORTS, "").await;
    let fast_took = fast_started.elapsed();
    assert_eq!(fast.status, 200);
    assert!(!slow.is_finished(), "the delayed request is still waiting");
    assert!(fast_took < Duration::from_millis(1000), "not held up: {fast_took:?}");
    let (reply, took) = slow.await.expect("join");
    assert_eq!(reply.status, 200, "answered normally after the delay");
    assert_eq!(reply.texts("imageId").len(), 5);
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(running.sim.fault_hits().get("latency"), Some(&1));
    running.shutdown().await;
}

#[tokio::test]
async fn repeat_token_loops_a_blind_client() {
    let running = start(vec![FaultRule::new(Fault::RepeatToken).on(ENTRIES)]).await;
    let first = ec2(running.addr(), ENTRIES, "MaxResults=3").await;
    let token = first.texts("nextToken").pop().expect("token");
    let mut seen = Vec::new();
    for _ in 0..5 {
        let next = ec2(running.addr(), ENTRIES, &format!("MaxResults=3&NextToken={token}")).await;
        assert_eq!(next.status, 200);
        seen.push(next.texts("nextToken").pop().expect("token"));
    }
    assert!(seen.iter().all(|t| *t == token), "{seen:?}");
    running.shutdown().await;
}

#[tokio::test]
async fn missing_fields_drop_usage_count_and_account_id() {
    let running = start(vec![FaultRule::new(Fault::MissingFields).on(ENTRIES)]).await;
    let reply = ec2(running.addr(), ENTRIES, "MaxResults=4").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.texts("resourceType").len(), 4);
    assert_eq!(reply.texts("usageCount").len(), 2);
    assert_eq!(reply.texts("accountId").len(), 2);
    assert_eq!(reply.content_length(), reply.body.len());
    running.shutdown().await;
}

#[tokio::test]
async fn usage_count_is_replaced() {
    let running = start(vec![FaultRule::new(Fault::UsageCount { value: i64::MAX }).on(ENTRIES)]).await;
    let reply = ec2(running.addr(), ENTRIES, "MaxResults=4").await;
    assert_eq!(reply.texts("usageCount"), vec![i64::MAX.to_string(); 4]);
    running.sim.set_faults(vec![FaultRule::new(Fault::UsageCount { value: -3 })]);
    let reply = ec2(running.addr(), ENTRIES, "MaxResults=4").await;
    assert_eq!(reply.texts("usageCount"), vec!["-3"; 4]);
    running.shutdown().await;
}

#[tokio::test]
async fn duplicate_entries_across_and_within_pages() {
    let running = start(vec![FaultRule::new(Fault::DuplicateEntries).on(ENTRIES).with_limit(1)]).await;
    let image = running.sim.image_ids()[0].clone();
    let first = ec2(running.addr(), ENTRIES, &format!("ImageId.1={image}&MaxResults=2")).await;
    let token = first.texts("nextToken").pop().expect("token");
    let second = ec2(running.addr(), ENTRIES, &format!("ImageId.1={image}&MaxResults=2&NextToken={token}")).await;
    assert_eq!(second.texts("accountId").len(), 4, "the first page's 2 entries, then 2 new ones");
    assert_eq!(second.texts("accountId")[..2], first.texts("accountId")[..]);
    assert_eq!(second.texts("resourceType")[..2], first.texts("resourceType")[..]);

    running.sim.set_faults(vec![FaultRule::new(Fault::DuplicateEntries)]);
    let clean_count = running.sim.ground_truth().len();
    let all = ec2(running.addr(), ENTRIES, &format!("MaxResults={}", clean_count * 10)).await;
    let reports = all.texts("reportId");
    let half = reports.len() / 2;
    assert!(all.texts("nextToken").is_empty());
    assert_eq!(reports[..half], reports[half..], "the single page lists everything twice");
    running.shutdown().await;
}

#[tokio::test]
async fn expire_between_pages_answers_the_next_page_with_unknown_report() {
    let running = start(vec![FaultRule::new(Fault::ExpireBetweenPages).on(REPORTS).with_limit(1)]).await;
    let image = running.sim.image_ids()[0].clone();
    let first = ec2(running.addr(), REPORTS, &format!("ImageId.1={image}&MaxResults=1")).await;
    let token = first.texts("nextToken").pop().expect("token");
    let gone = first.texts("reportId").pop().expect("a report");
    assert!(running.sim.reports().iter().all(|r| r.id != gone));
    let next = ec2(running.addr(), REPORTS, &format!("ImageId.1={image}&MaxResults=1&NextToken={token}")).await;
    assert_eq!((next.status, next.code().as_str()), (400, "InvalidParameterValue"));
    assert_eq!(next.texts("Message"), vec![format!("The report ID &apos;{gone}&apos; does not exist or has expired.")]);
    running.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_three_throttles_then_normal_answers() {
    let running = start(vec![FaultRule::new(Fault::Throttle).on(REPORTS).with_limit(3)]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(ec2(running.addr(), REPORTS, "").await.status);
    }
    assert_eq!(statuses, [503, 503, 503, 200, 200]);
    assert_eq!(running.sim.request_counts().get(REPORTS), Some(&5), "throttled requests count");
    let times = running.sim.request_times(REPORTS);
    assert_eq!(times.len(), 5);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(running.sim.faults()[0].limit, Some(0));
    running.shutdown().await;
}

#[tokio::test]
async fn share_half_throttles_exactly_50_of_100() {
    let rule = FaultRule::new(Fault::Throttle).on("DescribeImages").with_share(0.5);
    let running = start(vec![rule]).await;
    let mut throttled = Vec::new();
    for _ in 0..100 {
        throttled.push(ec2(running.addr(), "DescribeImages", "").await.status == 503);
    }
    assert_eq!(throttled.iter().filter(|t| **t).count(), 50);
    assert!(throttled.windows(2).all(|w| w[0] != w[1]));
    assert_eq!(running.sim.fault_hits().get("throttle"), Some(&50));
    running.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_switch_faults_at_run_time() {
    let running = start(vec![]).await;
    let addr = running.addr();
    let reply = send(addr, "GET", "/_sim/faults", "").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "[]"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(ec2(addr, REPORTS, "").await.status, 200);

    let rules = r#"[{"operation":"DescribeImageUsageReports","fault":{"kind":"throttle"},"share":1.0,"limit":null},
                    {"fault":{"kind":"internal_error"},"limit":2}]"#;
    let reply = send(addr, "PUT", "/_sim/faults", rules).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let installed: Vec<FaultRule> = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(
        installed,
        vec![FaultRule::new(Fault::Throttle).on(REPORTS), FaultRule::new(Fault::InternalError).with_limit(2)]
    );
    assert_eq!(ec2(addr, REPORTS, "").await.status, 503, "the very next request");
    assert_eq!(ec2(addr, "DescribeImages", "").await.status, 500);
    let listed: Vec<FaultRule> = serde_json::from_str(&send(addr, "GET", "/_sim/faults", "").await.body).unwrap();
    assert_eq!(listed[1].limit, Some(1), "what is left of the limit");
    let hits = send(addr, "GET", "/_sim/fault-hits", "").await;
    assert_eq!(hits.body, r#"{"internal_error":1,"throttle":1}"#);

    for bad in ["{", r#"{"fault":{"kind":"throttle"}}"#, r#"[{"fault":{"kind":"throttle"},"share":2}]"#] {
        let reply = send(addr, "PUT", "/_sim/faults", bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    assert_eq!(running.sim.faults().len(), 2, "a refused PUT changes nothing");

    let reply = send(addr, "DELETE", "/_sim/faults", "").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "[]"));
    assert_eq!(ec2(addr, REPORTS, "").await.status, 200, "the very next request");
    assert_eq!(send(addr, "POST", "/_sim/faults", "[]").await.status, 404);
    let counts = send(addr, "GET", "/_sim/requests", "").await;
    assert_eq!(counts.body, r#"{"DescribeImageUsageReports":3,"DescribeImages":1}"#);
    running.shutdown().await;
}

#[cfg(unix)]
#[test]
fn binary_takes_fault_rules_as_json() {
    let rule = r#"{"operation":"DescribeImages","fault":{"kind":"throttle"},"share":1.0,"limit":1}"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ec2-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--images",
            "2",
            "--fault",
            rule,
            "--fault",
            r#"{"fault":{"kind":"not_xml"},"operation":"X"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ec2-sim");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 200 && stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("utf-8");
    let Some(addr) = line.strip_prefix("ec2-sim listening on http://").and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("unexpected first line {line:?}");
    };
    let request = |body: &str| {
        format!("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let first = parse(&exchange_raw(addr, request("Action=DescribeImages")));
    let second = parse(&exchange_raw(addr, request("Action=DescribeImages")));
    let faults = parse(&exchange_raw(addr, "GET /_sim/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first.status, 503);
    assert_eq!(first.code(), "RequestLimitExceeded");
    assert_eq!(second.status, 200);
    let rules: Vec<FaultRule> = serde_json::from_str(&faults.body).expect("JSON");
    assert_eq!(rules[0].limit, Some(0));
    assert_eq!(rules[1], FaultRule::new(Fault::NotXml).on("X"));

    for bad in ["{", r#"{"fault":{"kind":"throttle"},"share":-0.5}"#] {
        let out = Command::new(env!("CARGO_BIN_EXE_ec2-sim"))
            .args(["--listen", "127.0.0.1:0", "--fault", bad])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run ec2-sim");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--fault"), "{bad}");
    }
}
