//! Running a step's calls side by side, at most as many as the target's request slots.

use futures_util::stream::{self, StreamExt};
use tokio_util::task::AbortOnDropHandle;

/// Runs the calls with at most `limit` in flight; the futures are built beforehand because a
/// closure inside `Stream::map` trips the compiler's `Send` check for spawned tasks.
pub(super) async fn bounded<F: std::future::Future>(calls: Vec<F>, limit: usize) -> Vec<F::Output> {
    stream::iter(calls).buffer_unordered(limit.max(1)).collect().await
}

/// Runs the calls as tasks of their own, at most `limit` at a time, and returns each outcome
/// with the index of its call. `bounded` polls all its futures in the poll's task, so on one
/// thread at a time; reading entries is CPU work (the SDK's XML parsing is most of a cold
/// poll's CPU time, BENCHMARKS.md), which spreads over the runtime's threads this way. The
/// tasks are aborted if the poll is dropped (shutdown).
pub(super) async fn bounded_tasks<F>(
    calls: Vec<F>,
    limit: usize,
) -> Vec<(usize, Result<F::Output, tokio::task::JoinError>)>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    stream::iter(calls.into_iter().enumerate())
        .map(|(index, call)| {
            let task = AbortOnDropHandle::new(tokio::spawn(call));
            async move { (index, task.await) }
        })
        .buffer_unordered(limit.max(1))
        .collect()
        .await
}
