//! The retry schedule of dead letters.

use std::time::Duration;

use crate::config::parse_duration;

/// Delays between a dead letter's attempts: after the n-th failed attempt the next one waits
/// the n-th delay; the last delay repeats for as long as the letter stays unresolved (a dead
/// letter is a user without a profile: it is never given up on). The stored next attempt is
/// jittered by ±20% (see `repo::dead_letters::reschedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// Parses `5s,30s,2m`: comma-separated durations, each above zero.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let delays = raw
            .split(',')
            .map(|part| parse_duration(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
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
        let schedule = RetrySchedule::parse("5s, 30s,2m").unwrap();
        let delays: Vec<u64> = (1..=5).map(|n| schedule.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [5, 30, 120, 120, 120]);
    }

    #[test]
    fn empty_or_zero_delays_are_refused() {
        assert!(RetrySchedule::parse("").is_err());
        assert!(RetrySchedule::parse("5s,,1m").is_err());
        assert!(RetrySchedule::parse("0s").is_err());
    }
}
