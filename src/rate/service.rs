use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::{Hold, ResponseFuture, Via};
use super::pool::Choice;
use super::pool::admit::too_large;
use super::state::{Attempt, GroupKey, Limiter};
use super::stats::GroupStats;
use crate::error::{BoxError, NoKeyAvailable};
use crate::queue::Priority;
use crate::request::{Deadline, KeyId, RequestMeta};
use crate::response::ResponseBody;
use crate::sync::Arc;

/// Token-bucket admission in front of `S` — made by
/// [`RateLimitLayer`](super::RateLimitLayer).
///
/// `poll_ready` is the inner service's readiness: admission depends on the
/// request (its cost, group and priority), so `call` decides it. When no
/// request of the group is waiting and the cost fits now, `call` reserves
/// and sends on the ready `S` at once; otherwise the response future waits
/// its turn in the queue with a clone of `S`, then drives it
/// (`poll_ready` → `call`).
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> RateLimit<S> {
    pub(crate) fn from_limiter(inner: S, limiter: Arc<Limiter>) -> Self {
        RateLimit { inner, limiter }
    }
    /// `inner` behind a rate limiter of its own with these limits for
    /// every group ([`RateLimitLayer::new`](super::RateLimitLayer::new)).
    pub fn new(inner: S, limits: super::Limits) -> Self {
        tower_layer::Layer::layer(&super::RateLimitLayer::new(limits), inner)
    }
    /// A layer with these limits for every group: the same as
    /// [`RateLimitLayer::new`](super::RateLimitLayer::new).
    pub fn layer(limits: super::Limits) -> super::RateLimitLayer {
        super::RateLimitLayer::new(limits)
    }
    crate::util::inner_service_accessors!();
    /// A snapshot of every limit group.
    pub fn stats(&self) -> Vec<GroupStats> {
        self.limiter.stats()
    }
}

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The inner service's readiness: admission is decided per request
        // (its cost, group and priority are in the request).
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = self.limiter.shared();
        let config = &shared.config;
        let meta = RequestMeta::for_request(&mut req);
        // A body that cannot be read is charged an estimate (never nothing),
        // or refused, as configured.
        let cost = match config.cost(meta.as_deref(), req.headers()) {
            Ok(cost) => cost,
            Err(refused) => return ResponseFuture::refused(refused.into()),
        };
        let key_id = KeyId::of(&req);
        if key_id.is_none()
            && let Some(pool) = &config.pool
        {
            // No credentials of its own: a key of the pool, chosen now.
            let model = meta.as_ref().and_then(|m| m.model_arc().cloned());
            let priced = match pool.pricing(meta.as_deref()) {
                Ok(priced) => priced,
                Err(unpriced) => return ResponseFuture::refused(unpriced.into()),
            };
            // (Never with a Redis store: the choice is its round trip.)
            if pool.queued() == 0 && !remote(config) {
                match pool.choose(
                    &self.limiter,
                    model.as_ref(),
                    cost,
                    priced,
                    shared.now(),
                    Some(true),
                ) {
                    Err(full) => return ResponseFuture::refused(full.into()),
                    Ok(Choice::Admitted {
                        group,
                        ticket,
                        member,
                    }) => {
                        pool.authorize(&mut req, member);
                        tracing::debug!(
                            gen_ai.request.model = model.as_deref(),
                            llm_resilience.queue.wait_ms = 0u64,
                            "rate limit: admitted (a key of the pool)"
                        );
                        let hold = Hold {
                            group,
                            ticket,
                            sent: true,
                            done: false,
                            via: Via::Local,
                        };
                        let api = meta.as_ref().and_then(|m| m.api());
                        return ResponseFuture::called(self.inner.call(req), hold, api);
                    }
                    Ok(Choice::Exhausted(after)) => {
                        return ResponseFuture::refused(NoKeyAvailable::new(after).into());
                    }
                    Ok(Choice::Never(denied)) => {
                        return ResponseFuture::refused(too_large(denied));
                    }
                    Ok(Choice::Wait(_)) => {}
                }
            }
            let priority = Priority::of(&req, config.priority_header.as_ref());
            let deadline = req.extensions().get::<Deadline>().copied();
            let inner = crate::util::unready_clone(&mut self.inner);
            return ResponseFuture::waiting_for_key(
                Arc::clone(&self.limiter),
                model,
                cost,
                priced,
                priority,
                deadline,
                req,
                inner,
                meta.as_ref().and_then(|m| m.api()),
            );
        }
        let key = GroupKey::new(key_id, meta.as_ref().and_then(|m| m.model_arc().cloned()));
        let now = shared.now();
        let group = match self.limiter.group(key, now) {
            Ok(group) => group,
            Err(full) => return ResponseFuture::refused(full.into()),
        };
        // Nobody of the group waiting, and the cost fits now: reserve, and
        // send on the (ready) inner service at once.
        // (Never with a Redis store: every admission is its round trip.)
        if group.queued.load(Ordering::SeqCst) == 0
            && !remote(config)
            && let Attempt::Admitted(ticket) = shared.attempt(&group, cost, now, false, true)
        {
            tracing::debug!(
                gen_ai.request.model = group.key.model.as_deref(),
                llm_resilience.queue.wait_ms = 0u64,
                "rate limit: admitted"
            );
            let hold = Hold {
                group,
                ticket,
                sent: true,
                done: false,
                via: Via::Local,
            };
            let api = meta.as_ref().and_then(|m| m.api());
            return ResponseFuture::called(self.inner.call(req), hold, api);
        }
        // Else it waits its turn, by priority, with a clone of the service,
        // which its future asks once admitted (the ready one, and whatever it
        // reserved when asked, is let go).
        let priority = Priority::of(&req, config.priority_header.as_ref());
        let deadline = req.extensions().get::<Deadline>().copied();
        let inner = crate::util::unready_clone(&mut self.inner);
        let api = meta.as_ref().and_then(|m| m.api());
        ResponseFuture::waiting(group, cost, priority, deadline, req, inner, api)
    }
}

/// Whether admissions go through a store outside the process.
#[inline]
fn remote(config: &super::config::Config) -> bool {
    #[cfg(feature = "redis")]
    return config.remote.is_some();
    #[cfg(not(feature = "redis"))]
    {
        let _ = config;
        false
    }
}
