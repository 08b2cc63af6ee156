//! Abuse resistance of the token endpoint: a rate per client IP, and a
//! cap on new assignments per minute (in all and per issuer), so an attacker with
//! unlimited identities fills groups no faster than the cap. Both are
//! in-memory on each node; limits are per node.

use std::collections::{HashMap, VecDeque};
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

/// Most issuers whose recent new users are tracked. Issuers come from
/// verified credentials only (an allow-listed JWT issuer or the remote
/// verifier's answer), so this bounds memory, not an attacker's choice.
const ISSUERS_MAX: usize = 10_000;

/// A sliding minute.
const MINUTE: Duration = Duration::from_secs(60);

/// New assignments allowed per minute, in all and per issuer, over a
/// sliding minute. The per-issuer cap keeps one identity provider (or an
/// attacker minting identities at one) from taking the whole global cap.
#[derive(Debug)]
pub struct NewUsers {
    per_minute: usize,
    per_issuer_per_minute: usize,
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    all: VecDeque<Instant>,
    by_issuer: HashMap<String, VecDeque<Instant>>,
}

/// Drops the times that left the minute ending at `now`.
fn slide(window: &mut VecDeque<Instant>, now: Instant) {
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
    {
        window.pop_front();
    }
}

impl NewUsers {
    /// At most `per_minute` new users a minute, and `per_issuer_per_minute`
    /// from any one issuer (0: unlimited).
    pub fn new(per_minute: u32, per_issuer_per_minute: u32) -> NewUsers {
        NewUsers {
            per_minute: per_minute as usize,
            per_issuer_per_minute: per_issuer_per_minute as usize,
            windows: Mutex::new(Windows::default()),
        }
    }

    /// Reserves one new assignment for a user of `issuer` at `now`;
    /// `false` when either minute is full (nothing is then counted).
    pub fn reserve(&self, issuer: &str, now: Instant) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        slide(&mut w.all, now);
        if self.per_minute != 0 && w.all.len() >= self.per_minute {
            return false;
        }
        if self.per_issuer_per_minute != 0 {
            if w.by_issuer.len() >= ISSUERS_MAX && !w.by_issuer.contains_key(issuer) {
                w.by_issuer.retain(|_, window| {
                    slide(window, now);
                    !window.is_empty()
                });
                if w.by_issuer.len() >= ISSUERS_MAX {
                    return false;
                }
            }
            let window = w.by_issuer.entry(issuer.to_string()).or_default();
            slide(window, now);
            if window.len() >= self.per_issuer_per_minute {
                return false;
            }
            window.push_back(now);
        }
        if self.per_minute != 0 {
            w.all.push_back(now);
        }
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
        let cap = NewUsers::new(2, 0);
        let t0 = Instant::now();
        assert!(cap.reserve("a", t0));
        assert!(cap.reserve("b", t0 + Duration::from_secs(30)));
        assert!(!cap.reserve("c", t0 + Duration::from_secs(59)));
        assert!(
            cap.reserve("c", t0 + Duration::from_secs(60)),
            "the first left the window"
        );
    }

    #[test]
    fn one_issuer_cannot_take_the_global_cap() {
        let cap = NewUsers::new(10, 3);
        let t0 = Instant::now();
        let granted = (0..10_000).filter(|_| cap.reserve("mass", t0)).count();
        assert_eq!(granted, 3, "one issuer is held to its own cap");
        assert!(cap.reserve("other", t0), "another issuer still gets in");
        // Refusals took nothing from the global minute: 4 of 10 used.
        let more = (0..10)
            .filter(|i| cap.reserve(&format!("i{i}"), t0))
            .count();
        assert_eq!(more, 6);
        assert!(
            cap.reserve("mass", t0 + Duration::from_secs(60)),
            "its minute slid"
        );
        assert!(NewUsers::new(0, 0).reserve("any", t0), "0 is unlimited");
    }
}
