//! Step 3: request the reports that are due, one CreateImageUsageReport per image (the API's
//! only way), with a client token that makes a repeated request, by this exporter or a replica
//! of it, name the same report.

use std::time::SystemTime;

use super::bounded::bounded;
use super::decide::Due;
use super::target::{TargetPoller, Vanished};
use crate::aws::ApiError;
use crate::report::Backoff;

impl TargetPoller {
    /// Requests a report for each due image. A failure leaves the previous report serving and
    /// waits a doubling interval (at most `max_age`) before the image's next request.
    pub(super) async fn create_reports(&mut self, due: &[Due], now: SystemTime) -> Vec<Result<String, ApiError>> {
        let target = &self.target;
        let s = &self.settings;
        let calls: Vec<_> = due
            .iter()
            .map(|Due { image, token }| async move {
                (image.clone(), token.clone(), target.api.create_report(image, &s.policy, token).await)
            })
            .collect();
        let results = bounded(calls, s.concurrency).await;
        let mut outcomes = Vec::with_capacity(results.len());
        for (image, token, result) in results {
            match &result {
                Ok(report_id) => self.note_created(image, token, report_id),
                Err(error) => self.note_create_failed(image, error, now),
            }
            outcomes.push(result);
        }
        outcomes
    }

    fn note_created(&mut self, image: String, token: String, report_id: &str) {
        let region = &self.target.region;
        let memory = &mut self.memory;
        memory.create_backoff.remove(&image);
        memory.vanished.remove(&image);
        tracing::info!(aws_region = %region, image_id = %image, report_id = %report_id, "requested a new usage report");
        memory.requested.insert(image, Vanished { token, report_id: report_id.to_owned() });
        self.metrics.reports_created.with_label_values(&[region]).inc();
    }

    fn note_create_failed(&mut self, image: String, error: &ApiError, now: SystemTime) {
        let s = &self.settings;
        let previous = self.memory.create_backoff.get(&image).copied();
        let backoff = Backoff::after_failure(previous, now, s.poll_interval, s.policy.max_age.get());
        let retry_in = backoff.until().duration_since(now).unwrap_or_default();
        tracing::warn!(
            aws_region = %self.target.region,
            image_id = %image,
            error = %error,
            retry_in = %humantime::format_duration(retry_in),
            "cannot create a usage report; the previous report keeps serving"
        );
        self.memory.create_backoff.insert(image, backoff);
    }
}
