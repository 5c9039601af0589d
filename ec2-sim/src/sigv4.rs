//! Who is asking: the credential scope of a SigV4-signed request.
//!
//! Signatures are never checked (the simulator has no secrets to check them against). Only the scope matters: its
//! access key ID says which account's data a request sees (see `state::State::caller`), its Region is recorded for
//! per-Region request counts, and its service tells STS requests from EC2 ones.

use crate::query::Params;

/// `Credential=AKID/20261126/us-east-1/ec2/aws4_request`, taken apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CredentialScope {
    pub(crate) access_key_id: String,
    pub(crate) region: String,
    pub(crate) service: String,
}

impl CredentialScope {
    /// From the `Authorization` header, or else from the `X-Amz-Credential` parameter of a presigned request. An
    /// unsigned request, or one whose credential is malformed, has no scope.
    pub(crate) fn of_request(authorization: Option<&str>, params: &Params) -> Option<CredentialScope> {
        authorization.and_then(from_authorization).or_else(|| params.get("X-Amz-Credential").and_then(parse_credential))
    }
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn from_authorization(header: &str) -> Option<CredentialScope> {
    let rest = header.trim().strip_prefix("AWS4-HMAC-SHA256")?;
    let start = rest.find("Credential=")? + "Credential=".len();
    let credential = rest[start..].split([',', ' ']).next()?;
    parse_credential(credential)
}

/// `AKID/date/region/service/aws4_request`.
fn parse_credential(credential: &str) -> Option<CredentialScope> {
    let parts: Vec<&str> = credential.trim().split('/').collect();
    match parts.as_slice() {
        [key, _date, region, service, "aws4_request"] if !key.is_empty() => Some(CredentialScope {
            access_key_id: (*key).to_string(),
            region: (*region).to_string(),
            service: (*service).to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sdk_header() {
        let header = "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261126/eu-west-1/ec2/aws4_request, \
                      SignedHeaders=content-type;host;x-amz-date, Signature=0123abcd";
        let scope = CredentialScope::of_request(Some(header), &Params::default()).unwrap();
        assert_eq!(scope.access_key_id, "ASIAEXAMPLE");
        assert_eq!(scope.region, "eu-west-1");
        assert_eq!(scope.service, "ec2");
        let tight =
            "AWS4-HMAC-SHA256 Credential=AKID/20261126/us-east-1/sts/aws4_request,SignedHeaders=host,Signature=x";
        assert_eq!(CredentialScope::of_request(Some(tight), &Params::default()).unwrap().service, "sts");
    }

    #[test]
    fn presigned_and_malformed() {
        let params = Params::from_pairs(&[("X-Amz-Credential", "AKID/20261126/us-west-2/ec2/aws4_request")]);
        assert_eq!(CredentialScope::of_request(None, &params).unwrap().region, "us-west-2");
        for bad in [
            "",
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 Credential=AKID/20261126/us-east-1/ec2, Signature=x",
            "AWS4-HMAC-SHA256 Credential=/20261126/us-east-1/ec2/aws4_request",
            "AWS4-HMAC-SHA256 SignedHeaders=host",
        ] {
            assert_eq!(CredentialScope::of_request(Some(bad), &Params::default()), None, "{bad}");
        }
    }
}
