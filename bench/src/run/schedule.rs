//! When each produce request is meant to go out.
//!
//! A fixed-rate producer's k-th request is due at `origin + phase + k ×
//! interval`, whether or not the previous ones were answered. Its publish
//! latency is measured from that intended time, not from when a free slot
//! finally sent it: a server that stalls is charged for every request
//! that waited behind the stall (no coordinated omission). A max-rate
//! producer has no schedule; each request is timed from its own send.

use std::time::{Duration, Instant};

/// Above this many messages per second a workload is "max rate" (OMB's
/// max-rate files ask for 10,000,000 and mean "as fast as acknowledged").
pub const MAX_RATE_FROM: u64 = 5_000_000;

/// The send times of one producer.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    origin: Instant,
    phase_ns: u64,
    /// 0 at max rate.
    interval_ns: u64,
}

impl Schedule {
    /// Producer `index` of `producers` sharing `rate` messages per second
    /// in requests of `batch` messages; producers are phased evenly, so
    /// their sends interleave instead of coinciding.
    pub fn new(origin: Instant, rate: u64, batch: usize, producers: usize, index: usize) -> Self {
        if rate == 0 || rate >= MAX_RATE_FROM {
            return Schedule {
                origin,
                phase_ns: 0,
                interval_ns: 0,
            };
        }
        let producers = producers.max(1) as u64;
        let interval_ns = (1_000_000_000u128 * batch as u128 * producers as u128 / rate as u128)
            .clamp(1, u64::MAX as u128) as u64;
        Schedule {
            origin,
            phase_ns: interval_ns / producers * index as u64,
            interval_ns,
        }
    }

    /// True when sends follow the clock rather than acknowledgements.
    pub fn is_fixed_rate(&self) -> bool {
        self.interval_ns > 0
    }

    /// When request `k` is due (`None` at max rate: at once).
    pub fn intended(&self, k: u64) -> Option<Instant> {
        if !self.is_fixed_rate() {
            return None;
        }
        let ns = self
            .phase_ns
            .saturating_add(k.saturating_mul(self.interval_ns));
        Some(self.origin + Duration::from_nanos(ns))
    }

    /// The publish latency of request `k`, sent at `sent` and acknowledged
    /// at `acked`: from its intended time at a fixed rate, else from
    /// `sent`.
    pub fn latency(&self, k: u64, sent: Instant, acked: Instant) -> Duration {
        let from = self.intended(k).unwrap_or(sent);
        acked.saturating_duration_since(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_sends_are_spaced_and_phased() {
        let origin = Instant::now();
        // 1,000 msg/s in requests of 10 over 2 producers: each producer
        // sends 50 requests a second, 20 ms apart, the second 10 ms later.
        let a = Schedule::new(origin, 1_000, 10, 2, 0);
        let b = Schedule::new(origin, 1_000, 10, 2, 1);
        assert!(a.is_fixed_rate());
        let at = |s: &Schedule, k| s.intended(k).expect("fixed").duration_since(origin);
        assert_eq!(at(&a, 0), Duration::ZERO);
        assert_eq!(at(&a, 3), Duration::from_millis(60));
        assert_eq!(at(&b, 0), Duration::from_millis(10));
        assert_eq!(at(&b, 3), Duration::from_millis(70));
    }

    #[test]
    fn a_late_send_is_charged_from_its_intended_time() {
        let origin = Instant::now();
        let s = Schedule::new(origin, 100, 1, 1, 0); // every 10 ms
        // Request 5 was due at 50 ms; every slot was busy until 300 ms,
        // and the server answered it in 1 ms.
        let sent = origin + Duration::from_millis(300);
        let acked = sent + Duration::from_millis(1);
        assert_eq!(s.latency(5, sent, acked), Duration::from_millis(251));
    }

    #[test]
    fn max_rate_is_timed_from_the_send() {
        let origin = Instant::now();
        let s = Schedule::new(origin, 10_000_000, 100, 4, 2);
        assert!(!s.is_fixed_rate());
        assert_eq!(s.intended(7), None);
        let sent = origin + Duration::from_secs(5);
        assert_eq!(
            s.latency(7, sent, sent + Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }
}
