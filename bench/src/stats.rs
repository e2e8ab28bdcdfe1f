//! Summaries of measured samples: median, 99th percentile, extremes.
//!
//! Percentiles are taken by rank on the sorted samples (nearest rank, no interpolation), so a
//! reported p99 is a figure that was actually measured.

use std::time::Duration;

use serde::Serialize;

/// A summary of samples in one base unit (seconds, bytes, or a rate).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Summarizes `values`; `None` when there are none (a measurement that produced nothing is
    /// an error for the caller to report, never a zero).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let rank = |p: usize| sorted[((n * p).div_ceil(100)).saturating_sub(1).min(n - 1)];
        Some(Summary {
            n,
            median: if n % 2 == 1 {
                sorted[n / 2]
            } else {
                (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
            },
            p99: rank(99),
            min: sorted[0],
            max: sorted[n - 1],
            mean: sorted.iter().sum::<f64>() / n as f64,
        })
    }

    /// Summarizes durations, in seconds.
    pub fn of_durations(samples: &[Duration]) -> Option<Summary> {
        Summary::of(&samples.iter().map(Duration::as_secs_f64).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn median_and_p99_by_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = Summary::of(&values).unwrap();
        assert_eq!(s.n, 200);
        assert_eq!(s.median, 100.5);
        assert_eq!(s.p99, 198.0);
        assert_eq!((s.min, s.max), (1.0, 200.0));
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.p99), (7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }
}
