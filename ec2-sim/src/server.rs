//! HTTP/1.1 around the simulator: the EC2 and STS Query endpoint at `/`, and admin endpoints under `/_sim/` for
//! users in other processes (benchmarks, the demo) that cannot call `Simulator` methods.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::api::Service;
use crate::body::SimBody;
use crate::error::Ec2Error;
use crate::fault::{Delivery, FaultRule};
use crate::running::RunningSimulator;
use crate::sim::Simulator;
use crate::{SimConfig, xml};

/// How many reports exist, by state and per image: what a benchmark checks to see that a client
/// does not let reports pile up.
fn report_counts(reports: &[crate::model::ReportView]) -> serde_json::Value {
    let mut by_state: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut per_image: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for report in reports {
        *by_state.entry(report.state.as_str()).or_default() += 1;
        *per_image.entry(report.image_id.as_str()).or_default() += 1;
    }
    serde_json::json!({
        "reports": reports.len(),
        "by_state": by_state,
        "images": per_image.len(),
        "max_per_image": per_image.values().max().copied().unwrap_or(0),
    })
}

/// EC2 Query bodies are small; anything larger is a client bug or abuse, not something to buffer.
const MAX_BODY_BYTES: usize = 1 << 20;
/// How long shutdown waits for in-flight requests before dropping connections.
const GRACE: Duration = Duration::from_secs(5);

type Body = SimBody;

/// The service's error: hyper closes the connection without writing a response (the `CloseConnection` fault).
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

impl Simulator {
    /// Serve on an already bound listener until `shutdown` resolves (graceful).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let sim = self.clone();
                        let service = service_fn(move |req| {
                            let sim = sim.clone();
                            async move { route(&sim, req).await }
                        });
                        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            if let Err(err) = conn.await {
                                tracing::debug!(%peer, %err, "connection ended with an error");
                            }
                        });
                    }
                    // Per-connection failures (reset before accept, fd exhaustion) must not stop the server.
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("connections still open after the grace period; dropping them");
        }
        Ok(())
    }

    /// Bind 127.0.0.1:0, spawn `serve` on the current tokio runtime, return a handle.
    pub async fn start(config: SimConfig) -> io::Result<RunningSimulator> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like `start`, on a given address.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        RunningSimulator::spawn(Simulator::new(config), listener)
    }
}

async fn route(sim: &Simulator, req: Request<Incoming>) -> Result<Response<Body>, DropConnection> {
    let path = req.uri().path().to_string();
    let authorization = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = authorization.as_deref();
    let response = match (req.method().clone(), path.as_str()) {
        (Method::POST, "/") => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(err) => {
                    let err =
                        Ec2Error::new(413, "RequestEntityTooLarge", format!("Could not read the request body: {err}"));
                    return Ok(xml_response(
                        err.status,
                        xml::error_body(&err, "00000000-0000-0000-0000-000000000000"),
                        None,
                        Service::Ec2,
                    ));
                }
            };
            return query(sim, &body, authorization).await;
        }
        // EC2 also accepts the Query protocol as a GET with the parameters in the URL.
        (Method::GET, "/") if req.uri().query().is_some() => {
            let q = req.uri().query().unwrap_or("").as_bytes().to_vec();
            return query(sim, &q, authorization).await;
        }
        (Method::GET, "/_sim/ground-truth") => ground_truth(sim, req.uri().query()),
        (Method::GET, "/_sim/owners") => json(StatusCode::OK, &sim.owners()),
        (Method::GET, "/_sim/report-counts") => json(StatusCode::OK, &report_counts(&sim.reports())),
        (Method::GET, "/_sim/requests") => json(StatusCode::OK, &sim.request_counts()),
        (Method::GET, "/_sim/requests-by") => {
            let rows: Vec<serde_json::Value> = sim
                .request_counts_by()
                .into_iter()
                .map(|((account, region, action), count)| {
                    serde_json::json!({ "account": account, "region": region, "action": action, "count": count })
                })
                .collect();
            json(StatusCode::OK, &rows)
        }
        (Method::GET, "/_sim/assume-role-calls") => {
            let rows: Vec<serde_json::Value> = sim
                .assume_role_calls()
                .into_iter()
                .map(|(role_arn, external_id, session_name)| {
                    serde_json::json!({ "role_arn": role_arn, "external_id": external_id, "session_name": session_name })
                })
                .collect();
            json(StatusCode::OK, &rows)
        }
        (Method::POST, "/_sim/complete-pending") => {
            json(StatusCode::OK, &serde_json::json!({ "completed": sim.complete_pending_count() }))
        }
        (Method::GET, "/_sim/healthy") => json(StatusCode::OK, &serde_json::json!({ "healthy": true })),
        (Method::GET, "/_sim/faults") => json(StatusCode::OK, &sim.faults()),
        (Method::PUT, "/_sim/faults") => put_faults(sim, req).await,
        (Method::DELETE, "/_sim/faults") => {
            sim.clear_faults();
            json(StatusCode::OK, &sim.faults())
        }
        (Method::GET, "/_sim/fault-hits") => json(StatusCode::OK, &sim.fault_hits()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// `?owner=ACCOUNT` for another owner than the primary one; an unknown owner gets 404.
fn ground_truth(sim: &Simulator, query: Option<&str>) -> Response<Body> {
    let owner = form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == "owner").map(|(_, v)| v);
    match owner {
        None => json(StatusCode::OK, &sim.ground_truth()),
        Some(owner) if sim.owners().iter().any(|o| *o == owner) => json(StatusCode::OK, &sim.ground_truth_of(&owner)),
        Some(owner) => text(StatusCode::NOT_FOUND, &format!("{owner} is not an owner account of this simulator\n")),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await?.to_bytes())
}

/// Replaces the fault rules with a JSON array of them; answers with the rules now in force.
async fn put_faults(sim: &Simulator, req: Request<Incoming>) -> Response<Body> {
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(err) => return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("could not read the body: {err}\n")),
    };
    let rules: Vec<FaultRule> = match serde_json::from_slice(&body) {
        Ok(rules) => rules,
        Err(err) => return text(StatusCode::BAD_REQUEST, &format!("expected a JSON array of fault rules: {err}\n")),
    };
    if let Some(err) = rules.iter().find_map(|r| r.validate().err()) {
        return text(StatusCode::BAD_REQUEST, &format!("invalid fault rule: {err}\n"));
    }
    sim.set_faults(rules);
    json(StatusCode::OK, &sim.faults())
}

async fn query(sim: &Simulator, body: &[u8], authorization: Option<&str>) -> Result<Response<Body>, DropConnection> {
    let answer = sim.answer_query(body, authorization).await;
    let response = answer.response;
    tracing::debug!(
        action = %response.action,
        status = response.status,
        request_id = %response.request_id,
        delivery = ?answer.delivery,
        "EC2 request"
    );
    match answer.delivery {
        Delivery::Normal => {
            Ok(xml_response(response.status, response.body, Some(&response.request_id), response.service))
        }
        Delivery::NotXml => {
            let mut resp = text(StatusCode::OK, &response.body);
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            Ok(resp)
        }
        Delivery::Close => Err(DropConnection),
        Delivery::CloseMidResponse => {
            let full = Bytes::from(response.body);
            let half = full.slice(..full.len() / 2);
            let mut resp = xml_response(response.status, String::new(), Some(&response.request_id), response.service);
            *resp.body_mut() = SimBody::aborted_after(half);
            resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(full.len()));
            Ok(resp)
        }
    }
}

fn xml_response(status: u16, body: String, request_id: Option<&str>, service: Service) -> Response<Body> {
    let mut resp = Response::new(SimBody::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    match service {
        Service::Ec2 => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
            headers.insert("server", HeaderValue::from_static("AmazonEC2"));
        }
        Service::Sts => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
        }
    }
    if let Some(Ok(id)) = request_id.map(HeaderValue::from_str) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut resp = Response::new(SimBody::full(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("serialization failed: {err}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(SimBody::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
