//! Several owner accounts over real HTTP on loopback, with a hand-written HTTP/1.1 client: STS `AssumeRole` on the
//! EC2 port, attribution of EC2 requests by the access key of their `Authorization` header, DryRun in front of and
//! behind the fault layer, the admin endpoints, and the binary's `--owner` and `--role`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ec2_sim::{DatasetSpec, RoleSpec, SimConfig, Simulator, TruthEntry};

const A: &str = "111111111111";
const B: &str = "222222222222";
const ROLE_B: &str = "arn:aws:iam::222222222222:role/ami-usage";
const EXTERNAL_ID: &str = "ext-123";
const BASE_KEY: &str = "AKIDEXAMPLE";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn texts(&self, tag: &str) -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut out = Vec::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find(&open) {
            let after = &rest[i + open.len()..];
            let Some(j) = after.find(&close) else { break };
            out.push(after[..j].to_string());
            rest = &after[j + close.len()..];
        }
        out
    }

    fn text(&self, tag: &str) -> String {
        self.texts(tag).pop().unwrap_or_default()
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

/// `signed`: (access key, Region, service) for a SigV4 `Authorization` header; the signature is never checked.
async fn send(addr: SocketAddr, method: &str, path: &str, signed: Option<(&str, &str, &str)>, body: &str) -> Reply {
    let authorization = signed.map_or(String::new(), |(key, region, service)| {
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={key}/20261126/{region}/{service}/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=0123456789abcdef\r\n"
        )
    });
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || exchange(addr, request)).await.expect("join")
}

async fn ec2(addr: SocketAddr, key: &str, region: &str, params: &str) -> Reply {
    send(addr, "POST", "/", Some((key, region, "ec2")), &format!("Version=2016-11-15&{params}")).await
}

async fn assume_role(addr: SocketAddr, role: &str, external_id: Option<&str>) -> Reply {
    let mut body = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=exporter&DurationSeconds=3600",
        role.replace(':', "%3A").replace('/', "%2F")
    );
    if let Some(id) = external_id {
        body.push_str(&format!("&ExternalId={id}"));
    }
    send(addr, "POST", "/", Some((BASE_KEY, "us-east-1", "sts")), &body).await
}

fn config() -> SimConfig {
    let dataset = DatasetSpec::default();
    SimConfig {
        extra_owners: vec![dataset.for_owner(B)],
        roles: vec![RoleSpec::new(ROLE_B).with_external_id(EXTERNAL_ID)],
        dataset,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn assume_role_over_http_then_ec2_as_the_role_account() {
    let running = Simulator::start(config()).await.expect("start");
    let addr = running.addr();

    let granted = assume_role(addr, ROLE_B, Some(EXTERNAL_ID)).await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert_eq!(granted.header("content-type"), Some("text/xml"));
    assert_eq!(granted.header("server"), None, "STS does not call itself AmazonEC2");
    let request_id = granted.header("x-amzn-requestid").expect("request id header").to_string();
    assert!(granted.body.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n    <AssumeRoleResult>\n        <AssumedRoleUser>\n"
    ));
    assert!(granted.body.trim_end().ends_with(&format!(
        "</AssumeRoleResult>\n    <ResponseMetadata>\n        <RequestId>{request_id}</RequestId>\n    </ResponseMetadata>\n</AssumeRoleResponse>"
    )));
    assert_eq!(granted.text("Arn"), "arn:aws:sts::222222222222:assumed-role/ami-usage/exporter");
    let key = granted.text("AccessKeyId");
    assert!(key.starts_with("ASIA") && key.len() == 20);

    // EC2 with the issued key sees B; with any other key, A. The Region is taken from the credential scope.
    let as_b = ec2(addr, &key, "eu-central-1", "Action=DescribeImages&Owner.1=self").await;
    assert_eq!(as_b.status, 200, "{}", as_b.body);
    assert_eq!(as_b.texts("imageId"), running.sim.image_ids_of(B));
    assert!(as_b.texts("imageOwnerId").iter().all(|o| o == B));
    let as_a = ec2(addr, BASE_KEY, "eu-central-1", "Action=DescribeImages&Owner.1=self").await;
    assert_eq!(as_a.texts("imageId"), running.sim.image_ids());
    let a_report = running.sim.ground_truth()[0].report_id.clone();
    let foreign =
        ec2(addr, &key, "eu-central-1", &format!("Action=DescribeImageUsageReportEntries&ReportId.1={a_report}")).await;
    assert_eq!((foreign.status, foreign.text("Code").as_str()), (400, "InvalidParameterValue"));

    // Refusals in STS's envelope, with the request ID in header and body.
    for external_id in [None, Some("wrong-id")] {
        let denied = assume_role(addr, ROLE_B, external_id).await;
        assert_eq!(denied.status, 403, "{}", denied.body);
        let request_id = denied.header("x-amzn-requestid").expect("request id header").to_string();
        assert_eq!(
            denied.body,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n    \
                 <Error>\n        <Type>Sender</Type>\n        <Code>AccessDenied</Code>\n        <Message>User: \
                 arn:aws:iam::111111111111:user/x is not authorized to perform: sts:AssumeRole on resource: {ROLE_B}</Message>\n    \
                 </Error>\n    <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
            )
        );
    }
    let unknown = assume_role(addr, "arn:aws:iam::222222222222:role/nope", Some(EXTERNAL_ID)).await;
    assert_eq!((unknown.status, unknown.text("Code").as_str()), (403, "AccessDenied"));
    let malformed = send(addr, "POST", "/", None, "Action=AssumeRole&Version=2011-06-15&RoleSessionName=x1").await;
    assert_eq!((malformed.status, malformed.text("Code").as_str()), (400, "ValidationError"));

    // The admin endpoints know about owners, Regions and AssumeRole calls.
    let owners = send(addr, "GET", "/_sim/owners", None, "").await;
    assert_eq!(owners.body, format!(r#"["{A}","{B}"]"#));
    let truth = send(addr, "GET", &format!("/_sim/ground-truth?owner={B}"), None, "").await;
    let truth: Vec<TruthEntry> = serde_json::from_str(&truth.body).expect("ground truth JSON");
    assert_eq!(truth, running.sim.ground_truth_of(B));
    assert_eq!(send(addr, "GET", "/_sim/ground-truth?owner=999999999999", None, "").await.status, 404);
    let calls = send(addr, "GET", "/_sim/assume-role-calls", None, "").await;
    let calls: serde_json::Value = serde_json::from_str(&calls.body).expect("JSON");
    assert_eq!(calls.as_array().map(Vec::len), Some(4), "the malformed request is not a call");
    assert_eq!(
        calls[0],
        serde_json::json!({ "role_arn": ROLE_B, "external_id": EXTERNAL_ID, "session_name": "exporter" })
    );
    assert_eq!(calls[1]["external_id"], serde_json::Value::Null);
    let by = send(addr, "GET", "/_sim/requests-by", None, "").await;
    let by: serde_json::Value = serde_json::from_str(&by.body).expect("JSON");
    let rows = by.as_array().expect("array");
    let count = |account: &str, region: &str, action: &str| {
        rows.iter()
            .find(|r| r["account"] == account && r["region"] == region && r["action"] == action)
            .and_then(|r| r["count"].as_u64())
    };
    assert_eq!(count(A, "us-east-1", "AssumeRole"), Some(4));
    assert_eq!(count(A, "(none)", "AssumeRole"), Some(1));
    assert_eq!(count(B, "eu-central-1", "DescribeImages"), Some(1));
    assert_eq!(count(B, "eu-central-1", "DescribeImageUsageReportEntries"), Some(1));
    assert_eq!(count(A, "eu-central-1", "DescribeImages"), Some(1));
    assert_eq!(rows.len(), 5);
    running.shutdown().await;
}

/// DryRun on each operation answers 412 after validation; the `unauthorized` fault answers 403 even then, which is
/// what a permission preflight sees without the permission.
#[tokio::test]
async fn dry_run_and_the_permission_preflight_over_http() {
    let running = Simulator::start(config()).await.expect("start");
    let addr = running.addr();
    let key = assume_role(addr, ROLE_B, Some(EXTERNAL_ID)).await.text("AccessKeyId");
    let image = running.sim.image_ids_of(B)[0].clone();
    let report = running.sim.ground_truth_of(B)[0].report_id.clone();
    // Each operation: a valid request, and one that fails validation.
    let requests = [
        (
            format!("Action=DescribeImageUsageReports&ImageId.1={image}"),
            "Action=DescribeImageUsageReports&MaxResults=0",
        ),
        (
            format!("Action=DescribeImageUsageReportEntries&ReportId.1={report}"),
            "Action=DescribeImageUsageReportEntries&ImageId.1=ami-x",
        ),
        (
            format!("Action=CreateImageUsageReport&ImageId={image}&ResourceType.1.ResourceType=ec2%3AInstance"),
            "Action=CreateImageUsageReport&ImageId=ami-x&ResourceType.1.ResourceType=ec2%3AInstance",
        ),
        (format!("Action=DeleteImageUsageReport&ReportId={report}"), "Action=DeleteImageUsageReport"),
        (
            "Action=DescribeImages&Owner.1=self".to_string(),
            "Action=DescribeImages&Filter.1.Name=nope&Filter.1.Value.1=x",
        ),
    ];
    let before = running.sim.reports_of(B);
    for (request, invalid) in &requests {
        let reply = ec2(addr, &key, "us-west-2", &format!("{request}&DryRun=true")).await;
        assert_eq!((reply.status, reply.text("Code").as_str()), (412, "DryRunOperation"), "{request}");
        assert_eq!(reply.text("Message"), "Request would have succeeded, but DryRun flag is set.");
        let reply = ec2(addr, &key, "us-west-2", &format!("{invalid}&DryRun=true")).await;
        assert_eq!(reply.status, 400, "{invalid}: validation comes first");
    }
    assert_eq!(running.sim.reports_of(B), before, "dry runs change nothing");

    let rules = r#"[{"fault":{"kind":"unauthorized"}}]"#;
    assert_eq!(send(addr, "PUT", "/_sim/faults", None, rules).await.status, 200);
    for (request, _) in &requests {
        let reply = ec2(addr, &key, "us-west-2", &format!("{request}&DryRun=true")).await;
        assert_eq!((reply.status, reply.text("Code").as_str()), (403, "UnauthorizedOperation"), "{request}");
        let action = request.split('&').next().and_then(|a| a.strip_prefix("Action=")).unwrap_or_default();
        assert!(reply.text("Message").ends_with(&format!("ec2:{action}")));
        assert!(reply.text("Message").contains("arn:aws:sts::222222222222:assumed-role/ami-usage/exporter"));
    }
    // STS is not an EC2 operation: a rule for every operation does not refuse it.
    assert_eq!(assume_role(addr, ROLE_B, Some(EXTERNAL_ID)).await.status, 200);
    running.shutdown().await;
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line of stdout, read byte by byte: the process keeps running, so read_to_end would block.
fn announced_addr(child: &mut std::process::Child) -> SocketAddr {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 200 && stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("utf-8");
    line.strip_prefix("ec2-sim listening on http://").expect("announcement").parse().expect("address")
}

#[tokio::test]
async fn binary_serves_extra_owners_and_roles() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_ec2-sim"))
            .args(["--seed", "3", "--images", "2", "--owner", B, "--owner", "333333333333"])
            .args(["--role", &format!("{ROLE_B},{EXTERNAL_ID}"), "--role", "arn:aws:iam::333333333333:role/r"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ec2-sim"),
    );
    let addr = announced_addr(&mut child.0);
    let owners = send(addr, "GET", "/_sim/owners", None, "").await;
    assert_eq!(owners.body, format!(r#"["{A}","{B}","333333333333"]"#));
    assert_eq!(assume_role(addr, ROLE_B, None).await.status, 403, "the external ID is required");
    let key = assume_role(addr, ROLE_B, Some(EXTERNAL_ID)).await.text("AccessKeyId");
    let as_b = ec2(addr, &key, "us-east-1", "Action=DescribeImages").await;
    let as_a = ec2(addr, BASE_KEY, "us-east-1", "Action=DescribeImages").await;
    assert_eq!(as_b.texts("imageId").len(), 2, "the same sizes as the primary dataset");
    assert!(as_b.texts("imageOwnerId").iter().all(|o| o == B));
    assert!(as_b.texts("imageId").iter().all(|i| !as_a.texts("imageId").contains(i)));
    drop(child);

    for bad in [
        vec!["--role", "arn:aws:iam::2222:role/x"],
        vec!["--role", &format!("{ROLE_B},")],
        vec!["--owner", "12345"],
        vec!["--owner", A],
        vec!["--role", ROLE_B, "--role", ROLE_B],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_ec2-sim"))
            .args(&bad)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ec2-sim");
        assert_eq!(status.code(), Some(2), "{bad:?}");
    }
}
