//! STS on the same port as EC2: `AssumeRole`, which is what aws-config's `AssumeRoleProvider` calls, and
//! `GetCallerIdentity`, which tells a client whose credentials it holds.
//!
//! `AssumeRole` grants the roles of `SimConfig::roles` and issues credentials whose access key ID belongs to the
//! role's account (`Sts::session`): EC2 requests signed with it see that account's dataset. A request is STS's when
//! it carries `Version=2011-06-15` or is signed for the `sts` service (see `api::Service`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::config::parse_role_arn;
use crate::error::Ec2Error;
use crate::ids::{access_key_id, secret_access_key, session_token, unique_id};
use crate::query::Params;
use crate::rng::mix64;
use crate::state::{Caller, MAX_REQUEST_TIMES, State};
use crate::xml::XmlWriter;

pub(crate) const STS_VERSION: &str = "2011-06-15";
pub(crate) const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
pub(crate) const ASSUME_ROLE: &str = "AssumeRole";

const DOMAIN_STS: u64 = 0x7374_7300_0000_0008;
/// `DurationSeconds` when none is given, and its bounds. The simulated roles allow the maximum, 12 hours.
const DEFAULT_DURATION: u64 = 3600;
const MIN_DURATION: u64 = 900;
const MAX_DURATION: u64 = 43_200;
/// Issued credentials remembered. Past this the oldest are forgotten, and their key then counts as the primary
/// owner's, like any unknown key. A client would have to assume a role ~100 times an hour for weeks to get there.
const MAX_SESSIONS: usize = 100_000;

/// What an issued access key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) account: String,
    /// `arn:aws:sts::<account>:assumed-role/<role name>/<session name>`.
    pub(crate) arn: String,
    /// `<role ID>:<session name>`.
    pub(crate) user_id: String,
}

/// (role ARN, external ID, session name) of one `AssumeRole` request.
pub(crate) type AssumeRoleCall = (String, Option<String>, String);

#[derive(Debug)]
pub(crate) struct Sts {
    key: u64,
    next_serial: u64,
    sessions: BTreeMap<String, Session>,
    /// Access key IDs, oldest first, to forget the oldest past `MAX_SESSIONS`.
    issued: VecDeque<String>,
    calls: VecDeque<AssumeRoleCall>,
}

impl Sts {
    pub(crate) fn new(seed: u64) -> Sts {
        Sts {
            key: mix64(seed ^ DOMAIN_STS),
            next_serial: 0,
            sessions: BTreeMap::new(),
            issued: VecDeque::new(),
            calls: VecDeque::new(),
        }
    }

    /// The session of an access key that `AssumeRole` issued; None for any other key.
    pub(crate) fn session(&self, access_key_id: &str) -> Option<&Session> {
        self.sessions.get(access_key_id)
    }

    /// Every well-formed `AssumeRole` request, granted or not, oldest first (the newest 100,000).
    pub(crate) fn calls(&self) -> Vec<AssumeRoleCall> {
        self.calls.iter().cloned().collect()
    }

    fn record(&mut self, call: AssumeRoleCall) {
        if self.calls.len() >= MAX_REQUEST_TIMES {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }

    /// New credentials for the session: (access key ID, secret, session token).
    fn issue(&mut self, session: Session) -> (String, String, String) {
        let serial = self.next_serial;
        self.next_serial += 1;
        let id = access_key_id(&session.account, serial, self.key);
        if self.issued.len() >= MAX_SESSIONS
            && let Some(oldest) = self.issued.pop_front()
        {
            self.sessions.remove(&oldest);
        }
        self.issued.push_back(id.clone());
        self.sessions.insert(id.clone(), session);
        (id, secret_access_key(serial, self.key), session_token(serial, self.key))
    }
}

/// Runs one STS action; the error is rendered in STS's envelope by the caller.
pub(crate) fn handle(
    state: &mut State,
    params: &Params,
    caller: &Caller,
    request_id: &str,
) -> Result<String, Ec2Error> {
    match params.get("Action").unwrap_or("") {
        ASSUME_ROLE => assume_role(state, params, caller, request_id),
        "GetCallerIdentity" => Ok(get_caller_identity(caller, request_id)),
        "" => Err(Ec2Error::client("MissingAction", "Missing Action")),
        other => Err(Ec2Error::client(
            "InvalidAction",
            format!("Could not find operation {other} for version {STS_VERSION}"),
        )),
    }
}

/// STS's wording for a parameter that breaks its model's constraints.
fn invalid(value: Option<&str>, member: &str, constraint: &str) -> Ec2Error {
    let value = value.map_or("null".to_string(), |v| format!("'{v}'"));
    Ec2Error::client(
        "ValidationError",
        format!("1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {constraint}"),
    )
}

fn check_text(value: Option<&str>, member: &str, len: (usize, usize), extra: &str) -> Result<(), Ec2Error> {
    let Some(v) = value else {
        return Err(invalid(None, member, "Member must not be null"));
    };
    let n = v.chars().count();
    if n < len.0 || n > len.1 {
        let constraint = format!("Member must have length between {} and {}", len.0, len.1);
        return Err(invalid(value, member, &constraint));
    }
    if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c)) {
        let constraint = format!("Member must satisfy regular expression pattern: [\\w{extra}]*");
        return Err(invalid(value, member, &constraint));
    }
    Ok(())
}

fn assume_role(state: &mut State, params: &Params, caller: &Caller, request_id: &str) -> Result<String, Ec2Error> {
    let role_arn = params.get("RoleArn");
    match role_arn {
        None => return Err(invalid(None, "roleArn", "Member must not be null")),
        Some(arn) if !(20..=2048).contains(&arn.chars().count()) => {
            return Err(invalid(role_arn, "roleArn", "Member must have length between 20 and 2048"));
        }
        Some(_) => {}
    }
    let role_arn = role_arn.unwrap_or_default().to_string();
    let session_name = params.get("RoleSessionName");
    check_text(session_name, "roleSessionName", (2, 64), "+=,.@-")?;
    let session_name = session_name.unwrap_or_default().to_string();
    let external_id = params.get("ExternalId");
    if external_id.is_some() {
        check_text(external_id, "externalId", (2, 1224), "+=,.@:/-")?;
    }
    let external_id = external_id.map(str::to_string);
    let duration = match params.get("DurationSeconds") {
        None => DEFAULT_DURATION,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => d,
            Ok(d) if d > MAX_DURATION => {
                return Err(Ec2Error::client(
                    "ValidationError",
                    format!(
                        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role ({MAX_DURATION})."
                    ),
                ));
            }
            _ => {
                return Err(invalid(
                    Some(raw),
                    "durationSeconds",
                    &format!("Member must have value greater than or equal to {MIN_DURATION}"),
                ));
            }
        },
    };
    state.sts.record((role_arn.clone(), external_id.clone(), session_name.clone()));

    let granted = state.config.roles.iter().find(|r| r.role_arn == role_arn).filter(|r| match &r.external_id {
        Some(required) => external_id.as_deref() == Some(required.as_str()),
        None => true,
    });
    let parsed = granted.and_then(|r| parse_role_arn(&r.role_arn));
    let Some((account, role_name)) = parsed else {
        return Err(Ec2Error::new(
            403,
            "AccessDenied",
            format!("User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}", caller.principal),
        ));
    };
    let partition = role_arn.split(':').nth(1).unwrap_or("aws");
    let session = Session {
        account: account.to_string(),
        arn: format!("arn:{partition}:sts::{account}:assumed-role/{role_name}/{session_name}"),
        user_id: format!("{}:{session_name}", unique_id("AROA", &role_arn)),
    };
    let expiration = state.now() + Duration::from_secs(duration);
    let (arn, user_id) = (session.arn.clone(), session.user_id.clone());
    let (key_id, secret, token) = state.sts.issue(session);

    let mut w = XmlWriter::document("AssumeRoleResponse", STS_NAMESPACE);
    w.start("AssumeRoleResult");
    w.start("AssumedRoleUser");
    w.leaf("AssumedRoleId", &user_id);
    w.leaf("Arn", &arn);
    w.end();
    w.start("Credentials");
    w.leaf("AccessKeyId", &key_id);
    w.leaf("SecretAccessKey", &secret);
    w.leaf("SessionToken", &token);
    w.leaf("Expiration", &humantime::format_rfc3339_seconds(expiration).to_string());
    w.end();
    w.end();
    response_metadata(&mut w, request_id);
    Ok(w.finish())
}

fn get_caller_identity(caller: &Caller, request_id: &str) -> String {
    let mut w = XmlWriter::document("GetCallerIdentityResponse", STS_NAMESPACE);
    w.start("GetCallerIdentityResult");
    w.leaf("Arn", &caller.principal);
    w.leaf("UserId", &caller.user_id);
    w.leaf("Account", &caller.account);
    w.end();
    response_metadata(&mut w, request_id);
    w.finish()
}

fn response_metadata(w: &mut XmlWriter, request_id: &str) {
    w.start("ResponseMetadata");
    w.leaf("RequestId", request_id);
    w.end();
}

#[cfg(test)]
mod tests;
