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

// Used by the rate limiter and retry (jitter, hashing).
#[cfg_attr(not(all(feature = "rate", feature = "retry")), allow(dead_code))]
/// The SplitMix64 output function (Steele, Lea, Flood 2014).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// Used by the rate limiter and retry (jitter, hashing).
#[cfg_attr(not(all(feature = "rate", feature = "retry")), allow(dead_code))]
/// The SplitMix64 increment.
pub(crate) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

// Used by the rate limiter and retry (jitter, hashing).
#[cfg_attr(not(all(feature = "rate", feature = "retry")), allow(dead_code))]
/// A lock-free random source shared by every task of a layer (for
/// jitter): SplitMix64 over an atomic counter.
#[derive(Debug)]
pub(crate) struct SharedRng(AtomicU64);

#[cfg_attr(not(all(feature = "rate", feature = "retry")), allow(dead_code))]
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

/// `get_ref`, `get_mut` and `into_inner` of a middleware service whose
/// field `inner` is the wrapped `S` — or, with `(Inner)`, an [`Inner<S>`].
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }
        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }
        /// Consumes this service, returning the inner one.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
    (Inner) => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            self.inner.get_ref()
        }
        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            self.inner.get_mut()
        }
        /// Consumes this service, returning the inner one.
        pub fn into_inner(self) -> S {
            self.inner.into_inner()
        }
    };
}
pub(crate) use inner_service_accessors;

#[cfg(any(
    feature = "rate",
    feature = "concurrency",
    feature = "cache",
    feature = "fallback",
    feature = "budget"
))]
pub(crate) use slow_path::SlowPath;

#[cfg(any(
    feature = "rate",
    feature = "concurrency",
    feature = "cache",
    feature = "fallback",
    feature = "budget"
))]
mod slow_path {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use http::Response;

    use crate::error::BoxError;
    use crate::response::ResponseBody;

    /// A boxed `async` slow path answering a response: a waiting limiter, a
    /// cache lookup, a fallback chain. Its type cannot be named, hence the box
    /// (paid only off the fast path); it is freed once it has answered, and
    /// polled again it answers an error instead of panicking as a finished
    /// `async` block would.
    pub(crate) struct SlowPath(Option<Pin<Box<dyn Future<Output = Answer> + Send>>>);

    type Answer = Result<Response<ResponseBody>, BoxError>;

    impl SlowPath {
        pub(crate) fn new(fut: impl Future<Output = Answer> + Send + 'static) -> Self {
            SlowPath(Some(Box::pin(fut)))
        }

        /// Whether it has not answered yet.
        pub(crate) fn is_pending(&self) -> bool {
            self.0.is_some()
        }

        /// Polls the path; `after` is the error once it has answered.
        pub(crate) fn poll(&mut self, cx: &mut Context<'_>, after: &'static str) -> Poll<Answer> {
            let Some(fut) = self.0.as_mut() else {
                return Poll::Ready(Err(after.into()));
            };
            let res = ready!(fut.as_mut().poll(cx));
            self.0 = None;
            Poll::Ready(res)
        }
    }
}

/// The service a response future will drive, with a clone left in its
/// place (tower's clone-and-swap): the one given away is the one whose
/// readiness the caller may just have seen.
pub(crate) fn hand_off<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

/// A fresh clone for a response future that waits (for admission) before
/// it asks the service's readiness itself. The instance the caller may just
/// have made ready is dropped, a clone taking its place: whatever it
/// reserved when asked (tower's `ConcurrencyLimit` takes a permit) is not
/// held by a request that is still waiting.
#[cfg(any(feature = "rate", feature = "concurrency", feature = "budget"))]
pub(crate) fn unready_clone<S: Clone>(service: &mut S) -> S {
    let fresh = service.clone();
    drop(std::mem::replace(service, fresh.clone()));
    fresh
}

/// An inner service with *opportunistic readiness* (ARCHITECTURE.md): a
/// layer whose own `poll_ready` is always ready also asks its inner service,
/// without waiting, and when that one said it was ready, `call` sends on
/// it at once — no clone of the layers below, no state machine.
pub(crate) struct Inner<S> {
    service: S,
    /// `service` said it is ready, and has not been called since.
    ready: bool,
}

impl<S> Inner<S> {
    pub(crate) fn new(service: S) -> Self {
        Inner {
            service,
            ready: false,
        }
    }

    /// Asks the inner service's readiness without waiting for it. A
    /// `Pending` only costs a spurious wake-up, which every future
    /// tolerates; an error is met again by the response future that waits
    /// for readiness itself.
    pub(crate) fn ask<R>(&mut self, cx: &mut std::task::Context<'_>)
    where
        S: tower_service::Service<R>,
    {
        if !self.ready && matches!(self.service.poll_ready(cx), std::task::Poll::Ready(Ok(()))) {
            self.ready = true;
        }
    }

    /// Whether the inner service said it was ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Asks the inner service's readiness at the call, for a request that
    /// is sent on it at once if it is ready — so what a service reserves
    /// when asked is never held by a request that does not call it (a
    /// cache hit, a body still to read). There is no task to wake: a
    /// `Pending` is met again by the response future, which asks with its
    /// own waker.
    pub(crate) fn ready_now<R>(&mut self) -> bool
    where
        S: tower_service::Service<R>,
    {
        self.ask::<R>(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        self.is_ready()
    }

    /// Sends on the inner service, which said it was ready (see
    /// [`is_ready`](Self::is_ready)); its readiness is used up.
    pub(crate) fn call_ready<R>(&mut self, req: R) -> S::Future
    where
        S: tower_service::Service<R>,
    {
        debug_assert!(self.ready, "the inner service was not ready");
        self.ready = false;
        self.service.call(req)
    }

    /// The inner service for a response future to drive (ready or not), a
    /// clone left in its place.
    pub(crate) fn hand_off(&mut self) -> S
    where
        S: Clone,
    {
        self.ready = false;
        hand_off(&mut self.service)
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.service
    }

    /// Whoever changes the service may change its readiness: forgotten.
    pub(crate) fn get_mut(&mut self) -> &mut S {
        self.ready = false;
        &mut self.service
    }

    pub(crate) fn into_inner(self) -> S {
        self.service
    }
}

/// Readiness belongs to the instance that was asked: a clone starts without.
impl<S: Clone> Clone for Inner<S> {
    fn clone(&self) -> Self {
        Inner::new(self.service.clone())
    }
}

/// As the service itself.
impl<S: std::fmt::Debug> std::fmt::Debug for Inner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.service.fmt(f)
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
