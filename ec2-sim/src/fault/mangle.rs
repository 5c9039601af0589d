//! Rewriting rendered answers for the faults that change what a successful answer says.
//!
//! `XmlWriter` output is regular: one element per line, four spaces per level, so the items of a response's set
//! are exactly the blocks between `        <item>` and `        </item>` lines. Working on those lines keeps the
//! operations unaware of faults. Anything not in that layout is left alone (the fault then does not apply).

use crate::pagination;
use crate::query::Params;

const ENTRY_SET: &str = "imageUsageReportEntrySet";
const ITEM_OPEN: &str = "        <item>\n";
const ITEM_CLOSE: &str = "        </item>\n";
/// Leaves directly inside a set's item are indented three levels.
const ITEM_LEAF: &str = "            ";

/// A response cut around its set: the text before the first item, each item block, and the text after the last.
struct Items {
    head: String,
    items: Vec<String>,
    tail: String,
}

impl Items {
    fn split(body: &str, set: &str) -> Option<Items> {
        let open = format!("    <{set}>\n");
        let close = format!("    </{set}>\n");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find(&close)?;
        let mut items = Vec::new();
        let mut current: Option<String> = None;
        for line in body[start..end].split_inclusive('\n') {
            match current.as_mut() {
                None if line == ITEM_OPEN => current = Some(line.to_string()),
                None => return None,
                Some(item) => {
                    item.push_str(line);
                    if line == ITEM_CLOSE {
                        items.extend(current.take());
                    }
                }
            }
        }
        if current.is_some() {
            return None;
        }
        Some(Items { head: body[..start].to_string(), items, tail: body[end..].to_string() })
    }

    fn join(self) -> String {
        let mut out = self.head;
        for item in &self.items {
            out.push_str(item);
        }
        out.push_str(&self.tail);
        out
    }
}

/// The text of a leaf line `<{indent}<name>text</name>`, if `line` is one.
fn leaf_text<'a>(line: &'a str, indent: &str, name: &str) -> Option<&'a str> {
    line.strip_prefix(indent)?
        .strip_prefix('<')?
        .strip_prefix(name)?
        .strip_prefix('>')?
        .trim_end_matches('\n')
        .strip_suffix('>')?
        .strip_suffix(name)?
        .strip_suffix("</")
}

/// Replaces an item's `name` leaf line with `replacement` (which may be empty, to drop the element).
fn edit_leaf(item: &str, name: &str, replacement: &str) -> String {
    item.split_inclusive('\n')
        .map(|line| if leaf_text(line, ITEM_LEAF, name).is_some() { replacement } else { line })
        .collect()
}

/// The first half of the body, cut on a character boundary: never well-formed, since the root is never closed.
pub(super) fn truncate(body: &str) -> &str {
    let mut cut = body.len() / 2;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    &body[..cut]
}

pub(super) fn next_token(body: &str) -> Option<String> {
    body.split_inclusive('\n').find_map(|line| leaf_text(line, "    ", "nextToken")).map(str::to_string)
}

/// Sets (or adds, as the last member) the answer's `nextToken`.
fn set_next_token(body: &str, token: &str) -> String {
    let line = format!("    <nextToken>{token}</nextToken>\n");
    if next_token(body).is_some() {
        return body
            .split_inclusive('\n')
            .map(|l| if leaf_text(l, "    ", "nextToken").is_some() { line.as_str() } else { l })
            .collect();
    }
    // The root's closing tag is the last line.
    let trimmed = body.trim_end_matches('\n');
    match trimmed.rfind('\n') {
        Some(i) => format!("{}{line}{}", &body[..=i], &body[i + 1..]),
        None => body.to_string(),
    }
}

/// The distinct report IDs of a page's items, in order (entries and reports both carry `reportId` in their items).
pub(super) fn report_ids(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in body.split_inclusive('\n').filter_map(|line| leaf_text(line, ITEM_LEAF, "reportId")) {
        if !out.iter().any(|seen| seen == id) {
            out.push(id.to_string());
        }
    }
    out
}

/// `nextToken` pointing back at the page just served.
pub(super) fn repeat_token(body: &str, params: &Params) -> Option<String> {
    let token = match params.get("NextToken") {
        Some(token) if !token.is_empty() => token.to_string(),
        _ => pagination::token_at(params, 0, 0),
    };
    Some(set_next_token(body, &token))
}

/// Even items lose `usageCount`, odd ones `accountId`.
pub(super) fn missing_fields(body: &str) -> Option<String> {
    let mut split = Items::split(body, ENTRY_SET)?;
    if split.items.is_empty() {
        return None;
    }
    for (i, item) in split.items.iter_mut().enumerate() {
        let name = if i % 2 == 0 { "usageCount" } else { "accountId" };
        *item = edit_leaf(item, name, "");
    }
    Some(split.join())
}

pub(super) fn usage_count(body: &str, value: i64) -> Option<String> {
    let mut split = Items::split(body, ENTRY_SET)?;
    if split.items.is_empty() {
        return None;
    }
    let line = format!("{ITEM_LEAF}<usageCount>{value}</usageCount>\n");
    for item in &mut split.items {
        *item = edit_leaf(item, "usageCount", &line);
    }
    Some(split.join())
}

/// The page's own entries (those after any carried from the previous page) go round again: carried into the next
/// page by its token, or repeated at the end of this page when it is the last.
pub(super) fn duplicate_entries(body: &str, params: &Params) -> Option<String> {
    let (_, carried) = pagination::position(params)?;
    let mut split = Items::split(body, ENTRY_SET)?;
    let own: Vec<String> = split.items[carried.min(split.items.len())..].to_vec();
    if own.is_empty() {
        return None;
    }
    match next_token(body) {
        Some(token) => {
            let (offset, _) = pagination::decode_for(params, &token)?;
            let carrying = pagination::token_at(params, offset, own.len());
            Some(set_next_token(body, &carrying))
        }
        None => {
            split.items.extend(own);
            Some(split.join())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{XmlWriter, assert_well_formed};

    fn entries(n: usize, token: Option<&str>) -> String {
        let mut w = XmlWriter::success("DescribeImageUsageReportEntriesResponse", "r");
        let items: Vec<usize> = (0..n).collect();
        w.set(ENTRY_SET, &items, |w, i| {
            w.leaf("resourceType", "ec2:Instance");
            w.leaf("reportId", &format!("amiur-{}", i / 2));
            w.leaf("usageCount", &i.to_string());
            w.leaf("accountId", &format!("{i:012}"));
        });
        if let Some(t) = token {
            w.leaf("nextToken", t);
        }
        w.finish()
    }

    #[test]
    fn items_split_and_join_losslessly() {
        for n in [0, 1, 3] {
            let doc = entries(n, Some("t"));
            if n == 0 {
                assert!(Items::split(&doc, ENTRY_SET).is_none(), "an empty set is <x/>");
                continue;
            }
            let split = Items::split(&doc, ENTRY_SET).unwrap();
            assert_eq!(split.items.len(), n);
            assert_eq!(split.join(), doc);
        }
        assert!(Items::split("<x>junk</x>", ENTRY_SET).is_none());
    }

    #[test]
    fn leaves_are_found_by_exact_indentation() {
        assert_eq!(leaf_text("    <nextToken>abc</nextToken>\n", "    ", "nextToken"), Some("abc"));
        assert_eq!(leaf_text("        <nextToken>abc</nextToken>\n", "    ", "nextToken"), None);
        assert_eq!(leaf_text("    <nextTokens>abc</nextTokens>\n", "    ", "nextToken"), None);
    }

    #[test]
    fn rewrites_stay_well_formed() {
        let doc = entries(3, Some("tok"));
        let m = missing_fields(&doc).unwrap();
        assert_well_formed(&m);
        assert_eq!(m.matches("<usageCount>").count(), 1);
        assert_eq!(m.matches("<accountId>").count(), 2);
        let u = usage_count(&doc, i64::MIN).unwrap();
        assert_well_formed(&u);
        assert_eq!(u.matches(&format!("<usageCount>{}</usageCount>", i64::MIN)).count(), 3);
        assert_eq!(report_ids(&doc), vec!["amiur-0", "amiur-1"]);
        assert_eq!(next_token(&doc).as_deref(), Some("tok"));
        let added = set_next_token(&entries(1, None), "new");
        assert_well_formed(&added);
        assert!(added.ends_with("    <nextToken>new</nextToken>\n</DescribeImageUsageReportEntriesResponse>\n"));
        let replaced = set_next_token(&doc, "new");
        assert_eq!(next_token(&replaced).as_deref(), Some("new"));
        assert_eq!(replaced.matches("<nextToken>").count(), 1);
        assert!(missing_fields(&entries(0, None)).is_none());
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abcd"), "ab");
        assert_eq!(truncate("aé"), "a");
        assert_eq!(truncate("éé"), "é");
    }
}
