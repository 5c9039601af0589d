//! Fault injection: rules that make chosen operations slow, refused, broken on the wire or subtly wrong, so that
//! clients can be tested against the ways EC2 and the network misbehave.
//!
//! The layer sits in front of `api::dispatch`. Every request is first counted and timestamped (`plan`), which also
//! picks the faults that hit it. After any latency, `execute` either refuses the request without running the
//! operation (throttling, server and permission errors, a dropped connection, a non-XML page), or runs it and then
//! mangles the answer (truncated bodies, a connection closed mid-body, repeated tokens, bad entries, reports that
//! expire between pages). Breaking the connection itself is up to the HTTP server, told so by `Delivery`.
//!
//! Selection is deterministic: each rule counts the requests it matches, and takes a share of them by a fixed
//! stride whose phase comes from the dataset seed. So share 0.5 hits exactly every other matching request, and a
//! test run twice sees the same faults on the same requests.

mod mangle;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{self, ApiResponse, Service};
use crate::error::Ec2Error;
use crate::query::Params;
use crate::rng::mix64;
use crate::sigv4::CredentialScope;
use crate::state::{Caller, State};

pub(crate) const ENTRIES: &str = "DescribeImageUsageReportEntries";
pub(crate) const REPORTS: &str = "DescribeImageUsageReports";
const IMAGES: &str = "DescribeImages";
const REFERENCES: &str = "DescribeImageReferences";

/// The body of a `NotXml` answer: what a load balancer or proxy in the way might send.
pub(crate) const NOT_XML_BODY: &str = "<html><body>Service Unavailable</body></html>";

/// Next-page tokens remembered after `ExpireBetweenPages` deleted the reports of their page.
const MAX_EXPIRED_PAGES: usize = 1024;

const DOMAIN_FAULT: u64 = 0x6661_756c_7400_0004;

/// One rule: which operation(s) it applies to, what it does, how often.
///
/// In JSON, `operation`, `share` and `limit` may be left out (every operation, every request, forever):
/// `{"operation":"DescribeImageUsageReports","fault":{"kind":"throttle"},"share":0.5,"limit":null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Action name, e.g. "DescribeImageUsageReports" or "AssumeRole"; None = every EC2 operation (STS's only when
    /// named).
    #[serde(default)]
    pub operation: Option<String>,
    /// Only requests signed for this Region (their credential scope), e.g. "eu-west-1"; None = every Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub fault: Fault,
    /// Share of matching requests affected, 0.0..=1.0. Deterministic: the rule counts the requests it matches and
    /// takes them at a fixed stride (0.5 = exactly every other one) whose phase depends only on the dataset seed.
    /// Values outside the range are clamped when the rule is installed (NaN counts as 0).
    #[serde(default = "full_share")]
    pub share: f64,
    /// Affect at most this many requests, then the rule is spent (a burst); None = forever. `Simulator::faults`
    /// shows what is left; a spent rule stays listed with `Some(0)`.
    #[serde(default)]
    pub limit: Option<u64>,
}

fn full_share() -> f64 {
    1.0
}

/// What a rule does to a request it hits. See README.md ("Faults") for the bytes on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Delay the answer by this much, then answer normally (or as another fault says). Other requests are not held
    /// up. The latencies of several rules hitting one request add up.
    Latency { millis: u64 },
    /// HTTP 503, `RequestLimitExceeded`, "Request limit exceeded." (STS: HTTP 400 `Throttling`). The operation does
    /// not run.
    Throttle,
    /// HTTP 500, `InternalError` (STS: `InternalFailure`). The operation does not run.
    InternalError,
    /// HTTP 403, `UnauthorizedOperation` (STS: `AccessDenied`), naming the caller and the action as IAM would. The
    /// operation does not run, even for a dry run.
    Unauthorized,
    /// HTTP 401, `AuthFailure` (STS: HTTP 403 `InvalidClientTokenId`): the credentials were rejected. The operation
    /// does not run.
    AuthFailure,
    /// The TCP connection is closed without a byte of response. The operation does not run.
    CloseConnection,
    /// The operation runs; the status line and headers go out with the Content-Length of the full body, then half
    /// the body, then the connection is closed.
    CloseMidResponse,
    /// HTTP 200 with an HTML page instead of XML, as from a proxy in the way. The operation does not run.
    NotXml,
    /// The operation runs; its body is cut in half and sent with a Content-Length matching the cut body: a
    /// well-formed HTTP response carrying broken XML.
    TruncatedBody,
    /// Paginated Describe* answers: `nextToken` points back at the page just served, i.e. equals the request's
    /// token, or on a first page is a token for the first page again. A client that follows it blindly while the
    /// rule keeps hitting loops forever.
    RepeatToken,
    /// `DescribeImageUsageReportEntries` answers: even-numbered items (0, 2, …) lose `usageCount`, odd ones lose
    /// `accountId`.
    MissingFields,
    /// `DescribeImageUsageReportEntries` answers: every item's `usageCount` becomes this value.
    UsageCount { value: i64 },
    /// `DescribeImageUsageReportEntries` answers: the page's entries are served again at the start of the next page
    /// (through its `nextToken`), or appear twice on the page when there is no next page.
    DuplicateEntries,
    /// `DescribeImageUsageReports`/`DescribeImageUsageReportEntries` answers with a `nextToken`: the reports on the
    /// page are deleted right after answering, and the request for the next page gets the unknown-report error.
    ExpireBetweenPages,
    /// Paginated Describe* requests that carry a `NextToken`: HTTP 400 `InvalidPaginationToken`, as EC2 answers a
    /// token that expired. First pages (no token) are neither hit nor counted. The operation does not run.
    ExpireToken,
}

impl Fault {
    /// The `kind` tag, also the key of `Simulator::fault_hits`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::Throttle => "throttle",
            Fault::InternalError => "internal_error",
            Fault::Unauthorized => "unauthorized",
            Fault::AuthFailure => "auth_failure",
            Fault::CloseConnection => "close_connection",
            Fault::CloseMidResponse => "close_mid_response",
            Fault::NotXml => "not_xml",
            Fault::TruncatedBody => "truncated_body",
            Fault::RepeatToken => "repeat_token",
            Fault::MissingFields => "missing_fields",
            Fault::UsageCount { .. } => "usage_count",
            Fault::DuplicateEntries => "duplicate_entries",
            Fault::ExpireBetweenPages => "expire_between_pages",
            Fault::ExpireToken => "expire_token",
        }
    }

    /// Whether the fault can apply to this action at all. A rule only counts (for its share) the requests it fits,
    /// so `MissingFields` on every operation means "on every entries request".
    fn fits(&self, action: &str, paged: bool) -> bool {
        match self {
            Fault::ExpireToken => paged && matches!(action, ENTRIES | REPORTS | IMAGES | REFERENCES),
            Fault::RepeatToken => matches!(action, ENTRIES | REPORTS | IMAGES | REFERENCES),
            Fault::MissingFields | Fault::UsageCount { .. } | Fault::DuplicateEntries => action == ENTRIES,
            Fault::ExpireBetweenPages => matches!(action, ENTRIES | REPORTS),
            _ => true,
        }
    }

    /// Whether the request is answered without running its operation.
    fn refuses(&self) -> bool {
        matches!(
            self,
            Fault::Throttle
                | Fault::InternalError
                | Fault::Unauthorized
                | Fault::AuthFailure
                | Fault::CloseConnection
                | Fault::NotXml
                | Fault::ExpireToken
        )
    }

    /// The answer to a request refused before its operation runs, or None for faults that let it run. `principal`
    /// is the caller's ARN, named by the permission error.
    fn refusal(&self, action: &str, principal: &str, service: Service) -> Option<(Ec2Error, Delivery)> {
        let err = match (self, service) {
            (Fault::Throttle, Service::Ec2) => Ec2Error::new(503, "RequestLimitExceeded", "Request limit exceeded."),
            (Fault::Throttle, Service::Sts) => Ec2Error::new(400, "Throttling", "Rate exceeded"),
            (Fault::InternalError, Service::Ec2) => {
                Ec2Error::new(500, "InternalError", "An internal error has occurred.")
            }
            (Fault::InternalError, Service::Sts) => {
                Ec2Error::new(500, "InternalFailure", "The request processing has failed because of an unknown error.")
            }
            (Fault::Unauthorized, Service::Ec2) => Ec2Error::new(
                403,
                "UnauthorizedOperation",
                format!(
                    "You are not authorized to perform this operation. User: {principal} is not authorized to \
                     perform: ec2:{action}"
                ),
            ),
            (Fault::Unauthorized, Service::Sts) => Ec2Error::new(
                403,
                "AccessDenied",
                format!("User: {principal} is not authorized to perform: sts:{action}"),
            ),
            (Fault::AuthFailure, Service::Ec2) => {
                Ec2Error::new(401, "AuthFailure", "AWS was not able to validate the provided access credentials")
            }
            (Fault::AuthFailure, Service::Sts) => {
                Ec2Error::new(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
            }
            // Neither envelope reaches the client (the body is replaced or never sent); they give the log a code.
            (Fault::CloseConnection, _) => {
                return Some((Ec2Error::new(500, "ConnectionClosed", "fault injection"), Delivery::Close));
            }
            (Fault::NotXml, _) => return Some((Ec2Error::new(200, "NotXml", "fault injection"), Delivery::NotXml)),
            (Fault::ExpireToken, _) => Ec2Error::new(
                400,
                "InvalidPaginationToken",
                "The specified pagination token is not valid or has expired.",
            ),
            _ => return None,
        };
        Some((err, Delivery::Normal))
    }
}

impl FaultRule {
    /// A rule for every operation and every request, forever; narrow it with the `on`/`with_*` methods.
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule { operation: None, region: None, fault, share: 1.0, limit: None }
    }

    /// Only requests of this action, e.g. "DescribeImageUsageReportEntries".
    pub fn on(mut self, operation: &str) -> FaultRule {
        self.operation = Some(operation.to_string());
        self
    }

    /// Only requests signed for this Region: one slow or failing Region beside healthy ones.
    pub fn in_region(mut self, region: &str) -> FaultRule {
        self.region = Some(region.to_string());
        self
    }

    pub fn with_share(mut self, share: f64) -> FaultRule {
        self.share = share;
        self
    }

    pub fn with_limit(mut self, limit: u64) -> FaultRule {
        self.limit = Some(limit);
        self
    }

    /// Rejects what `Simulator::add_fault` would silently clamp: a share that is not a number in 0.0..=1.0, or an
    /// empty operation name. The binary and the admin endpoint refuse such rules.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!("share must be between 0.0 and 1.0, got {}", self.share));
        }
        if self.operation.as_deref() == Some("") {
            return Err("operation must be an EC2 action name, or null for every operation".to_string());
        }
        Ok(())
    }

    fn sanitized(mut self) -> FaultRule {
        self.share = if self.share.is_nan() { 0.0 } else { self.share.clamp(0.0, 1.0) };
        self
    }

    /// A rule for every operation covers every EC2 operation; STS's only get the faults of rules that name them.
    fn matches(&self, action: &str, service: Service, region: &str, paged: bool) -> bool {
        let named = match self.operation.as_deref() {
            None => service == Service::Ec2,
            Some(op) => op == action,
        };
        let here = self.region.as_deref().is_none_or(|r| r == region);
        self.limit != Some(0) && named && here && self.fault.fits(action, paged)
    }
}

/// Whether the `n`-th (0-based) matching request is taken at this share: the integer part of `n * share + phase`
/// steps up. Over any `k` consecutive requests that takes `floor` or `ceil` of `k * share`, so 0.5 is exactly
/// every other one. Fixed point with 32 fractional bits, so the outcome does not depend on float rounding.
fn takes(share: f64, n: u64, phase: u64) -> bool {
    let step = (share.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u128;
    let at = |k: u64| (u128::from(k) * step + u128::from(phase)) >> 32;
    at(n.saturating_add(1)) > at(n)
}

#[derive(Debug)]
struct ActiveRule {
    /// Identifies the rule across a latency sleep, during which the rules may be replaced.
    id: u64,
    rule: FaultRule,
    /// Matching requests seen, the counter `share` strides over.
    seen: u64,
}

/// The installed rules, what they have done so far, and what `ExpireBetweenPages` left behind.
#[derive(Debug)]
pub(crate) struct FaultSet {
    rules: Vec<ActiveRule>,
    next_id: u64,
    phase: u64,
    hits: BTreeMap<String, u64>,
    /// (owner account, action, next-page token, a report deleted with its page), newest last.
    expired_pages: VecDeque<(String, String, String, String)>,
}

impl FaultSet {
    pub(crate) fn new(seed: u64, rules: Vec<FaultRule>) -> FaultSet {
        let mut set = FaultSet {
            rules: Vec::new(),
            next_id: 0,
            phase: mix64(seed ^ DOMAIN_FAULT) >> 32,
            hits: BTreeMap::new(),
            expired_pages: VecDeque::new(),
        };
        set.set(rules);
        set
    }

    pub(crate) fn add(&mut self, rule: FaultRule) {
        self.rules.push(ActiveRule { id: self.next_id, rule: rule.sanitized(), seen: 0 });
        self.next_id += 1;
    }

    /// Replaces every rule; the new ones start counting afresh. Hits and expired pages are history and stay.
    pub(crate) fn set(&mut self, rules: Vec<FaultRule>) {
        self.rules.clear();
        for rule in rules {
            self.add(rule);
        }
    }

    pub(crate) fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|a| a.rule.clone()).collect()
    }

    pub(crate) fn hits(&self) -> BTreeMap<String, u64> {
        self.hits.clone()
    }

    /// Picks the faults for one request: the sum of the latencies of every rule that takes it, and the first other
    /// rule that takes it. Latency and refusals are spent here; faults that need the answer are spent by `execute`,
    /// only if they apply to it.
    fn select(&mut self, action: &str, service: Service, region: &str, paged: bool) -> (Duration, Option<Chosen>) {
        let mut delay = Duration::ZERO;
        let mut chosen: Option<Chosen> = None;
        let mut spent: Vec<u64> = Vec::new();
        for active in &mut self.rules {
            if !active.rule.matches(action, service, region, paged) {
                continue;
            }
            let n = active.seen;
            active.seen += 1;
            if !takes(active.rule.share, n, self.phase) {
                continue;
            }
            match &active.rule.fault {
                Fault::Latency { millis } => {
                    delay = delay.saturating_add(Duration::from_millis(*millis));
                    spent.push(active.id);
                }
                fault if chosen.is_none() => {
                    if fault.refuses() {
                        spent.push(active.id);
                    }
                    chosen = Some(Chosen { rule: active.id, fault: fault.clone() });
                }
                _ => {}
            }
        }
        for id in spent {
            self.spend(id);
        }
        (delay, chosen)
    }

    fn is_live(&self, id: u64) -> bool {
        self.rules.iter().any(|a| a.id == id && a.rule.limit != Some(0))
    }

    /// Counts a hit of the rule and takes one from its limit.
    fn spend(&mut self, id: u64) {
        if let Some(active) = self.rules.iter_mut().find(|a| a.id == id) {
            if let Some(left) = active.rule.limit.as_mut() {
                *left = left.saturating_sub(1);
            }
            *self.hits.entry(active.rule.fault.kind().to_string()).or_insert(0) += 1;
        }
    }

    fn remember_expired(&mut self, account: &str, action: &str, token: String, report_id: String) {
        if self.expired_pages.len() >= MAX_EXPIRED_PAGES {
            self.expired_pages.pop_front();
        }
        self.expired_pages.push_back((account.to_string(), action.to_string(), token, report_id));
    }

    fn expired_report(&self, account: &str, action: &str, token: Option<&str>) -> Option<String> {
        let token = token.filter(|t| !t.is_empty())?;
        let page = self.expired_pages.iter().rev().find(|(o, a, t, _)| o == account && a == action && t == token);
        page.map(|(_, _, _, id)| id.clone())
    }
}

#[derive(Debug, Clone)]
struct Chosen {
    rule: u64,
    fault: Fault,
}

/// How the HTTP server must deliver an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// As an EC2 answer: status, XML body, request ID header.
    Normal,
    /// Status 200, the body as `text/html`, no request ID header (the page comes from "something in the way").
    NotXml,
    /// Close the connection without writing anything.
    Close,
    /// Headers with the full Content-Length, half the body, then close the connection.
    CloseMidResponse,
}

/// An answer and how it must go out.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) response: ApiResponse,
    pub(crate) delivery: Delivery,
}

/// What was decided for a request when it arrived.
#[derive(Debug)]
pub(crate) struct Plan {
    action: String,
    /// Who sent it, which decides whose data it sees. Fixed at arrival: a key is attributed once.
    caller: Caller,
    service: Service,
    /// How long to wait (without holding the lock) before `execute`.
    pub(crate) delay: Duration,
    fault: Option<Chosen>,
}

/// Attributes the request to a caller, counts and timestamps it, and picks its faults.
pub(crate) fn plan(state: &mut State, params: &Params, scope: Option<&CredentialScope>) -> Plan {
    let action = api::action_name(params);
    let caller = state.caller(scope);
    let service = Service::of(params, &caller);
    state.count_request(&action, &caller);
    let paged = params.get("NextToken").is_some_and(|t| !t.is_empty());
    let (delay, fault) = state.faults.select(&action, service, &caller.region, paged);
    Plan { action, caller, service, delay, fault }
}

/// Answers a planned request: refused, or run through `api::dispatch` and then mangled.
pub(crate) fn execute(state: &mut State, params: &Params, plan: Plan) -> Answer {
    let Plan { action, caller, service, fault, .. } = plan;
    if let Some(chosen) = &fault
        && let Some((err, delivery)) = chosen.fault.refusal(&action, &caller.principal, service)
    {
        let mut response = api::reject(state, service, action, &err);
        if delivery == Delivery::NotXml {
            response.status = 200;
            response.body = NOT_XML_BODY.to_string();
        }
        return Answer { response, delivery };
    }
    // The consequence of an earlier `ExpireBetweenPages`, whatever the rules are now: the page's reports are gone.
    if let Some(report_id) = state.faults.expired_report(&caller.account, &action, params.get("NextToken")) {
        let response = api::reject(state, service, action, &Ec2Error::unknown_report(&report_id));
        return Answer { response, delivery: Delivery::Normal };
    }
    let mut response = api::dispatch(state, params, action, &caller);
    let mut delivery = Delivery::Normal;
    // The rule may have been replaced or spent while this request slept through its latency.
    if let Some(chosen) = fault
        && state.faults.is_live(chosen.rule)
        && let Some(how) = mangle_answer(state, params, &caller, &mut response, &chosen.fault)
    {
        state.faults.spend(chosen.rule);
        delivery = how;
    }
    Answer { response, delivery }
}

/// Applies a fault that needs the operation's answer; None (and the answer untouched) when it does not apply.
fn mangle_answer(
    state: &mut State,
    params: &Params,
    caller: &Caller,
    response: &mut ApiResponse,
    fault: &Fault,
) -> Option<Delivery> {
    let rewrite = |response: &mut ApiResponse, body: Option<String>| {
        body.map(|body| {
            response.body = body;
            Delivery::Normal
        })
    };
    match fault {
        Fault::TruncatedBody => {
            response.body = mangle::truncate(&response.body).to_string();
            Some(Delivery::Normal)
        }
        Fault::CloseMidResponse => Some(Delivery::CloseMidResponse),
        _ if response.status != 200 => None,
        Fault::RepeatToken => rewrite(response, mangle::repeat_token(&response.body, params)),
        Fault::MissingFields => rewrite(response, mangle::missing_fields(&response.body)),
        Fault::UsageCount { value } => rewrite(response, mangle::usage_count(&response.body, *value)),
        Fault::DuplicateEntries => rewrite(response, mangle::duplicate_entries(&response.body, params)),
        Fault::ExpireBetweenPages => {
            let token = mangle::next_token(&response.body)?;
            let reports = mangle::report_ids(&response.body);
            let first = reports.first()?.clone();
            for id in &reports {
                // Already gone is fine: the point is that it is gone.
                let _ = state.delete_report(caller.owner, id);
            }
            state.faults.remember_expired(&caller.account, &response.action, token, first);
            Some(Delivery::Normal)
        }
        Fault::Latency { .. }
        | Fault::Throttle
        | Fault::InternalError
        | Fault::Unauthorized
        | Fault::AuthFailure
        | Fault::CloseConnection
        | Fault::NotXml
        | Fault::ExpireToken => None,
    }
}
