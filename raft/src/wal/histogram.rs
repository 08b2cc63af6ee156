//! A fixed-bucket histogram, shaped as Prometheus exposes one: cumulative
//! counts per upper bound, a sum and a count. Cheap to update under a lock
//! the caller already holds.

/// A histogram over fixed upper bounds (ascending; an implicit `+Inf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: Vec<u64>,
    sum: u64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    /// The upper bounds.
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Cumulative counts per bound, then the total (`+Inf`).
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0u64, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }

    /// The sum of all values.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The number of values.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 2, 10, 11, 1_000] {
            h.observe(v);
        }
        assert_eq!(h.cumulative(), vec![2, 4, 5, 6]);
        assert_eq!((h.sum(), h.count()), (1_024, 6));
    }
}
