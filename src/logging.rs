//! Log output: logfmt (the Prometheus ecosystem's default) or JSON, one event per line on stderr.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{LogFormat, LogLevel};

/// Installs the global subscriber. Our own events at `level`; the AWS SDK's and hyper's only at
/// warn and above unless debugging, because at info they log every request.
pub fn init(level: LogLevel, format: LogFormat) {
    let ours = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let others = if level == LogLevel::Debug { "info" } else { "warn" };
    let filter = EnvFilter::new(format!("{others},ami_usage_exporter={ours},ami_usage_demo={ours},ec2_sim={ours}"));
    // A failed write (stderr closed because the log reader went away) must not matter: by
    // default the subscriber reports it with eprintln!, which panics on that same broken pipe and
    // takes down whatever task was logging (once, the signal handler: SIGTERM stopped working).
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
}

/// `ts=… level=info msg="…" key=value …`, the format of the Go exporters' default logger.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(writer, "ts={now} level={} source={}", meta.level().as_str().to_lowercase(), meta.target())?;
        write!(writer, " msg={}", quote(&fields.message))?;
        writer.write_str(&fields.rest)?;
        writeln!(writer)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Quotes a value when logfmt needs it: empty, or holding spaces, quotes, `=` or control bytes.
fn quote(value: &str) -> String {
    let plain = !value.is_empty() && !value.chars().any(|c| c == ' ' || c == '"' || c == '=' || c.is_control());
    if plain {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn logfmt_quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a=b"), "\"a=b\"");
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
    }
}
