//! The bytes of `/metrics`, in the format and encoding each scraper asks for.
//!
//! A poll's exposition is two prepared `Part`s, each kept as text and as a deflate stream that
//! is flushed but not finished: the usage part (possibly 100,000 series), prepared again only
//! when a report changes, and the status part (a few lines per image), prepared every poll. A
//! scrape that asks for gzip gets both streams, followed by the compressed few lines of the
//! exporter's own metrics and the gzip trailer (the CRC32 of the whole is combined from the
//! parts), so gzip costs the scrape path a few microseconds instead of compressing megabytes.
//! Both parts hold only gauges, whose text and OpenMetrics forms are identical; the exporter's
//! own part is converted per scrape, which is cheap.

use std::io::Write as _;

use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::DeflateEncoder;

pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => CONTENT_TYPE_TEXT,
            Format::OpenMetrics => CONTENT_TYPE_OPENMETRICS,
        }
    }
}

/// A piece of the exposition prepared once, ready to serve plain or compressed.
pub struct Part {
    text: Bytes,
    /// Raw deflate of `text`, sync-flushed and not final: more blocks may follow.
    deflated: Bytes,
    crc: crc32fast::Hasher,
}

impl Part {
    pub fn new(text: Vec<u8>) -> Self {
        let mut encoder = DeflateEncoder::new(Vec::with_capacity(text.len() / 8), Compression::default());
        // Writing into a Vec cannot fail; a failure would only lose compression, not data.
        let deflated = match encoder.write_all(&text).and_then(|()| encoder.flush()) {
            Ok(()) => std::mem::take(encoder.get_mut()),
            Err(_) => Vec::new(),
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&text);
        Self { text: Bytes::from(text), deflated: Bytes::from(deflated), crc }
    }

    pub fn text(&self) -> &Bytes {
        &self.text
    }
}

/// The exposition of one poll: the usage part, shared with the next polls for as long as no
/// report changes (it is most of the bytes, and rendering and compressing it is most of the
/// work), and the status part, rendered every poll.
pub struct Prepared {
    usage: Arc<Part>,
    status: Part,
}

impl Prepared {
    pub fn from_parts(usage: Arc<Part>, status: Part) -> Self {
        Self { usage, status }
    }

    /// One part holding all of `text`.
    pub fn new(text: Vec<u8>) -> Self {
        Self::from_parts(Arc::new(Part::new(text)), Part::new(Vec::new()))
    }

    pub fn empty() -> Self {
        Self::new(Vec::new())
    }

    /// Whether both hold the very same usage part (the render cache reused it).
    #[cfg(test)]
    pub(crate) fn shares_usage_with(&self, other: &Prepared) -> bool {
        Arc::ptr_eq(&self.usage, &other.usage)
    }

    /// The response body: the usage and status parts, then `own` (the exporter's metrics,
    /// already in `format`), then `# EOF` for OpenMetrics; gzip-compressed when asked.
    pub fn body(&self, own: &[u8], format: Format, gzip: bool) -> Vec<Bytes> {
        let mut tail = own.to_vec();
        if format == Format::OpenMetrics {
            tail.extend_from_slice(b"# EOF\n");
        }
        let plain = || vec![self.usage.text.clone(), self.status.text.clone(), Bytes::from(tail.clone())];
        if !gzip {
            return plain();
        }
        let mut encoder = DeflateEncoder::new(Vec::with_capacity(tail.len() / 4 + 64), Compression::fast());
        let finished = encoder.write_all(&tail).and_then(|()| encoder.finish());
        let Ok(mut rest) = finished else {
            return plain();
        };
        // Deflate streams that end in a sync flush can be concatenated; the CRC32 of the whole
        // is combined from the CRCs of the parts.
        let mut crc = self.usage.crc.clone();
        crc.combine(&self.status.crc);
        let mut tail_crc = crc32fast::Hasher::new();
        tail_crc.update(&tail);
        crc.combine(&tail_crc);
        let length = (self.usage.text.len() + self.status.text.len() + tail.len()) as u32; // ISIZE: modulo 2^32
        rest.extend_from_slice(&crc.finalize().to_le_bytes());
        rest.extend_from_slice(&length.to_le_bytes());
        vec![
            Bytes::from_static(&GZIP_HEADER),
            self.usage.deflated.clone(),
            self.status.deflated.clone(),
            Bytes::from(rest),
        ]
    }
}

/// Chooses the format from an `Accept` header: OpenMetrics when the client ranks it above the
/// text format (as Prometheus does), else text. Ties go to whichever the client listed first.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else { return Format::Text };
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut version = None;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let format = match media.as_str() {
            "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0" || v == "0.0.1") => {
                Format::OpenMetrics
            }
            "text/plain" | "*/*" | "text/*" => Format::Text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::Text, |(_, f)| f)
}

/// Whether `Accept-Encoding` allows gzip (and does not refuse it with `q=0`).
pub fn wants_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|header| {
        header.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim() == "q")
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && q > 0.0
        })
    })
}

/// Converts text-format lines to OpenMetrics: a counter family is named without its `_total`
/// suffix in `# HELP` and `# TYPE` (its samples keep it).
pub fn text_to_openmetrics(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .filter(|name| name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{} {tail}", name.trim_end_matches("_total")))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    const PROMETHEUS_2_42: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

    #[test]
    fn prometheus_gets_openmetrics_others_get_text() {
        assert_eq!(negotiate(Some(PROMETHEUS_2_42)), Format::OpenMetrics);
        assert_eq!(negotiate(Some(PROMETHEUS_3)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.9")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;version=2.0.0")), Format::Text, "unknown version");
        assert_eq!(negotiate(Some("application/json")), Format::Text);
    }

    #[test]
    fn gzip_only_when_asked() {
        assert!(wants_gzip(Some("gzip")));
        assert!(wants_gzip(Some("deflate, gzip;q=0.5")));
        assert!(wants_gzip(Some("*")));
        assert!(!wants_gzip(Some("gzip;q=0")));
        assert!(!wants_gzip(Some("identity")));
        assert!(!wants_gzip(None));
    }

    fn gunzip(parts: &[Bytes]) -> Vec<u8> {
        let all: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let mut out = Vec::new();
        // A single-member decoder: the body must be one gzip member, not several.
        flate2::read::GzDecoder::new(&all[..]).read_to_end(&mut out).expect("valid gzip");
        out
    }

    #[test]
    fn gzip_body_is_one_valid_member_with_both_parts() {
        let usage: Vec<u8> =
            (0..5000).map(|i| format!("ami_usage_resources{{n=\"{i}\"}} {i}\n")).collect::<String>().into_bytes();
        let prepared = Prepared::new(usage.clone());
        let own = b"ami_usage_polls_total 3\n";
        let body = prepared.body(own, Format::Text, true);
        let mut expected = usage.clone();
        expected.extend_from_slice(own);
        assert_eq!(gunzip(&body), expected);
        let compressed: usize = body.iter().map(Bytes::len).sum();
        assert!(compressed < usage.len() / 4, "compressed {compressed} of {}", usage.len());

        let om = prepared.body(own, Format::OpenMetrics, true);
        assert!(gunzip(&om).ends_with(b"ami_usage_polls_total 3\n# EOF\n"));
        assert_eq!(gunzip(&Prepared::empty().body(b"x 1\n", Format::Text, true)), b"x 1\n");
    }

    #[test]
    fn gzip_body_of_usage_and_status_parts_is_one_valid_member() {
        let usage = Arc::new(Part::new(b"# TYPE a gauge\na 1\n".repeat(500)));
        let prepared = Prepared::from_parts(Arc::clone(&usage), Part::new(b"b{x=\"y\"} 2\n".to_vec()));
        let own = b"c_total 3\n";
        let expected = [usage.text().as_ref(), b"b{x=\"y\"} 2\n", own].concat();
        assert_eq!(gunzip(&prepared.body(own, Format::Text, true)), expected);
        assert_eq!(prepared.body(own, Format::Text, false).concat(), expected);
        let empty = Prepared::empty();
        assert_eq!(gunzip(&empty.body(own, Format::Text, true)), own);
    }

    #[test]
    fn plain_body_is_the_parts_in_order() {
        let prepared = Prepared::new(b"a 1\n".to_vec());
        let body: Vec<u8> = prepared.body(b"b 2\n", Format::OpenMetrics, false).concat();
        assert_eq!(body, b"a 1\nb 2\n# EOF\n");
    }

    #[test]
    fn counters_lose_total_in_openmetrics_metadata_only() {
        let text = b"# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n";
        let om = String::from_utf8(text_to_openmetrics(text)).expect("utf-8");
        assert_eq!(
            om,
            "# HELP x Things.\n# TYPE x counter\nx_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
