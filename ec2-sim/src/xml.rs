//! Just enough XML writing for EC2 responses: elements, text, escaping, and the two envelopes.
//!
//! Responses are small and regular, so a string builder is simpler and safer than a general XML library. All text
//! goes through `escape`, which also drops characters XML 1.0 cannot carry, so no input can make a body that the
//! SDK's parser rejects.

use crate::error::Ec2Error;

pub(crate) const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

#[derive(Debug)]
pub(crate) struct XmlWriter {
    out: String,
    open: Vec<&'static str>,
    root: &'static str,
}

impl XmlWriter {
    /// `<{Action}Response xmlns=…><requestId>…</requestId>`; the caller adds the output members and calls `finish`.
    /// `root` is the full root element name, e.g. `DescribeImagesResponse`.
    pub(crate) fn success(root: &'static str, request_id: &str) -> Self {
        let mut w = Self::document(root, EC2_NAMESPACE);
        w.leaf("requestId", request_id);
        w
    }

    /// Just the declaration and the open root element in `namespace`, for envelopes other than EC2's (STS).
    pub(crate) fn document(root: &'static str, namespace: &str) -> Self {
        let mut w = Self { out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"), open: Vec::new(), root };
        w.out.push('<');
        w.out.push_str(root);
        w.out.push_str(" xmlns=\"");
        w.out.push_str(&escape(namespace));
        w.out.push_str("\">\n");
        w.open.push(root);
        w
    }

    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("    ");
        }
    }

    pub(crate) fn start(&mut self, name: &'static str) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(">\n");
        self.open.push(name);
    }

    /// Closes the innermost element; the root stays open until `finish`.
    pub(crate) fn end(&mut self) {
        if self.open.len() <= 1 {
            return;
        }
        if let Some(name) = self.open.pop() {
            self.indent();
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push_str(">\n");
        }
    }

    pub(crate) fn leaf(&mut self, name: &'static str, text: &str) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    pub(crate) fn empty(&mut self, name: &'static str) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str("/>\n");
    }

    /// `<name><item>…</item>…</name>`, or `<name/>` when there is nothing in it.
    pub(crate) fn set<T>(&mut self, name: &'static str, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        if items.is_empty() {
            self.empty(name);
            return;
        }
        self.start(name);
        for item in items {
            self.start("item");
            each(self, item);
            self.end();
        }
        self.end();
    }

    /// A string list: `<name><item>v</item>…</name>`.
    pub(crate) fn string_set(&mut self, name: &'static str, items: &[String]) {
        if items.is_empty() {
            self.empty(name);
            return;
        }
        self.start(name);
        for item in items {
            self.leaf("item", item);
        }
        self.end();
    }

    /// Closes everything still open, including the root of a success envelope.
    pub(crate) fn finish(mut self) -> String {
        while self.open.len() > 1 {
            self.end();
        }
        self.out.push_str("</");
        self.out.push_str(self.root);
        self.out.push_str(">\n");
        self.out
    }
}

/// The error envelope. Note `RequestID` with capital `ID`, unlike `requestId` on success.
pub(crate) fn error_body(err: &Ec2Error, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n    <Errors>\n        <Error>\n            \
         <Code>{}</Code>\n            <Message>{}</Message>\n        </Error>\n    </Errors>\n    \
         <RequestID>{}</RequestID>\n</Response>\n",
        escape(&err.code),
        escape(&err.message),
        escape(request_id)
    )
}

/// STS's error envelope (AWS Query protocol): `Type` is `Sender` for client errors, `Receiver` for server errors.
pub(crate) fn sts_error_body(err: &Ec2Error, request_id: &str) -> String {
    let kind = if err.status >= 500 { "Receiver" } else { "Sender" };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{}\">\n    <Error>\n        \
         <Type>{kind}</Type>\n        <Code>{}</Code>\n        <Message>{}</Message>\n    </Error>\n    \
         <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        crate::sts::STS_NAMESPACE,
        escape(&err.code),
        escape(&err.message),
        escape(request_id)
    )
}

fn allowed_in_xml(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Escapes markup characters, keeps `\r` from being normalised away, and replaces characters XML 1.0 forbids.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if allowed_in_xml(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// A minimal well-formedness checker for tests: balanced tags, legal entity references, no stray markup.
#[cfg(test)]
pub(crate) fn assert_well_formed(doc: &str) {
    let body = doc.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    let mut roots = 0;
    while let Some(lt) = rest.find('<') {
        check_text(&rest[..lt]);
        let gt = rest[lt..].find('>').expect("unclosed tag") + lt;
        let tag = &rest[lt + 1..gt];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched close tag in {doc}");
        } else if let Some(name) = tag.strip_suffix('/') {
            assert!(is_name(name), "bad name {name}");
            if stack.is_empty() {
                roots += 1;
            }
        } else {
            let name = tag.split(' ').next().unwrap_or("");
            assert!(is_name(name), "bad name {name:?}");
            if stack.is_empty() {
                roots += 1;
            }
            stack.push(name.to_string());
        }
        rest = &rest[gt + 1..];
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "exactly one root");

    fn is_name(n: &str) -> bool {
        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '_' || c == '-' || c == '.')
    }
    fn check_text(t: &str) {
        assert!(!t.contains('>'), "raw > in text {t:?}");
        let mut parts = t.split('&');
        parts.next();
        for p in parts {
            let ent = p.split(';').next().unwrap_or("");
            assert!(
                matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos") || ent.starts_with('#'),
                "bad entity &{ent}; in {t:?}"
            );
            assert!(p.contains(';'), "unterminated entity in {t:?}");
        }
        assert!(t.chars().all(allowed_in_xml), "illegal character in {t:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_illegal_chars() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{0}y\u{1b}z"), "x\u{FFFD}y\u{FFFD}z");
        assert_eq!(escape("line\r\nnext\ttab é 🦀"), "line&#13;\nnext\ttab é 🦀");
    }

    #[test]
    fn success_envelope_shape() {
        let mut w = XmlWriter::success("DeleteImageUsageReportResponse", "req-1");
        w.leaf("return", "true");
        let doc = w.finish();
        assert_well_formed(&doc);
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <DeleteImageUsageReportResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\n    \
             <requestId>req-1</requestId>\n    <return>true</return>\n</DeleteImageUsageReportResponse>\n"
        );
    }

    #[test]
    fn sets_and_empty_sets() {
        let mut w = XmlWriter::success("XResponse", "r");
        w.set("imageUsageReportSet", &[] as &[u8], |_, _| {});
        w.string_set("accountIdSet", &["1".to_string(), "<2>".to_string()]);
        w.start("unclosed");
        let doc = w.finish();
        assert_well_formed(&doc);
        assert!(doc.contains("<imageUsageReportSet/>"));
        assert!(
            doc.contains("<accountIdSet>\n        <item>1</item>\n        <item>&lt;2&gt;</item>\n    </accountIdSet>")
        );
    }

    #[test]
    fn error_envelope_shape() {
        let err = Ec2Error::client("InvalidAMIID.Malformed", "Invalid id: \"<x>\"");
        let doc = error_body(&err, "rid");
        assert_well_formed(&doc);
        assert!(doc.contains("<Response>\n    <Errors>\n        <Error>\n"));
        assert!(doc.contains("<Code>InvalidAMIID.Malformed</Code>"));
        assert!(doc.contains("<Message>Invalid id: &quot;&lt;x&gt;&quot;</Message>"));
        assert!(doc.contains("<RequestID>rid</RequestID>"));
    }

    #[test]
    fn sts_envelopes() {
        let mut w = XmlWriter::document("GetCallerIdentityResponse", crate::sts::STS_NAMESPACE);
        w.start("GetCallerIdentityResult");
        w.leaf("Account", "111111111111");
        let doc = w.finish();
        assert_well_formed(&doc);
        assert!(doc.contains("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"));
        assert!(!doc.contains("requestId"));
        let err = Ec2Error::new(403, "AccessDenied", "User: x & y");
        let doc = sts_error_body(&err, "rid");
        assert_well_formed(&doc);
        assert!(doc.contains("<Error>\n        <Type>Sender</Type>\n        <Code>AccessDenied</Code>\n"));
        assert!(doc.contains("<Message>User: x &amp; y</Message>"));
        assert!(doc.contains("</Error>\n    <RequestId>rid</RequestId>\n</ErrorResponse>"));
        let doc = sts_error_body(&Ec2Error::new(500, "InternalFailure", "x"), "rid");
        assert!(doc.contains("<Type>Receiver</Type>"));
    }
}
