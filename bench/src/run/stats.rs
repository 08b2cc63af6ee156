//! What a run counts: messages and bytes published and consumed, publish
//! errors, and two latency histograms (publish: send → acknowledgement;
//! end-to-end: intended send → consumer receipt), in microseconds.
//!
//! Producers and consumers record into one shared [`Stats`]; once a
//! second the run takes the period's histograms out ([`Stats::tick`]) and
//! a [`Collector`] turns each period into a point of the time series and
//! merges the measured periods into the run's totals. Recording is one
//! short lock per request or per received batch, never per message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::histogram;

/// Counters and the current period's histograms.
pub struct Stats {
    published: AtomicU64,
    published_bytes: AtomicU64,
    publish_errors: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    period: Mutex<Period>,
}

/// The histograms of one period.
pub struct Period {
    /// Publish latency, µs.
    pub publish: Histogram<u64>,
    /// End-to-end latency, µs.
    pub end_to_end: Histogram<u64>,
}

impl Period {
    fn new() -> anyhow::Result<Period> {
        Ok(Period {
            publish: histogram()?,
            end_to_end: histogram()?,
        })
    }
}

/// Counter values at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages acknowledged.
    pub published: u64,
    /// Their payload bytes.
    pub published_bytes: u64,
    /// Messages whose produce request failed.
    pub publish_errors: u64,
    /// Messages received by consumers (all subscriptions).
    pub consumed: u64,
    /// Their payload bytes.
    pub consumed_bytes: u64,
}

impl Stats {
    /// Empty counters.
    pub fn new() -> anyhow::Result<Stats> {
        Ok(Stats {
            published: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            period: Mutex::new(Period::new()?),
        })
    }

    /// A produce request of `messages` (`bytes` in all) was acknowledged
    /// after `latency`.
    pub fn published(&self, messages: u64, bytes: u64, latency: Duration) {
        self.published.fetch_add(messages, Ordering::Relaxed);
        self.published_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut p) = self.period.lock() {
            p.publish
                .saturating_record(latency.as_micros().min(u64::MAX as u128) as u64);
        }
    }

    /// A produce request of `messages` failed.
    pub fn publish_failed(&self, messages: u64) {
        self.publish_errors.fetch_add(messages, Ordering::Relaxed);
    }

    /// A consumer received messages at `now_us` (the run's clock) with
    /// these stamps (`None`: a payload too short to carry one).
    pub fn consumed(&self, stamps: &[Option<u64>], bytes: u64, now_us: u64) {
        self.consumed
            .fetch_add(stamps.len() as u64, Ordering::Relaxed);
        self.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut p) = self.period.lock() {
            for stamp in stamps.iter().flatten() {
                p.end_to_end
                    .saturating_record(now_us.saturating_sub(*stamp));
            }
        }
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            published: self.published.load(Ordering::Relaxed),
            published_bytes: self.published_bytes.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
            consumed_bytes: self.consumed_bytes.load(Ordering::Relaxed),
        }
    }

    /// Ends the current period: its histograms, and the counters now.
    pub fn tick(&self) -> anyhow::Result<(Period, Counts)> {
        let fresh = Period::new()?;
        let period = match self.period.lock() {
            Ok(mut p) => std::mem::replace(&mut *p, fresh),
            Err(_) => anyhow::bail!("a recorder panicked"),
        };
        Ok((period, self.counts()))
    }
}

/// Latency percentiles in milliseconds, OMB's set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Mean.
    pub avg: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 75th.
    pub p75: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of microseconds (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Percentiles {
            avg: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p75: ms(h.value_at_quantile(0.75)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            p9999: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        }
    }
}

/// One second of a run.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Messages acknowledged per second.
    pub publish_rate: f64,
    /// Failed messages per second.
    pub publish_error_rate: f64,
    /// Messages received per second (all subscriptions).
    pub consume_rate: f64,
    /// Messages published and not yet received, per subscription summed.
    pub backlog: i64,
    /// Publish latency.
    pub publish: Percentiles,
    /// End-to-end latency.
    pub end_to_end: Percentiles,
}

/// The measured part of a run: a point per period and the merged totals.
pub struct Collector {
    subscriptions: u64,
    last: Counts,
    /// The points, oldest first.
    pub points: Vec<Point>,
    /// Publish latency over every measured period.
    pub publish: Histogram<u64>,
    /// End-to-end latency over every measured period.
    pub end_to_end: Histogram<u64>,
}

impl Collector {
    /// A collector starting from `counts` (taken when measuring began);
    /// each published message is due once per subscription.
    pub fn new(counts: Counts, subscriptions: u64) -> anyhow::Result<Collector> {
        Ok(Collector {
            subscriptions,
            last: counts,
            points: Vec::new(),
            publish: histogram()?,
            end_to_end: histogram()?,
        })
    }

    /// Adds a period of `secs` seconds; returns its point.
    pub fn add(&mut self, period: &Period, counts: Counts, secs: f64) -> anyhow::Result<Point> {
        let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs.max(1e-9);
        let point = Point {
            publish_rate: per_s(counts.published, self.last.published),
            publish_error_rate: per_s(counts.publish_errors, self.last.publish_errors),
            consume_rate: per_s(counts.consumed, self.last.consumed),
            backlog: backlog(counts, self.subscriptions),
            publish: Percentiles::of(&period.publish),
            end_to_end: Percentiles::of(&period.end_to_end),
        };
        self.publish.add(&period.publish)?;
        self.end_to_end.add(&period.end_to_end)?;
        self.last = counts;
        self.points.push(point);
        Ok(point)
    }
}

/// Messages not yet received: published × subscriptions − consumed.
pub fn backlog(counts: Counts, subscriptions: u64) -> i64 {
    let due = counts.published.saturating_mul(subscriptions);
    (due as i128 - counts.consumed as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_merge_into_the_totals() {
        let stats = Stats::new().expect("stats");
        let mut c = Collector::new(stats.counts(), 2).expect("collector");
        // Period 1: two producers' requests, 10 messages each.
        stats.published(10, 1_000, Duration::from_millis(1));
        stats.published(10, 1_000, Duration::from_millis(2));
        stats.consumed(&[Some(0), Some(0), None], 300, 2_000);
        let (period, counts) = stats.tick().expect("tick");
        let first = c.add(&period, counts, 1.0).expect("add");
        assert_eq!(first.publish_rate, 20.0);
        assert_eq!(first.consume_rate, 3.0);
        assert_eq!(first.backlog, 2 * 20 - 3);
        assert_eq!(first.publish.max, 2.0);
        assert_eq!(first.end_to_end.p50, 2.0);
        // Period 2: one slow request, over half a second.
        stats.published(5, 500, Duration::from_millis(100));
        stats.publish_failed(5);
        let (period, counts) = stats.tick().expect("tick");
        let second = c.add(&period, counts, 0.5).expect("add");
        assert_eq!(second.publish_rate, 10.0);
        assert_eq!(second.publish_error_rate, 10.0);
        assert!(
            close(second.publish.p50, 100.0),
            "a period holds its own samples"
        );
        // The totals hold all three requests.
        assert_eq!(c.publish.len(), 3);
        assert!(close(Percentiles::of(&c.publish).max, 100.0));
        assert_eq!(Percentiles::of(&c.publish).p50, 2.0);
        assert_eq!(c.end_to_end.len(), 2);
        assert_eq!(c.points.len(), 2);
    }

    /// Equal within HdrHistogram's 3 significant digits.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() / 1_000.0
    }

    #[test]
    fn an_empty_period_reports_zeros() {
        let p = Percentiles::of(&histogram().expect("histogram"));
        assert_eq!(p, Percentiles::default());
    }
}
