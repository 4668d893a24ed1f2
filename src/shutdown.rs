//! The stop request and its bound (`state.shutdown_timeout`), shared by the service
//! and the monitor's threads. Every step of a stop that can wait on something outside
//! the process (the offset commit, the consumer's close, trigger deliveries, the HTTP
//! server) waits at most until the deadline; the steps that keep the state safe (the
//! record in hand, the last checkpoint, its reports) come first and are local.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set once, when the stop is asked for.
#[derive(Debug, Default)]
pub struct Stop {
    requested: AtomicBool,
    deadline: OnceLock<Instant>,
}

impl Stop {
    /// Asks for the stop, to be over within `bound` from now. A second request keeps
    /// the first deadline.
    pub fn request(&self, bound: Duration) {
        let _ = self.deadline.set(Instant::now() + bound);
        self.requested.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// When the stop must be over; `None` before it is asked for.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// Time left until the deadline (zero once it passed; a day before the stop is
    /// asked for, which bounds nothing in practice).
    pub fn remaining(&self) -> Duration {
        self.deadline().map_or(Duration::from_secs(86_400), |d| d.saturating_duration_since(Instant::now()))
    }

    /// The instant halfway through what is left: the last commit may use up to here,
    /// so that closing the consumer keeps the other half.
    pub fn halfway(&self) -> Instant {
        Instant::now() + self.remaining() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_sets_the_deadline() {
        let stop = Stop::default();
        assert!(!stop.requested());
        assert!(stop.deadline().is_none());
        stop.request(Duration::from_secs(5));
        let first = stop.deadline().unwrap();
        stop.request(Duration::from_secs(500));
        assert!(stop.requested());
        assert_eq!(stop.deadline(), Some(first));
        assert!(stop.remaining() <= Duration::from_secs(5));
        assert!(stop.halfway() <= first);
    }
}
