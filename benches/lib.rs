//! Benchmarks for telejob; see `benches/` and BENCHMARKS.md. This library holds what the bench
//! targets share, so that the figures compared side by side are computed the same way.

/// The `q` quantile (0.0–1.0) of `sorted` by nearest rank; NaN when it is empty. The scheduler
/// bench and the sleep baseline both use it, so their p50 and p99 compare like for like.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
