//! EC2 `Filter` semantics: values of one filter are ORed, and each value may use the `*` and `?` wildcards (with
//! `\` as escape), which is how EC2 documents filter matching and how `creation-time=2025-11-29T*` matches a day.

use std::time::SystemTime;

use crate::timefmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) name: String,
    pub(crate) values: Vec<String>,
}

impl Filter {
    pub(crate) fn matches(&self, candidate: &str) -> bool {
        self.values.iter().any(|pattern| glob_match(pattern, candidate))
    }

    /// Any of several candidates (e.g. tag keys) matching any value.
    pub(crate) fn matches_any<'a>(&self, mut candidates: impl Iterator<Item = &'a str>) -> bool {
        candidates.any(|c| self.matches(c))
    }

    /// Timestamps match as text on the wire form (so `2025-11-29T*` works) or, for a value without wildcards, as an
    /// instant (so `2025-11-29T11:04:43.305+00:00` finds the same report as `…305Z`).
    pub(crate) fn matches_time(&self, t: SystemTime) -> bool {
        let text = timefmt::format_millis(t);
        self.values.iter().any(|pattern| {
            glob_match(pattern, &text)
                || (!pattern.contains(['*', '?']) && timefmt::parse(pattern).is_some_and(|p| p == t))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    One,
}

fn tokenize(pattern: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => Tok::Lit(chars.next().unwrap_or('\\')),
            '*' => Tok::Any,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
    }
    out
}

/// Wildcard match with the classic greedy-with-backtrack algorithm: linear in practice, no recursion.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p = tokenize(pattern);
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Tok::Any) => {
                backtrack = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some(Tok::One) => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some(Tok::Lit(c)) if *c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((bp, bt)) => {
                pi = bp + 1;
                ti = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|tok| *tok == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn globbing() {
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("a*", "abcd"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*d", "abcd"));
        assert!(glob_match("a*c*", "abxcyz"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("golden-*-1", "golden-base-1"));
        assert!(!glob_match("golden-*-1", "golden-base-12"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(glob_match("*a*a*a*", "xaxaxax"));
        assert!(!glob_match("*a*a*a*", "xaxax"));
    }

    #[test]
    fn time_filters() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_414_283_305); // 2025-11-29T11:04:43.305Z
        let f = |v: &str| Filter { name: "creation-time".into(), values: vec![v.into()] };
        assert!(f("2025-11-29T*").matches_time(t));
        assert!(f("2025-11-29T11:04:43.305Z").matches_time(t));
        assert!(f("2025-11-29T11:04:43.305+00:00").matches_time(t));
        assert!(!f("2025-11-30T*").matches_time(t));
        assert!(!f("2025-11-29T11:04:43Z").matches_time(t));
    }
}
