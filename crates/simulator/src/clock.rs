//! The simulator's clock: tokio's monotonic time, tied to Unix time once at start.
//!
//! Transitions and locks run on `tokio::time::Instant`, so a test with paused time drives them; the
//! times the API shows (`StartTime`, `SchedulerStopTime`, …) are Unix seconds. Reading Unix time
//! from this one anchor keeps both consistent: a scheduled stop at Unix second `t` fires when the
//! monotonic clock reaches the instant that stands for `t`, whatever the wall clock does meanwhile.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    origin: Instant,
    origin_unix_ms: i64,
}

impl Clock {
    /// Anchored now.
    pub(crate) fn start() -> Clock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock::anchored(Instant::now(), unix_ms)
    }

    /// `origin` stands for `origin_unix_ms` (tests pass both).
    pub(crate) fn anchored(origin: Instant, origin_unix_ms: i64) -> Clock {
        Clock {
            origin,
            origin_unix_ms,
        }
    }

    /// The Unix second `at` stands for.
    pub(crate) fn unix_secs(&self, at: Instant) -> i64 {
        let offset_ms = if at >= self.origin {
            (at - self.origin).as_millis() as i64
        } else {
            -((self.origin - at).as_millis() as i64)
        };
        (self.origin_unix_ms + offset_ms).div_euclid(1000)
    }

    /// The instant that stands for Unix second `secs` (the origin itself when `secs` lies so far
    /// back that no instant can stand for it).
    pub(crate) fn instant_of(&self, secs: i64) -> Instant {
        let offset_ms = secs.saturating_mul(1000) - self.origin_unix_ms;
        if offset_ms >= 0 {
            self.origin + Duration::from_millis(offset_ms as u64)
        } else {
            self.origin
                .checked_sub(Duration::from_millis(offset_ms.unsigned_abs()))
                .unwrap_or(self.origin)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_unix_seconds_convert_both_ways() {
        let origin = Instant::now() + Duration::from_secs(3600);
        let clock = Clock::anchored(origin, 1_700_000_000_500);
        assert_eq!(clock.unix_secs(origin), 1_700_000_000);
        assert_eq!(
            clock.unix_secs(origin + Duration::from_millis(499)),
            1_700_000_000
        );
        assert_eq!(
            clock.unix_secs(origin + Duration::from_millis(500)),
            1_700_000_001
        );
        assert_eq!(
            clock.unix_secs(origin - Duration::from_secs(10)),
            1_699_999_990
        );
        assert_eq!(
            clock.instant_of(1_700_000_300),
            origin + Duration::from_millis(299_500)
        );
        assert_eq!(
            clock.instant_of(1_699_999_990),
            origin - Duration::from_millis(10_500)
        );
        assert_eq!(
            clock.unix_secs(clock.instant_of(1_700_000_300)),
            1_700_000_300
        );
    }
}
