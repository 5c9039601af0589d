//! EC2 Query request parameters: form decoding and the flattened-list conventions.
//!
//! The SDK serializes every list flat and 1-based (`ImageId.1`, `Filter.2.Value.1`, nested structures as dotted
//! prefixes), so a request is nothing more than a map from dotted names to strings. Callers ask for a scalar, a
//! list (`Prefix.N`) or a list of structures (`Prefix.N.*`), and get the EC2 error for malformed values.

use std::collections::BTreeMap;

use crate::error::Ec2Error;
use crate::filter::Filter;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Decodes an `application/x-www-form-urlencoded` body. Decoding never fails: invalid UTF-8 is replaced, and
    /// the first occurrence of a repeated key wins (the SDK never repeats one).
    pub(crate) fn parse(body: &[u8]) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Self { map }
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        Self { map }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Everything after `prefix.N.`, grouped by N, ordered by N. Keys with a non-numeric or zero index are ignored,
    /// like any other unknown parameter.
    fn indexed(&self, prefix: &str) -> BTreeMap<u32, Vec<(&str, &str)>> {
        let mut out: BTreeMap<u32, Vec<(&str, &str)>> = BTreeMap::new();
        let dotted = format!("{prefix}.");
        for (k, v) in self.map.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else {
                break;
            };
            let (index, tail) = match rest.split_once('.') {
                Some((i, t)) => (i, t),
                None => (rest, ""),
            };
            if let Ok(n) = index.parse::<u32>()
                && n > 0
                && index.bytes().all(|b| b.is_ascii_digit())
            {
                out.entry(n).or_default().push((tail, v.as_str()));
            }
        }
        out
    }

    /// A flattened string list: `prefix.1`, `prefix.2`, … in index order.
    pub(crate) fn list(&self, prefix: &str) -> Vec<String> {
        self.indexed(prefix)
            .into_values()
            .filter_map(|entries| entries.into_iter().find(|(tail, _)| tail.is_empty()).map(|(_, v)| v.to_string()))
            .collect()
    }

    /// A flattened list of structures: `prefix.N.Member…`, each returned as its own `Params` without the prefix.
    pub(crate) fn groups(&self, prefix: &str) -> Vec<Params> {
        self.indexed(prefix)
            .into_values()
            .map(|entries| Params {
                map: entries
                    .into_iter()
                    .filter(|(tail, _)| !tail.is_empty())
                    .map(|(t, v)| (t.to_string(), v.to_string()))
                    .collect(),
            })
            .collect()
    }

    pub(crate) fn bool(&self, key: &str) -> Result<bool, Ec2Error> {
        match self.get(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Ec2Error::invalid_value(format!("Invalid value '{v}' for {key}: expected true or false"))),
        }
    }

    pub(crate) fn dry_run(&self) -> Result<bool, Ec2Error> {
        self.bool("DryRun")
    }

    /// `MaxResults`: at least 1, no upper bound (the model has none).
    pub(crate) fn max_results(&self) -> Result<Option<usize>, Ec2Error> {
        let Some(raw) = self.get("MaxResults") else {
            return Ok(None);
        };
        match raw.trim().parse::<i64>() {
            Ok(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Ok(_) => Err(Ec2Error::invalid_value(format!(
                "Value ({raw}) for parameter maxResults is invalid. Expecting a value greater than 0."
            ))),
            Err(_) => {
                Err(Ec2Error::invalid_value(format!("Invalid value '{raw}' for MaxResults: expected an integer")))
            }
        }
    }

    /// An ID list with the per-call limit of 200 that every usage-report Describe call has; duplicates collapse.
    pub(crate) fn id_list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Ec2Error> {
        let ids = self.list(prefix);
        if ids.len() > limit {
            return Err(Ec2Error::invalid_value(format!(
                "Too many {prefix}s: {} given, at most {limit} allowed per request",
                ids.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        Ok(ids.into_iter().filter(|id| seen.insert(id.clone())).collect())
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`. Values are ORed, filters ANDed by the callers.
    pub(crate) fn filters(&self) -> Result<Vec<Filter>, Ec2Error> {
        let mut out = Vec::new();
        for group in self.groups("Filter") {
            let Some(name) = group.get("Name") else {
                return Err(Ec2Error::missing("Filter.N.Name"));
            };
            let values = group.list("Value");
            if values.is_empty() {
                return Err(Ec2Error::invalid_value(format!("The filter '{name}' must have at least one value")));
            }
            out.push(Filter { name: name.to_string(), values });
        }
        Ok(out)
    }

    /// Identifies "the same query" for pagination tokens: every parameter except the ones a client may legitimately
    /// change between pages.
    pub(crate) fn fingerprint(&self) -> u64 {
        // FNV-1a: stable across releases, unlike `DefaultHasher`.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.map {
            if matches!(k.as_str(), "NextToken" | "MaxResults" | "DryRun") {
                continue;
            }
            for b in k.bytes().chain([0u8]).chain(v.bytes()).chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_botocore_example() {
        let body = "Action=CreateImageUsageReport&Version=2016-11-15&ImageId=ami-0abcdef1234567890&DryRun=false\
            &ResourceType.1.ResourceType=ec2%3AInstance&ResourceType.2.ResourceType=ec2%3ALaunchTemplate\
            &ResourceType.2.ResourceTypeOption.1.OptionName=version-depth\
            &ResourceType.2.ResourceTypeOption.1.OptionValue.1=100\
            &AccountId.1=111122223333&AccountId.2=444455556666&ClientToken=tok-1\
            &TagSpecification.1.ResourceType=image-usage-report&TagSpecification.1.Tag.1.Key=Owner\
            &TagSpecification.1.Tag.1.Value=Team+A%26B";
        let p = Params::parse(body.as_bytes());
        assert_eq!(p.get("Action"), Some("CreateImageUsageReport"));
        assert_eq!(p.get("ImageId"), Some("ami-0abcdef1234567890"));
        assert_eq!(p.list("AccountId"), vec!["111122223333", "444455556666"]);
        let rts = p.groups("ResourceType");
        assert_eq!(rts.len(), 2);
        assert_eq!(rts[0].get("ResourceType"), Some("ec2:Instance"));
        assert_eq!(rts[1].get("ResourceType"), Some("ec2:LaunchTemplate"));
        let opts = rts[1].groups("ResourceTypeOption");
        assert_eq!(opts.len(), 1);
        assert_eq!(opts[0].get("OptionName"), Some("version-depth"));
        assert_eq!(opts[0].list("OptionValue"), vec!["100"]);
        let tags = p.groups("TagSpecification")[0].groups("Tag");
        assert_eq!(tags[0].get("Value"), Some("Team A&B"));
        assert!(!p.dry_run().unwrap());
    }

    #[test]
    fn lists_are_ordered_numerically_and_ignore_junk() {
        let p = Params::from_pairs(&[
            ("ImageId.10", "j"),
            ("ImageId.2", "b"),
            ("ImageId.1", "a"),
            ("ImageId.0", "zero"),
            ("ImageId.x", "junk"),
            ("ImageId.+3", "plus"),
            ("ImageIdX.1", "other"),
            ("ImageId", "scalar"),
        ]);
        assert_eq!(p.list("ImageId"), vec!["a", "b", "j"]);
    }

    #[test]
    fn filters_parse_and_validate() {
        let p = Params::from_pairs(&[
            ("Filter.1.Name", "state"),
            ("Filter.1.Value.1", "available"),
            ("Filter.1.Value.2", "pending"),
            ("Filter.2.Name", "tag:Owner"),
            ("Filter.2.Value.1", "TeamA"),
        ]);
        let f = p.filters().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "state");
        assert_eq!(f[0].values, vec!["available", "pending"]);
        assert_eq!(f[1].name, "tag:Owner");

        let no_values = Params::from_pairs(&[("Filter.1.Name", "state")]);
        assert_eq!(no_values.filters().unwrap_err().code, "InvalidParameterValue");
        let no_name = Params::from_pairs(&[("Filter.1.Value.1", "x")]);
        assert_eq!(no_name.filters().unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn scalars_validate() {
        let p = Params::from_pairs(&[("DryRun", "yes"), ("MaxResults", "0")]);
        assert_eq!(p.dry_run().unwrap_err().code, "InvalidParameterValue");
        assert_eq!(p.max_results().unwrap_err().code, "InvalidParameterValue");
        let p = Params::from_pairs(&[("DryRun", "true"), ("MaxResults", "5")]);
        assert!(p.dry_run().unwrap());
        assert_eq!(p.max_results().unwrap(), Some(5));
        assert_eq!(
            Params::from_pairs(&[("MaxResults", "abc")]).max_results().unwrap_err().code,
            "InvalidParameterValue"
        );
        assert_eq!(Params::default().max_results().unwrap(), None);
    }

    #[test]
    fn id_list_limit_and_dedup() {
        let mut pairs = Vec::new();
        let keys: Vec<String> = (1..=201).map(|i| format!("ReportId.{i}")).collect();
        for k in &keys {
            pairs.push((k.as_str(), "amiur-1"));
        }
        let p = Params::from_pairs(&pairs);
        assert_eq!(p.id_list("ReportId", 200).unwrap_err().code, "InvalidParameterValue");
        let p = Params::from_pairs(&pairs[..200]);
        assert_eq!(p.id_list("ReportId", 200).unwrap(), vec!["amiur-1"]);
    }

    #[test]
    fn fingerprint_ignores_paging_parameters() {
        let a = Params::from_pairs(&[("Action", "X"), ("ImageId.1", "ami-1"), ("MaxResults", "5")]);
        let b = Params::from_pairs(&[("Action", "X"), ("ImageId.1", "ami-1"), ("NextToken", "t"), ("DryRun", "false")]);
        let c = Params::from_pairs(&[("Action", "X"), ("ImageId.1", "ami-2")]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
