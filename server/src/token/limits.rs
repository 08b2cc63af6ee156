//! Abuse resistance of the token endpoint: a rate per client IP, and a
//! cap on new assignments per minute (global), so an attacker with
//! unlimited identities fills groups no faster than the cap. Both are
//! in-memory on each node; limits are per node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked; past it the idlest are forgotten.
const CLIENTS_MAX: usize = 100_000;

/// A token bucket per client address.
#[derive(Debug)]
pub struct PerClient {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl PerClient {
    /// `per_s` requests a second with bursts of `burst` (0: unlimited).
    pub fn new(per_s: u32, burst: u32) -> PerClient {
        PerClient {
            per_s: f64::from(per_s),
            burst: f64::from(burst.max(per_s)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `client` at `now`; `false` when over the rate.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        if self.per_s == 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= CLIENTS_MAX && !buckets.contains_key(&client) {
            let horizon = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
            buckets.retain(|_, (_, at)| *at > horizon);
            if buckets.len() >= CLIENTS_MAX {
                return false;
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_s;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// New assignments allowed per minute, over a sliding minute.
#[derive(Debug)]
pub struct NewUsers {
    per_minute: usize,
    recent: Mutex<std::collections::VecDeque<Instant>>,
}

impl NewUsers {
    /// At most `per_minute` new users a minute (0: unlimited).
    pub fn new(per_minute: u32) -> NewUsers {
        NewUsers {
            per_minute: per_minute as usize,
            recent: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Reserves one new assignment at `now`; `false` when the minute is
    /// full.
    pub fn reserve(&self, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
        if recent.len() >= self.per_minute {
            return false;
        }
        recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate() {
        let limit = PerClient::new(2, 2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        assert!(limit.allow(ip, t0));
        assert!(limit.allow(ip, t0));
        assert!(!limit.allow(ip, t0), "the burst is spent");
        assert!(
            limit.allow(ip, t0 + Duration::from_millis(500)),
            "one refilled"
        );
        assert!(limit.allow([10, 0, 0, 1].into(), t0), "per client");
        assert!(PerClient::new(0, 0).allow(ip, t0), "0 is unlimited");
    }

    #[test]
    fn new_users_are_capped_per_sliding_minute() {
        let cap = NewUsers::new(2);
        let t0 = Instant::now();
        assert!(cap.reserve(t0));
        assert!(cap.reserve(t0 + Duration::from_secs(30)));
        assert!(!cap.reserve(t0 + Duration::from_secs(59)));
        assert!(
            cap.reserve(t0 + Duration::from_secs(60)),
            "the first left the window"
        );
    }
}
