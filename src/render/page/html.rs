//! Writing HTML safely: every value that comes from AWS or the configuration goes through
//! `Html::text` (escaped for text and for quoted attributes alike); markup is written with
//! `Html::raw`, from literals only.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// An HTML fragment under construction.
#[derive(Default)]
pub(super) struct Html(String);

impl Html {
    pub(super) fn raw(&mut self, markup: &str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// Text or an attribute value (inside double quotes), escaped.
    pub(super) fn text(&mut self, value: &str) -> &mut Self {
        escape_into(&mut self.0, value);
        self
    }

    /// A number as digits only, for `data-` attributes that tests and scripts read.
    pub(super) fn digits(&mut self, n: u64) -> &mut Self {
        let _ = write!(self.0, "{n}");
        self
    }

    /// A number with thousands separators (numbers need no escaping).
    pub(super) fn count(&mut self, n: u64) -> &mut Self {
        self.0.push_str(&grouped(n));
        self
    }

    /// A UTC time, machine-readable in `datetime`, with its age at `now`.
    pub(super) fn time(&mut self, t: SystemTime, now: SystemTime) -> &mut Self {
        self.moment(t).age(t, now)
    }

    /// A UTC time alone, without an age.
    pub(super) fn moment(&mut self, t: SystemTime) -> &mut Self {
        let iso = humantime::format_rfc3339_seconds(t).to_string();
        let _ = write!(self.0, "<time datetime=\"{iso}\">{}</time>", iso.replace('T', " "));
        self
    }

    /// A UTC day (the whole time in its tooltip), with its age at `now`: for times that are
    /// days or months away.
    pub(super) fn date(&mut self, t: SystemTime, now: SystemTime) -> &mut Self {
        let iso = humantime::format_rfc3339_seconds(t).to_string();
        let day = iso.get(..10).unwrap_or(&iso);
        let _ = write!(self.0, "<time datetime=\"{iso}\" title=\"{iso}\">{day}</time>");
        self.age(t, now)
    }

    fn age(&mut self, t: SystemTime, now: SystemTime) -> &mut Self {
        match now.duration_since(t) {
            Ok(age) => {
                let _ = write!(self.0, " <span class=\"age\">({} ago)</span>", short(age));
            }
            Err(ahead) => {
                let _ = write!(self.0, " <span class=\"age\">(in {})</span>", short(ahead.duration()));
            }
        }
        self
    }

    /// A link to the page with one query parameter set; the value is URL-encoded, then escaped.
    pub(super) fn link(&mut self, parameter: &str, value: &str, label: &str) -> &mut Self {
        self.raw("<a href=\"?").raw(parameter).raw("=").text(&url_encoded(value)).raw("\">").text(label).raw("</a>")
    }

    pub(super) fn into_string(self) -> String {
        self.0
    }
}

/// Escapes the five characters that matter in text and in quoted attribute values. Most values
/// have none: they are copied in runs, not character by character.
pub(super) fn escape_into(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

pub(super) fn url_encoded(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `1234567` as `1,234,567`.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration the way people say it: `45 s`, `12 min`, `3 h`, `4 d`.
pub(super) fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// A poll's duration: milliseconds below ten seconds.
pub(super) fn took(d: Duration) -> String {
    if d < Duration::from_secs(10) { format!("{} ms", d.as_millis()) } else { short(d) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn markup_characters_are_escaped() {
        let mut html = Html::default();
        html.raw("<p title=\"").text("\"><script>alert('x')</script>&").raw("\">");
        assert_eq!(html.into_string(), "<p title=\"&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\">");
    }

    #[test]
    fn numbers_times_and_links() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(short(Duration::from_secs(59)), "59 s");
        assert_eq!(short(Duration::from_secs(7200)), "2 h");
        assert_eq!(short(Duration::from_secs(86_400 * 3 + 5)), "3 d");
        assert_eq!(took(Duration::from_millis(1234)), "1234 ms");
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut html = Html::default();
        html.time(t, t + Duration::from_secs(90));
        assert_eq!(
            html.into_string(),
            "<time datetime=\"2027-01-15T08:00:00Z\">2027-01-15 08:00:00Z</time> <span class=\"age\">(1 min ago)</span>"
        );
        let mut link = Html::default();
        link.link("image", "ami-1 &\"x", "ami-1");
        assert_eq!(link.into_string(), "<a href=\"?image=ami-1+%26%22x\">ami-1</a>");
    }
}
