//! The export rate limit (`archive.rows_per_second`): a GCRA token bucket from `governor`,
//! shared by every export of the process, so that archiving reads the shards no faster than
//! configured and leaves them to live ingest.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

/// A rows-per-second limiter; `None` inside means unlimited.
#[derive(Debug, Clone)]
pub struct RowLimiter {
    inner: Option<Arc<DefaultDirectRateLimiter>>,
    burst: u32,
}

impl RowLimiter {
    /// `rows_per_second` rows a second (0: unlimited), with bursts of up to one batch
    /// (`batch_rows`) so that a batch never waits for more than it needs.
    pub fn new(rows_per_second: u32, batch_rows: usize) -> Self {
        let burst = u32::try_from(batch_rows).unwrap_or(u32::MAX).max(1);
        let inner = NonZeroU32::new(rows_per_second).map(|rate| {
            let b = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(b)))
        });
        Self { inner, burst }
    }

    /// Waits until `rows` more rows may be read.
    pub async fn acquire(&self, rows: usize) {
        let Some(l) = &self.inner else { return };
        let mut left = u32::try_from(rows).unwrap_or(u32::MAX);
        while left > 0 {
            let take = left.min(self.burst);
            if let Some(n) = NonZeroU32::new(take) {
                // `take` never exceeds the burst, so capacity is always sufficient.
                let _ = l.until_n_ready(n).await;
            }
            left -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn limits_rows_per_second() {
        let l = RowLimiter::new(10_000, 1_000);
        let t = Instant::now();
        for _ in 0..6 {
            l.acquire(1_000).await;
        }
        // 1,000 rows of burst, then 5,000 rows at 10,000 rows/s: about 0.5 s.
        assert!(t.elapsed().as_secs_f64() >= 0.45, "{:?}", t.elapsed());
        let u = RowLimiter::new(0, 1_000);
        let t = Instant::now();
        u.acquire(10_000_000).await;
        assert!(t.elapsed().as_secs_f64() < 0.1);
    }
}
