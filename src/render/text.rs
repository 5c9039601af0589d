//! The text exposition format, written directly: one gauge family at a time, with the escaping
//! and number formatting of the prometheus crate's `TextEncoder`, byte for byte.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::METRIC_PREFIX as PREFIX;

pub(super) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One gauge family of the usage exposition, written straight to text.
///
/// The usage part can be a million series. Building `prometheus::proto` messages for it (eight
/// `String`s and a `Vec` per series) and encoding them took many times the memory of the
/// text and most of the render time (BENCHMARKS.md), so the text is written directly, in the
/// byte-identical format of the prometheus crate's `TextEncoder`.
pub(super) struct TextFamily {
    name: String,
    help: String,
    out: Vec<u8>,
    pub(super) samples: u64,
}

impl TextFamily {
    pub(super) fn gauge(name: &str, help: &str) -> Self {
        Self { name: format!("{PREFIX}_{name}"), help: help.to_owned(), out: Vec::new(), samples: 0 }
    }

    /// Reserves room for `series` samples of about this size (address space only: untouched
    /// pages of a large allocation cost no resident memory).
    pub(super) fn reserve(mut self, series: usize) -> Self {
        self.out.reserve(series.saturating_mul(self.name.len() + 120));
        self
    }

    pub(super) fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let out = &mut self.out;
        if self.samples == 0 {
            // A family without samples is left out entirely, as the prometheus crate does.
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(self.name.as_bytes());
            out.push(b' ');
            escape_into(out, &self.help, false);
            out.extend_from_slice(b"\n# TYPE ");
            out.extend_from_slice(self.name.as_bytes());
            out.extend_from_slice(b" gauge\n");
        }
        self.samples += 1;
        out.extend_from_slice(self.name.as_bytes());
        let mut separator = b'{';
        for (name, value) in labels {
            out.push(separator);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_into(out, value, true);
            out.push(b'"');
            separator = b',';
        }
        if !labels.is_empty() {
            out.push(b'}');
        }
        out.push(b' ');
        write_value(out, value);
        out.push(b'\n');
    }

    /// Appends the family to `out`, taking its buffer as a whole when `out` is still empty.
    pub(super) fn append_to(self, out: &mut Vec<u8>) {
        if out.is_empty() {
            *out = self.out;
        } else {
            out.extend_from_slice(&self.out);
        }
    }
}

/// Escapes as the text format requires: backslash and newline always, the double quote in
/// label values.
fn escape_into(out: &mut Vec<u8>, text: &str, quote: bool) {
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quote => b"\\\"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        out.extend_from_slice(escaped);
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
}

/// Writes a sample value as `f64`'s `Display` does (what the prometheus crate writes), with a
/// fast path for the whole numbers that nearly every usage value is.
fn write_value(out: &mut Vec<u8>, value: f64) {
    use std::io::Write as _;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every whole number below is exact
    // Writing into a Vec cannot fail.
    let _ = if value.fract() == 0.0 && value.abs() < EXACT {
        write!(out, "{}", value as i64)
    } else {
        write!(out, "{value}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricFamily;
    use prometheus::{Encoder, TextEncoder};

    /// The usage part is written without the prometheus crate; its text must stay exactly what
    /// the crate's encoder writes for the same samples (escaping, number formatting).
    #[test]
    fn text_family_writes_what_the_prometheus_encoder_writes() {
        use prometheus::proto::{Gauge, LabelPair, Metric, MetricType};
        let help = "help with a \\ backslash,\na newline and \"quotes\"";
        let samples: &[(&[(&str, &str)], f64)] = &[
            (&[("aws_region", "a\"b\\c\nd"), ("image_id", "ami-1")], 15.0),
            (&[], 0.0),
            (&[("account_id", "é ✓")], 1_759_152_432.123),
            (&[("a", "b")], 1e15),
            (&[("a", "b")], 12_345_678_901_234_567_890.0),
            (&[("a", "b")], 0.5),
        ];
        let mut ours = TextFamily::gauge("t", help);
        let mut family = MetricFamily::default();
        family.set_name(format!("{PREFIX}_t"));
        family.set_help(help.to_owned());
        family.set_field_type(MetricType::GAUGE);
        for (labels, value) in samples {
            ours.push(labels, *value);
            let mut gauge = Gauge::default();
            gauge.set_value(*value);
            let mut metric = Metric::from_gauge(gauge);
            metric.set_label(
                labels
                    .iter()
                    .map(|(n, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name((*n).to_owned());
                        pair.set_value((*v).to_owned());
                        pair
                    })
                    .collect(),
            );
            family.mut_metric().push(metric);
        }
        let mut expected = Vec::new();
        TextEncoder::new().encode(&[family], &mut expected).expect("encodes");
        assert_eq!(String::from_utf8(ours.out).expect("utf-8"), String::from_utf8(expected).expect("utf-8"));
    }
}
