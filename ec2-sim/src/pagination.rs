//! `NextToken` / `MaxResults` paging shared by the Describe operations.
//!
//! A token carries the offset of the next item and the fingerprint of the query it belongs to, so a token replayed
//! against a different query is refused with `InvalidPaginationToken`, as EC2 does. Offsets (rather than keys)
//! keep tokens short; items created between pages may shift the window, which EC2 does not promise to avoid either.
//!
//! A token may also carry a count of items *before* its offset to serve again at the start of the next page. Normal
//! answers never set it; the `DuplicateEntries` fault does (see `fault`), so that the duplicates it injects survive
//! as far as the next page without any state on the server.

use crate::error::Ec2Error;
use crate::query::Params;
use crate::rng::mix64;

/// The page size when the caller sends no `MaxResults`: large enough that small datasets arrive in one page, small
/// enough that a client which never follows `nextToken` is caught by larger datasets.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1000;

#[derive(Debug)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_token: Option<String>,
}

/// Offsets and carries share the 64 bits a token holds, 32 each: no page or result list comes near 2^32 items.
const HALF: u32 = 32;
const LOW: u64 = (1 << HALF) - 1;

fn encode(offset: usize, carry: usize, fingerprint: u64) -> String {
    let offset = (offset as u64).min(LOW);
    let carry = (carry as u64).min(LOW);
    // Masking the position with the fingerprint keeps tokens from looking like counters people could edit.
    format!("{:016x}{fingerprint:016x}", (offset | (carry << HALF)) ^ mix64(fingerprint))
}

/// `(offset, carry)`.
fn decode(token: &str, fingerprint: u64) -> Option<(usize, usize)> {
    if token.len() != 32 || !token.is_ascii() {
        return None;
    }
    let masked = u64::from_str_radix(&token[..16], 16).ok()?;
    let fp = u64::from_str_radix(&token[16..], 16).ok()?;
    if fp != fingerprint {
        return None;
    }
    let plain = masked ^ mix64(fp);
    Some((usize::try_from(plain & LOW).ok()?, usize::try_from(plain >> HALF).ok()?))
}

/// Where the request's `NextToken` points: `(offset, carry)`, `(0, 0)` without a token, `None` for a token this
/// query would refuse.
pub(crate) fn position(params: &Params) -> Option<(usize, usize)> {
    match params.get("NextToken") {
        None | Some("") => Some((0, 0)),
        Some(token) => decode(token, params.fingerprint()),
    }
}

/// What a token means for this query: `(offset, carry)`, or None when it belongs to another query.
pub(crate) fn decode_for(params: &Params, token: &str) -> Option<(usize, usize)> {
    decode(token, params.fingerprint())
}

/// A token of this query that starts the next page at `offset`, preceded by the `carry` items before it.
pub(crate) fn token_at(params: &Params, offset: usize, carry: usize) -> String {
    encode(offset, carry, params.fingerprint())
}

/// Cuts one page out of the full, stably ordered result of a query.
pub(crate) fn paginate<T>(mut items: Vec<T>, params: &Params) -> Result<Page<T>, Ec2Error> {
    let page_size = params.max_results()?.unwrap_or(DEFAULT_PAGE_SIZE);
    let (offset, carry) = position(params).ok_or_else(Ec2Error::invalid_token)?;
    // Items may have disappeared since the previous page (deleted, expired): then this is simply the last page.
    let offset = offset.min(items.len());
    let start = offset.saturating_sub(carry);
    let end = offset.saturating_add(page_size).min(items.len());
    let next_token = (end < items.len()).then(|| token_at(params, end, 0));
    items.truncate(end);
    let items = items.split_off(start);
    Ok(Page { items, next_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[u32], pairs: &[(&str, &str)]) -> Result<Page<u32>, Ec2Error> {
        paginate(items.to_vec(), &Params::from_pairs(pairs))
    }

    #[test]
    fn every_page_size_yields_everything_once_in_order() {
        let all: Vec<u32> = (0..23).collect();
        for max in 1..=30usize {
            let max_s = max.to_string();
            let mut got = Vec::new();
            let mut token: Option<String> = None;
            for _round in 0..100 {
                let mut pairs = vec![("Action", "X"), ("MaxResults", max_s.as_str())];
                if let Some(t) = token.as_deref() {
                    pairs.push(("NextToken", t));
                }
                let p = page(&all, &pairs).unwrap();
                assert!(p.items.len() <= max);
                got.extend(p.items);
                token = p.next_token;
                if token.is_none() {
                    break;
                }
            }
            assert!(token.is_none(), "did not finish with MaxResults={max}");
            assert_eq!(got, all, "MaxResults={max}");
        }
    }

    #[test]
    fn default_page_is_1000_and_last_page_has_no_token() {
        let all: Vec<u32> = (0..1001).collect();
        let p = page(&all, &[]).unwrap();
        assert_eq!(p.items.len(), 1000);
        let t = p.next_token.unwrap();
        let p2 = page(&all, &[("NextToken", &t)]).unwrap();
        assert_eq!(p2.items, vec![1000]);
        assert!(p2.next_token.is_none());
        let small = page(&all[..3], &[]).unwrap();
        assert_eq!(small.items.len(), 3);
        assert!(small.next_token.is_none());
        let empty = page(&[], &[]).unwrap();
        assert!(empty.items.is_empty() && empty.next_token.is_none());
    }

    #[test]
    fn foreign_or_garbage_tokens_are_refused() {
        let all: Vec<u32> = (0..10).collect();
        let p = page(&all, &[("ImageId.1", "ami-1"), ("MaxResults", "2")]).unwrap();
        let t = p.next_token.unwrap();
        assert!(page(&all, &[("ImageId.1", "ami-1"), ("NextToken", &t)]).is_ok());
        let e = page(&all, &[("ImageId.1", "ami-2"), ("NextToken", &t)]).unwrap_err();
        assert_eq!(e.code, "InvalidPaginationToken");
        for bad in ["x", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "éééééééééééééééé", &t[1..]] {
            assert_eq!(
                page(&all, &[("ImageId.1", "ami-1"), ("NextToken", bad)]).unwrap_err().code,
                "InvalidPaginationToken"
            );
        }
    }

    #[test]
    fn token_past_the_end_gives_an_empty_last_page() {
        let all: Vec<u32> = (0..10).collect();
        let t = page(&all, &[("MaxResults", "8")]).unwrap().next_token.unwrap();
        let p = page(&all[..5], &[("NextToken", &t)]).unwrap();
        assert!(p.items.is_empty() && p.next_token.is_none());
    }

    #[test]
    fn a_carry_serves_items_before_the_offset_again() {
        let all: Vec<u32> = (0..10).collect();
        let base = [("Action", "X"), ("MaxResults", "3")];
        let params = Params::from_pairs(&base);
        let t = token_at(&params, 3, 2);
        let p = page(&all, &[base[0], base[1], ("NextToken", &t)]).unwrap();
        assert_eq!(p.items, vec![1, 2, 3, 4, 5]);
        let next = p.next_token.unwrap();
        assert_eq!(position(&Params::from_pairs(&[("NextToken", &next)])), None, "bound to the query");
        assert_eq!(position(&Params::from_pairs(&[base[0], ("NextToken", &next)])), Some((6, 0)));
        // A carry larger than the offset starts at the beginning.
        let t = token_at(&params, 1, 5);
        assert_eq!(page(&all, &[base[0], base[1], ("NextToken", &t)]).unwrap().items, vec![0, 1, 2, 3]);
    }
}
