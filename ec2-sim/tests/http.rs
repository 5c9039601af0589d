//! The simulator over real HTTP on loopback: a hand-written HTTP/1.1 client, so the test sees exactly the bytes
//! the SDK would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ec2_sim::{SimConfig, Simulator, TruthEntry};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn exchange(addr: SocketAddr, request: String) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/ec2/aws4_request, \
         SignedHeaders=host, Signature=deadbeef\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || exchange(addr, request)).await.expect("join")
}

#[tokio::test]
async fn serves_ec2_query_and_admin_endpoints() {
    let running = Simulator::start(SimConfig::default()).await.expect("start");
    let addr = running.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(running.endpoint_url(), format!("http://{addr}"));
    let image = running.sim.image_ids()[0].clone();

    let reply = send(
        addr,
        "POST",
        "/",
        &format!("Action=DescribeImageUsageReports&Version=2016-11-15&ImageId.1={image}&MaxResults=2"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/xml;charset=UTF-8"));
    let request_id = reply.header("x-amzn-requestid").expect("request id header").to_string();
    assert!(reply.body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeImageUsageReportsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"));
    assert!(reply.body.contains(&format!("<requestId>{request_id}</requestId>")));
    assert_eq!(reply.body.matches("<reportId>").count(), 2);
    assert!(reply.body.contains("<nextToken>"));
    assert!(reply.body.trim_end().ends_with("</DescribeImageUsageReportsResponse>"));

    let reply = send(addr, "POST", "/", "Action=CreateImageUsageReport&Version=2016-11-15&ImageId=ami-bad").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("content-type"), Some("text/xml;charset=UTF-8"));
    let rid = reply.header("x-amzn-requestid").expect("request id on errors too").to_string();
    assert!(reply.body.contains("<Code>InvalidAMIID.Malformed</Code>"));
    assert!(reply.body.contains(&format!("<RequestID>{rid}</RequestID>")));

    let reply = send(addr, "GET", "/_sim/healthy", "").await;
    assert_eq!(reply.status, 200);
    let reply = send(addr, "GET", "/_sim/requests", "").await;
    assert_eq!(reply.body, r#"{"CreateImageUsageReport":1,"DescribeImageUsageReports":1}"#);
    let reply = send(addr, "GET", "/_sim/ground-truth", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let truth: Vec<TruthEntry> = serde_json::from_str(&reply.body).expect("ground truth JSON");
    assert_eq!(truth, running.sim.ground_truth());
    assert!(reply.body.contains("\"report_creation_time\":\"20"));

    let created = send(
        addr,
        "POST",
        "/",
        &format!("Action=CreateImageUsageReport&Version=2016-11-15&ImageId={image}&ResourceType.1.ResourceType=ec2%3AInstance"),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let reply = send(addr, "POST", "/_sim/complete-pending", "").await;
    assert_eq!(reply.body, r#"{"completed":1}"#);

    assert_eq!(send(addr, "GET", "/_sim/nope", "").await.status, 404);
    assert_eq!(send(addr, "GET", "/favicon.ico", "").await.status, 404);

    running.shutdown().await;
    let refused = tokio::task::spawn_blocking(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)))
        .await
        .expect("join");
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let running = Simulator::start(SimConfig::default()).await.expect("start");
    let addr = running.addr();
    assert_eq!(send(addr, "GET", "/_sim/healthy", "").await.status, 200);
    drop(running);
    let mut closed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let attempt =
            tokio::task::spawn_blocking(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
                .await
                .expect("join");
        if attempt.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "server still accepting after drop");
}

#[cfg(unix)]
/// The binary prints its address on stdout (flushed, so a pipe sees it at once) and stops on SIGTERM.
#[test]
fn binary_announces_its_address_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ec2-sim"))
        .args(["--listen", "127.0.0.1:0", "--seed", "3", "--images", "2", "--pending-for", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ec2-sim");
    let mut stdout = child.stdout.take().expect("stdout");
    // Read byte by byte up to the newline: the process keeps running, so read_to_end would block.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 200 && stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("utf-8");
    let url = line.strip_prefix("ec2-sim listening on http://").unwrap_or_else(|| {
        let _ = child.kill();
        panic!("unexpected first line {line:?}")
    });
    let addr: SocketAddr = url.parse().expect("address");
    let reply = exchange(
        addr,
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 43\r\n\r\nAction=DescribeImages&Version=2016-11-15&a=".to_string(),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.matches("<imageId>").count(), 2);

    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    for _ in 0..200 {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(exit.success(), "exit status {exit:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ec2-sim did not stop on SIGTERM");
}

/// The README's `cargo run -p ec2-sim -- --help`: the binary describes its options and exits 0,
/// without starting a server.
#[test]
fn the_binary_help_lists_its_options() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_ec2-sim")).arg("--help").stdin(Stdio::null()).output().expect("run ec2-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Usage: ec2-sim"), "{stdout}");
    for option in ["--listen", "--seed", "--images", "--accounts", "--pending-for", "--role", "--fault", "--version"] {
        assert!(stdout.contains(option), "--help does not describe {option}:\n{stdout}");
    }
}
