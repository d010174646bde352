//! Percentiles of latency samples.

use std::time::Duration;

/// Samples in milliseconds, kept sorted.
#[derive(Clone, Default)]
pub struct Samples {
    sorted: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, sample: Duration) {
        self.push_value(sample.as_secs_f64() * 1000.0);
    }

    /// A plain number (a ratio, say) rather than a duration.
    pub fn push_value(&mut self, value: f64) {
        let at = self.sorted.partition_point(|v| *v <= value);
        self.sorted.insert(at, value);
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile (`p` in 0..=100); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = (p / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(0.0)
    }

    /// The samples in ascending order.
    pub fn sorted(&self) -> &[f64] {
        &self.sorted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for v in [5.0, 1.0, 4.0, 2.0, 3.0] {
            s.push_value(v);
        }
        assert_eq!(s.sorted(), &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.p50(), 3.0);
        assert_eq!(s.percentile(90.0), 5.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(Samples::default().p50(), 0.0);
    }
}
