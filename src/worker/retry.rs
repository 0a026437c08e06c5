//! The retry schedule of dead letters.

use std::time::Duration;

/// Delays between a dead letter's attempts: after the n-th failed attempt the next one waits
/// the n-th delay; the last delay repeats for as long as the letter stays unresolved (a dead
/// letter is a user without a profile: it is never given up on). The stored next attempt is
/// jittered by ±20% (see `repo::dead_letters::reschedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// At least one delay, each above zero (`config` parses them from `5s,30s,2m`).
    pub fn new(delays: Vec<Duration>) -> Result<Self, String> {
        if delays.is_empty() {
            return Err("at least one delay is needed".into());
        }
        if delays.iter().any(Duration::is_zero) {
            return Err("every delay must be above zero".into());
        }
        Ok(Self(delays))
    }

    /// The delay after `failed` failed attempts (at least one).
    pub fn delay_after(&self, failed: u32) -> Duration {
        let index = (failed.max(1) as usize - 1).min(self.0.len() - 1);
        self.0[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_delay_repeats() {
        let schedule = RetrySchedule::new([5, 30, 120].map(Duration::from_secs).to_vec()).unwrap();
        let delays: Vec<u64> = (1..=5).map(|n| schedule.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [5, 30, 120, 120, 120]);
    }

    #[test]
    fn empty_or_zero_delays_are_refused() {
        assert!(RetrySchedule::new(Vec::new()).is_err());
        assert!(RetrySchedule::new(vec![Duration::from_secs(5), Duration::ZERO]).is_err());
    }
}
