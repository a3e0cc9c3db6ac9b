//! Reconnect delays for outbound connections (push destinations, origin pulls).

use std::time::Duration;

/// Capped exponential backoff with +-50 % jitter, so many destinations failing together
/// do not reconnect in lockstep.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, seed: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let mut x = seed ^ (u64::from(attempt) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let jitter = 0.5 + (x % 1000) as f64 / 1000.0; // 0.5 .. 1.5
    exp.mul_f64(jitter).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        for attempt in 0..20 {
            let d = backoff(attempt, base, cap, 42);
            let exp = base.saturating_mul(1 << attempt.min(16)).min(cap);
            assert!(d <= cap, "{d:?}");
            assert!(
                d >= exp / 2 && d <= exp.mul_f64(1.5),
                "attempt {attempt}: {d:?}"
            );
        }
        assert_ne!(backoff(3, base, cap, 1), backoff(3, base, cap, 2));
    }
}
