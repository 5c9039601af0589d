//! Command-line flags, named as every Prometheus exporter names them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Outside the fully allocated 9100-9999 exporter range, and used by nothing common.
pub const DEFAULT_PORT: u16 = 10264;
const DEFAULT_LISTEN_ADDRESS: &str = ":10264";

#[derive(Debug, Clone, Parser)]
#[command(name = "ami-usage-exporter", version = crate::VERSION_LINE, args_override_self = true, about = "Prometheus exporter for EC2 AMI usage reports: which accounts use your shared AMIs, and how much")]
pub struct Cli {
    /// Path to the configuration file.
    #[arg(long = "config.file", value_name = "PATH", default_value = "config.yml")]
    pub config_file: PathBuf,

    /// Validate the configuration file and exit (0 when valid).
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Call every EC2 action the configuration needs with DryRun, print which IAM permissions
    /// are missing, and exit (1 if any is).
    #[arg(long = "check-permissions")]
    pub check_permissions: bool,

    /// Address to listen on for the web interface and telemetry, e.g. `:10264`,
    /// `127.0.0.1:10264` or `localhost:10264` (a name listens on its first IPv4 address, else
    /// its first, as in Go); repeat the flag to listen on several.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS, value_parser = parse_listen_address_str, action = clap::ArgAction::Append)]
    pub listen_addresses: Vec<String>,

    /// Web configuration file (the Prometheus exporter-toolkit format) that enables TLS, basic
    /// authentication and extra response headers. Re-read when it or the files it names change.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Enable reloading the configuration over HTTP (POST or PUT /-/reload), as Prometheus's
    /// flag of the same name does. SIGHUP always reloads.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,

    /// Leave out the metrics about the exporter process itself (process_*).
    #[arg(long = "web.disable-exporter-metrics")]
    pub disable_exporter_metrics: bool,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,

    /// Maximum number of requests served at once; above it, 503. 0 means no limit.
    #[arg(long = "web.max-requests", value_name = "N", default_value_t = 40)]
    pub max_requests: usize,

    /// Maximum number of open HTTP connections; further ones are closed at once. 0 means no limit.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 512)]
    pub max_connections: usize,

    /// A client must send its request headers within this time (slow clients are cut off).
    #[arg(long = "web.read-header-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,

    /// This process's shard, from 0: it polls and serves only the images that hash to it. A
    /// StatefulSet pod name ending in -N is taken as N (`--shard=$(POD_NAME)`).
    #[arg(long = "shard", value_name = "N", default_value = "0", value_parser = crate::shard::parse_ordinal)]
    pub shard: u32,

    /// How many shards share the images (one StatefulSet replica each); 1: no sharding.
    #[arg(long = "total-shards", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub total_shards: u32,
}

impl Cli {
    /// The shard the flags name, checked against each other.
    pub fn shard(&self) -> Result<crate::shard::Shard, String> {
        crate::shard::Shard::new(self.shard, self.total_shards)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// Accepts Go-style `:port` (all IPv4 interfaces) as Prometheus exporters do, an address
/// (`127.0.0.1:10264`, `[::1]:10264`), or a host name and port (`localhost:10264`), resolved
/// at start-up. A name with several addresses listens on one of them, as Go's `net.Listen`
/// does: the first IPv4 address, else the first; repeat the flag to listen on others too.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let bad = || {
        format!(
            "{s:?} is not an address like :{DEFAULT_PORT}, 127.0.0.1:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT} or \
             localhost:{DEFAULT_PORT}"
        )
    };
    if let Some(port) = s.strip_prefix(':') {
        return port.parse().map(|port| SocketAddr::from(([0, 0, 0, 0], port))).map_err(|_| bad());
    }
    if let Ok(address) = s.parse() {
        return Ok(address);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    // Only what a host name can be, so that a typo is not sent to the resolver.
    let name = host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !name {
        return Err(bad());
    }
    let addresses: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?.collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} resolves to no address"))
}

fn parse_listen_address_str(s: &str) -> Result<String, String> {
    parse_listen_address(s).map(|_| s.to_owned())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive duration like 10s"))
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.len() > 1 && !s.contains(['?', '#']) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must be a path starting with / other than / itself"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_address_uses_the_default_port() {
        assert_eq!(DEFAULT_LISTEN_ADDRESS, format!(":{DEFAULT_PORT}"));
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["x"]).expect("defaults parse");
        assert_eq!(cli.listen_addresses, [":10264"]);
        assert_eq!(parse_listen_address(&cli.listen_addresses[0]), Ok("0.0.0.0:10264".parse().expect("addr")));
        let two = Cli::try_parse_from(["x", "--web.listen-address=127.0.0.1:1", "--web.listen-address=[::1]:2"])
            .expect("parses");
        assert_eq!(two.listen_addresses, ["127.0.0.1:1", "[::1]:2"], "repeatable, and replaces the default");
        assert_eq!(cli.telemetry_path, "/metrics");
        assert_eq!(cli.log_format, LogFormat::Logfmt);
        assert_eq!(cli.web_config_file, None);
    }

    #[test]
    fn prometheus_style_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--config.file=/etc/a.yml",
            "--web.listen-address=127.0.0.1:0",
            "--web.telemetry-path=/m",
            "--log.level=debug",
            "--log.format=json",
            "--check-config",
            "--web.config.file=/etc/web.yml",
        ])
        .expect("parses");
        assert_eq!(cli.config_file, PathBuf::from("/etc/a.yml"));
        assert_eq!(cli.web_config_file, Some(PathBuf::from("/etc/web.yml")));
        assert_eq!(cli.log_level, LogLevel::Debug);
        assert!(cli.check_config);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Cli::try_parse_from(["x", "--web.listen-address=nowhere"]).is_err());
        assert!(Cli::try_parse_from(["x", "--web.telemetry-path=metrics"]).is_err());
        assert!(Cli::try_parse_from(["x", "--web.telemetry-path=/"]).is_err());
        assert!(Cli::try_parse_from(["x", "--log.format=xml"]).is_err());
        assert_eq!(parse_listen_address("[::1]:80"), Ok("[::1]:80".parse().expect("addr")));
    }

    #[test]
    fn listen_addresses_take_host_names() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(parse_listen_address("localhost:10264"), Ok(addr("127.0.0.1:10264")), "from /etc/hosts");
        assert_eq!(parse_listen_address(":0"), Ok(addr("0.0.0.0:0")));
        assert_eq!(parse_listen_address("1.2.3.4:80"), Ok(addr("1.2.3.4:80")));
        assert_eq!(parse_listen_address("[::1]:80"), Ok(addr("[::1]:80")));
        let cli = Cli::try_parse_from(["x", "--web.listen-address=localhost:10264"]).expect("a name is accepted");
        assert_eq!(cli.listen_addresses, ["localhost:10264"], "kept as written");
        for bad in [
            "localhost",
            "localhost:",
            "localhost:http",
            "localhost:65536",
            ":",
            ":x",
            "::1:80",
            "[::1:80",
            "bad name:80",
            "-x:80",
            "a..b:80",
            ":10264:",
        ] {
            let error = parse_listen_address(bad).expect_err(bad);
            assert!(error.contains("is not an address like") && error.contains("localhost:10264"), "{bad}: {error}");
            assert!(Cli::try_parse_from(["x", &format!("--web.listen-address={bad}")]).is_err(), "{bad}");
        }
    }
}
