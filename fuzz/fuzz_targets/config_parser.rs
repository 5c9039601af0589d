//! `Config::from_yaml` on arbitrary input: it must answer with a configuration or with a
//! non-empty (field, reason) pair, and never panic, overflow its stack or run away.

#![no_main]

use std::time::{Duration, SystemTime};

use ami_usage_exporter::config::Config;
use ami_usage_exporter::report::Backoff;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 cannot come from `read_to_string`; map it to U+FFFD rather than throw the
    // input away, so that mutations which break one byte still reach the parser.
    let text = String::from_utf8_lossy(data);
    match Config::from_yaml(&text) {
        Ok(config) => {
            // An accepted configuration is one the exporter can start with.
            assert!(!config.targets.is_empty(), "accepted without targets");
            assert!(config.reports.resource_types.iter().next().is_some(), "accepted without resource types");
            assert!(config.reports.account_ids.iter().count() <= 200, "accepted over 200 accounts");
            assert!(config.aws.attempt_timeout <= config.aws.operation_timeout);
            let _ = config.warnings();
            // The durations feed timers and backoffs; the poller computes these two (after a
            // throttled poll, and after a failed CreateImageUsageReport).
            let (now, poll) = (SystemTime::now(), config.poll_interval.get());
            let _ = Backoff::after_failure(None, now, poll, poll.max(Duration::from_secs(3600)));
            let _ = Backoff::after_failure(None, now, poll, config.reports.max_age.get());
        }
        Err((field, message)) => {
            assert!(!field.is_empty(), "empty field path, message {message:?}");
            assert!(!message.is_empty(), "empty message for field {field:?}");
        }
    }
});
