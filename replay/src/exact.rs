//! Exact, order-independent sums of `f64` values.
//!
//! The end-to-end checks compare the sum of a participant's values in the source files with
//! the sum over the database (and later the archive). A plain floating-point sum depends on
//! the order of the additions, which a database does not promise; the *correctly rounded*
//! value of the exact sum does not. [`ExactSum`] computes it with Shewchuk's algorithm
//! ("Adaptive Precision Floating-Point Arithmetic and Fast Robust Geometric Predicates",
//! 1997), ported from CPython's `math.fsum`, so the report script (Python, `math.fsum`) and
//! the Rust tests get the same bits.

/// Accumulator whose [`value`](Self::value) is the exact sum of the added values, rounded
/// once to the nearest `f64` (ties to even). Finite inputs only: the parsers drop
/// non-finite values before they get here.
#[derive(Debug, Clone, Default)]
pub struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    /// An empty sum (value 0.0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x` exactly (as a set of non-overlapping partial sums).
    pub fn add(&mut self, mut x: f64) {
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// Adds every value of another sum.
    pub fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The exact sum rounded to the nearest `f64` (CPython `math.fsum`'s final step).
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even: when the remainder is exactly half an ulp and the next partial
        // has the same sign, the rounding of hi must go the other way.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsum(v: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        v.iter().for_each(|&x| s.add(x));
        s.value()
    }

    #[test]
    fn matches_python_fsum_examples() {
        // Values from CPython's test_math.testFsum.
        assert_eq!(fsum(&[]), 0.0);
        assert_eq!(
            fsum(&[1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]),
            1e-100
        );
        assert_eq!(
            fsum(&[2.0f64.powi(53), -0.5, -2.0f64.powi(-54)]),
            2.0f64.powi(53) - 1.0
        );
        assert_eq!(
            fsum(&[2.0f64.powi(53), 1.0, 2.0f64.powi(-100)]),
            2.0f64.powi(53) + 2.0
        );
        assert_eq!(fsum(&[0.1; 10]), 1.0);
    }

    #[test]
    fn order_does_not_matter() {
        let v: Vec<f64> = (0..10_000)
            .map(|i| (i as f64 * 0.7311).sin() * 1e3 + 1e-3)
            .collect();
        let mut r = v.clone();
        r.reverse();
        assert_eq!(fsum(&v).to_bits(), fsum(&r).to_bits());
        let mut a = ExactSum::new();
        let mut b = ExactSum::new();
        v[..5000].iter().for_each(|&x| a.add(x));
        v[5000..].iter().for_each(|&x| b.add(x));
        a.merge(&b);
        assert_eq!(a.value().to_bits(), fsum(&v).to_bits());
    }
}
