//! Reload requests: from SIGHUP (nobody waits), or from `/-/reload` (a ticket the requester
//! waits on, and may give up). The server only passes them on; whoever owns the configuration
//! (`app`) takes them from the receiver of `channel`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// How many reloads may wait to be taken; more are refused at once (HTTP) or merged (SIGHUP).
const QUEUE: usize = 4;

/// The two ends of the reload queue: the sender goes to the server (`WebState::new`) and the
/// signal handler, the receiver to whoever applies reloads.
pub fn channel() -> (mpsc::Sender<Reload>, mpsc::Receiver<Reload>) {
    mpsc::channel(QUEUE)
}

/// A request to re-read the configuration file.
pub struct Reload {
    pub ticket: Option<ReloadTicket>,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// The schedule's side of a reload request made over HTTP.
pub struct ReloadTicket {
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The requester's side: the outcome, or giving up.
pub struct ReloadWaiter {
    state: Arc<AtomicU8>,
    outcome: oneshot::Receiver<Result<(), String>>,
}

impl Reload {
    /// A reload nobody waits for (SIGHUP).
    pub fn unattended() -> Reload {
        Reload { ticket: None }
    }

    /// A reload someone waits for.
    pub fn requested() -> (Reload, ReloadWaiter) {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (reply, outcome) = oneshot::channel();
        (Reload { ticket: Some(ReloadTicket { state: Arc::clone(&state), reply }) }, ReloadWaiter { state, outcome })
    }
}

impl ReloadTicket {
    /// Takes the request for applying; `false` when its requester gave up waiting, in which case
    /// it must not be applied: the requester was told it was not.
    pub fn claim(&self) -> bool {
        self.state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Tells the requester what happened.
    pub fn reply(self, outcome: Result<(), String>) {
        // The requester may have gone (its connection closed); nothing to tell then.
        let _ = self.reply.send(outcome);
    }
}

impl ReloadWaiter {
    /// Waits up to `limit` for the outcome. A reload still queued then is withdrawn (`None`: not
    /// applied, and never applied later); one already being applied is waited for to the end,
    /// so that what is reported is what happened.
    pub async fn outcome(mut self, limit: Duration) -> Option<Result<(), String>> {
        if let Ok(outcome) = tokio::time::timeout(limit, &mut self.outcome).await {
            return outcome.ok();
        }
        let withdrawn = self.state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if withdrawn { None } else { self.outcome.await.ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_that_timed_out_while_queued_is_never_applied() {
        let (request, waiter) = Reload::requested();
        let outcome = waiter.outcome(Duration::from_millis(20)).await;
        assert_eq!(outcome, None, "not applied, and said so");
        let ticket = request.ticket.expect("an HTTP reload has a ticket");
        assert!(!ticket.claim(), "the schedule must not apply it later");
    }

    #[tokio::test]
    async fn a_reload_taken_before_the_timeout_is_reported_whatever_it_takes() {
        let (request, waiter) = Reload::requested();
        let ticket = request.ticket.expect("an HTTP reload has a ticket");
        assert!(ticket.claim());
        let waiting = tokio::spawn(waiter.outcome(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        ticket.reply(Err("targets: bad".into()));
        assert_eq!(waiting.await.expect("joins"), Some(Err("targets: bad".into())), "applied and reported");
    }
}
