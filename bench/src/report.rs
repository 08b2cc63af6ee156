//! What a run prints: rates and latency percentiles.

use hdrhistogram::Histogram;

/// Latency percentiles of a histogram of microseconds, as one line.
pub fn latency_line(label: &str, h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    format!(
        "{label}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        ms(0.50),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1_000.0,
        h.len()
    )
}

/// A fresh histogram of microseconds, 1 µs ..= 1 h, 3 significant digits
/// (a few hundred KiB).
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut h = histogram().expect("histogram");
        for v in 1..=1_000u64 {
            h.record(v * 1_000).expect("in range");
        }
        let line = latency_line("x", &h);
        assert!(line.starts_with("x: p50 500."), "{line}");
        assert!(line.contains("max 1000."), "{line}");
    }
}
