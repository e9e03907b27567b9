//! Small helpers several modules share.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};

/// Moves `value` out as a `T` when it is one (a generic that is, at run
/// time, a concrete type this crate knows — as axum's `Body::new` does),
/// else hands it back.
#[inline(always)]
pub(crate) fn downcast<T: 'static, U: 'static>(value: U) -> Result<T, U> {
    let mut slot = Some(value);
    if let Some(t) = (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        return t.take().ok_or_else(unreachable_none::<U>);
    }
    match slot {
        Some(u) => Err(u),
        None => unreachable_none(),
    }
}

/// `slot` is `Some` on both paths above; never called.
#[cold]
fn unreachable_none<U>() -> U {
    unreachable!("the slot was just filled")
}

/// The SplitMix64 output function (Steele, Lea, Flood 2014).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The SplitMix64 increment.
pub(crate) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A lock-free random source shared by every task of a layer (for
/// jitter): SplitMix64 over an atomic counter.
#[derive(Debug)]
pub(crate) struct SharedRng(AtomicU64);

impl SharedRng {
    pub(crate) fn new(seed: u64) -> Self {
        SharedRng(AtomicU64::new(seed))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        splitmix64(self.0.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downcast_moves_or_returns() {
        assert_eq!(downcast::<String, String>("a".into()), Ok("a".to_owned()));
        assert_eq!(downcast::<String, u8>(7), Err(7));
    }

    #[test]
    fn shared_rng_spreads() {
        let r = SharedRng::new(1);
        let xs: Vec<f64> = (0..1000).map(|_| r.unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = xs.iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half}");
    }
}
