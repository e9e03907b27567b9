//! The response future of [`RateLimit`](super::RateLimit).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::gcra::{DIMENSIONS, Denied};
use super::state::{Attempt, Group, Settle, Shared, Ticket};
use crate::admitted::{Admitted, Held, earliest, give_up_at, poll_sleep_until, send};
use crate::error::{BoxError, QueueTimeout, RateLimited, RequestTooLarge};
use crate::provider::Api;
use crate::queue::{Priority, QueueFull, Waiter};
use crate::request::Deadline;
use crate::response::{BodyObserver, Completion, ResponseBody};
use crate::sync::Arc;
use crate::telemetry::record as telemetry;
use tracing::Instrument;

pin_project! {
    /// The inner service's response future, with the reservation that the
    /// response's body settles when it ends; or, when the request could not
    /// be admitted at the call, a boxed future that waits for admission
    /// first.
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        // The reservation is boxed once, as the body observer it becomes.
        #[pin]
        kind: Admitted<S::Future, Box<Reconcile>>,
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn called(fut: S::Future, hold: Hold, api: Option<Api>) -> Self {
        ResponseFuture {
            kind: Admitted::sent(fut, Reconcile::boxed(hold).with_api(api)),
        }
    }

    /// Answers `error` without sending (a request refused at the call).
    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            kind: Admitted::waiting(async move { Err(error) }),
        }
    }

    /// Waits for admission in the queue, then drives `inner` (a clone of
    /// the service, asked for its readiness only once admitted).
    pub(crate) fn waiting<RB>(
        group: Arc<Group>,
        cost: [u64; DIMENSIONS],
        priority: Priority,
        deadline: Option<Deadline>,
        req: Request<B>,
        inner: S,
        api: Option<Api>,
    ) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        // The wait is measured from the call, not from the first poll.
        let started = Instant::now();
        let give_up_at = give_up_at(deadline.map(|d| d.0), group.shared.config.max_wait, started);
        ResponseFuture {
            kind: Admitted::waiting(async move {
                // The wait is a span: what happens while it lasts (a
                // cooldown, a wake-up) is told inside it.
                let span = tracing::debug_span!(
                    "llm_resilience.rate_limit.wait",
                    gen_ai.request.model = group.key.model.as_deref(),
                );
                let held = admit(group, cost, priority, started, give_up_at)
                    .instrument(span)
                    .await?;
                send(inner, req, held.with_api(api)).await
            }),
        }
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    /// Waits for a key of the pool to take the request (`rate/pool/`), sets
    /// that key's auth header, then drives `inner` as
    /// [`waiting`](Self::waiting) does.
    // What one request brings to its wait, passed as the call has it
    // (a struct would be built and taken apart at once).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn waiting_for_key<RB>(
        limiter: Arc<super::state::Limiter>,
        model: Option<std::sync::Arc<str>>,
        cost: [u64; DIMENSIONS],
        priced: Option<super::pool::Priced>,
        priority: Priority,
        deadline: Option<Deadline>,
        mut req: Request<B>,
        inner: S,
        api: Option<Api>,
    ) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let config = &limiter.shared().config;
        let max_wait = config.max_wait;
        let pool = config
            .pool
            .clone()
            .expect("called for a limiter with a pool");
        let give_up_at = give_up_at(deadline.map(|d| d.0), max_wait, started);
        ResponseFuture {
            kind: Admitted::waiting(async move {
                let span = tracing::debug_span!(
                    "llm_resilience.rate_limit.wait",
                    gen_ai.request.model = model.as_deref(),
                    llm_resilience.rate_limit.key_pool = true,
                );
                let (held, member) = super::pool::admit::admit(
                    limiter,
                    pool.clone(),
                    model,
                    cost,
                    priced,
                    priority,
                    give_up_at,
                )
                .instrument(span.clone())
                .await?;
                pool.authorize(&mut req, member);
                let waited = started.elapsed();
                telemetry::queue_wait("rate", waited);
                span.in_scope(|| {
                    tracing::debug!(
                        llm_resilience.queue.wait_ms = waited.as_millis() as u64,
                        "rate limit: a key of the pool admitted the request"
                    )
                });
                send(inner, req, held.with_api(api)).await
            }),
        }
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll(cx)
    }
}

/// The inner response: learned from, its body settling the reservation.
impl Held for Box<Reconcile> {
    const POLLED_AFTER_COMPLETION: &'static str = "rate limit future polled after completion";

    fn respond<RB, E>(
        result: Result<Response<RB>, E>,
        hold: Option<Self>,
    ) -> Result<Response<ResponseBody>, BoxError>
    where
        E: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        // An error drops the hold: settled as unknown (sent) or cancelled.
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                // The attempt failed below (connection, timeout): measured,
                // with `error.type` "transport".
                #[cfg(feature = "metrics")]
                if let Some(r) = &hold {
                    telemetry::operation(
                        &r.hold.group.label,
                        telemetry::provider(r.op.api),
                        r.op.started.elapsed(),
                        None,
                        None,
                    );
                }
                return Err(e.into());
            }
        };
        let Some(mut reconcile) = hold else {
            return Ok(ResponseBody::from_response(res));
        };
        let hold = &reconcile.hold;
        let _remaining =
            hold.group
                .shared
                .learn(&hold.group, &hold.ticket, res.status(), res.headers());
        // What the provider says remains holds for every process: the
        // shared buckets are tightened too.
        #[cfg(feature = "redis")]
        hold.remote_tighten(_remaining);
        #[cfg(feature = "redis")]
        if res.status() == http::StatusCode::TOO_MANY_REQUESTS {
            hold.share_gate();
        }
        reconcile.success = res.status().is_success();
        #[cfg(feature = "metrics")]
        {
            reconcile.op.status = Some(res.status());
            if res.status() == http::StatusCode::TOO_MANY_REQUESTS {
                telemetry::upstream_429(&reconcile.hold.group.label);
            }
        }
        let mut res = ResponseBody::from_response(res);
        res.body_mut().observe(reconcile);
        Ok(res)
    }

    /// Counted in flight; dropped from now on, the estimate stands.
    fn sent(&mut self) {
        self.hold.sent = true;
        self.polled = true;
        self.hold.group.shared.sent(&self.hold.group);
    }

    fn polled(&mut self) {
        self.polled = true;
    }
}

/// A place in the queue, counted in its group while it lasts.
struct Queued {
    waiter: Waiter,
    group: Arc<Group>,
}

impl Queued {
    /// Takes a place as of `at`, counted in before the place is taken, so
    /// a newcomer never sees an empty queue that is not.
    fn enqueue(
        shared: &Shared,
        group: &Arc<Group>,
        priority: Priority,
        at: Instant,
    ) -> Result<Self, QueueFull> {
        group.queued.fetch_add(1, Ordering::SeqCst);
        match shared.queue.try_enqueue(group.id, priority, at) {
            Ok(waiter) => Ok(Queued {
                waiter,
                group: Arc::clone(group),
            }),
            Err(full) => {
                group.queued.fetch_sub(1, Ordering::SeqCst);
                Err(full)
            }
        }
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.waiter.poll_turn(cx)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.group.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits for the request's turn among its group's waiters and for the
/// bucket (or its cooldown gate), and reserves `cost`.
///
/// A newcomer only *checks* the bucket and queues when anyone of its group
/// waits; the head of the group's queue reserves, or sleeps until the
/// bucket says it fits. Each wake-up (its turn, a refund, its timer) looks
/// again from the top. Dropped at any await, it gives its place back (and
/// the next in line is woken) as `Queued` and `Waiter` drop.
async fn admit(
    group: Arc<Group>,
    cost: [u64; DIMENSIONS],
    priority: Priority,
    started: Instant,
    give_up_at: Option<Instant>,
) -> Result<Box<Reconcile>, BoxError> {
    let shared = Arc::clone(&group.shared);
    let fail_fast = shared.config.fail_fast;
    // The request's own gate after a cooldown, and its jitter.
    let mut gate: Option<Instant> = None;
    let mut jitter = None;
    let mut queued: Option<Queued> = None;
    // One timer for every wait, moved as the wake-up time moves.
    let mut sleep = pin!(None::<Sleep>);
    #[cfg(feature = "redis")]
    let mut remote_wait: Option<(u64, bool)> = None;
    loop {
        if let Some(place) = queued.as_mut() {
            // Not our turn: only the give-up time can end the wait.
            let turn = poll_fn(|cx| {
                if place.poll_turn(cx).is_ready() {
                    return Poll::Ready(true);
                }
                let Some(at) = give_up_at else {
                    return Poll::Pending;
                };
                // The timer may still be set for the bucket time of a turn
                // this waiter lost to a newcomer: wait for the give-up time,
                // not for that.
                poll_sleep_until(sleep.as_mut(), at, cx).map(|()| false)
            })
            .await;
            if !turn {
                drop(queued);
                let retry_at = shared.instant(shared.earliest(&group, cost, shared.now()));
                return Err(give_up(fail_fast, started, retry_at));
            }
        }
        let now = shared.now();
        // A newcomer does not overtake the group's waiters.
        let behind_others = queued.is_none() && group.queued.load(Ordering::SeqCst) > 0;
        let attempt = match gate.filter(|g| *g > Instant::now()) {
            // Paused by a cooldown: not before its own gate.
            Some(gate) => Attempt::Gated(gate),
            // Through Redis: the head (or a newcomer nobody waits before)
            // asks the shared buckets.
            // A wait Redis gave is slept before asking again (one round
            // trip per wait, not one for the newcomer and one as head).
            #[cfg(feature = "redis")]
            None if !behind_others && remote_wait.is_some_and(|(at, _)| at > now) => {
                let (at, cooldown) = remote_wait.take().expect("checked");
                Attempt::At { at, cooldown }
            }
            #[cfg(feature = "redis")]
            None if !behind_others && shared.config.remote.is_some() => {
                let remote = shared.config.remote.as_ref().expect("checked");
                // The round trip (and a fallback's) ends by the give-up
                // time too, not only by the handle's timeout.
                let step = super::remote::attempt(remote, &shared, &group, cost);
                let step = match give_up_at {
                    Some(at) => match tokio::time::timeout_at(at, step).await {
                        Ok(step) => step,
                        Err(_) => return Err(give_up(fail_fast, started, at)),
                    },
                    None => step.await,
                };
                match step? {
                    super::remote::Step::Admitted { group, ticket, via } => {
                        admitted_after_wait(&group, started, queued.is_some());
                        drop(queued);
                        return Ok(Reconcile::boxed(Hold {
                            group,
                            ticket,
                            sent: false,
                            done: false,
                            via,
                        }));
                    }
                    super::remote::Step::Attempt(attempt) => {
                        if let Attempt::At { at, cooldown } = attempt {
                            remote_wait = Some((at, cooldown));
                        }
                        attempt
                    }
                }
            }
            None => shared.attempt(&group, cost, now, behind_others, false),
        };
        let wake_at = match attempt {
            Attempt::Admitted(ticket) => {
                admitted_after_wait(&group, started, queued.is_some());
                // Leaving the queue wakes the next in line.
                drop(queued);
                return Ok(Reconcile::boxed(Hold {
                    group,
                    ticket,
                    sent: false,
                    done: false,
                    via: Via::Local,
                }));
            }
            Attempt::Never(Denied::CostExceedsBurst(e)) => {
                return Err(RequestTooLarge {
                    dimension: e.dimension.name(),
                    cost: e.cost,
                    burst: e.burst,
                }
                .into());
            }
            Attempt::Never(e) => return Err(e.into()),
            Attempt::At { at, cooldown } => {
                let mut at = shared.instant(at);
                if cooldown {
                    // Positive-only jitter, drawn once per request, so a
                    // paused herd does not return in lockstep: the request's
                    // own gate, which it keeps even once the group's
                    // cooldown is over.
                    let max = shared.config.cooldown_jitter;
                    at += *jitter.get_or_insert_with(|| shared.jitter(max));
                    gate = Some(at);
                }
                Some(at)
            }
            Attempt::Gated(gate) => Some(gate),
            Attempt::Parked => None,
        };
        if let (Some(at), Some(limit)) = (wake_at, give_up_at)
            && at > limit
            && fail_fast
        {
            return Err(give_up(true, started, at));
        }
        if queued.is_none() {
            // A request paused by a cooldown takes its place as of its
            // gate: the herd is served in the order of the gates, so each
            // one's jitter holds (a FIFO place would let the first gate
            // release everyone).
            let now = Instant::now();
            let place_at = gate.filter(|g| *g > now).unwrap_or(now);
            queued = Some(Queued::enqueue(&shared, &group, priority, place_at)?);
            tracing::debug!(
                gen_ai.request.model = group.key.model.as_deref(),
                llm_resilience.queue.position = group.queued.load(Ordering::Relaxed),
                llm_resilience.rate_limit.cooling_down = gate.is_some(),
                "rate limit: queued"
            );
            // Poll the turn (registers the waker); if we are the head
            // already, the next attempt decides.
            continue;
        }
        // The head of the group waits for the bucket or the gate (parked
        // without either, until a response wakes it).
        if !elapsed_or_woken(sleep.as_mut(), earliest(wake_at, give_up_at)).await {
            continue;
        }
        if let Some(limit) = give_up_at
            && Instant::now() >= limit
            && wake_at.is_none_or(|at| at > limit)
        {
            return Err(give_up(fail_fast, started, wake_at.unwrap_or(limit)));
        }
    }
}

/// The head's wait: `true` once its timer, set to `at`, has elapsed;
/// `false` on any other wake-up. A refund or a response wakes the head
/// through its place in the queue, and it must then look again (its turn,
/// the bucket) rather than sleep on. Without `at` it is parked until woken.
pub(super) async fn elapsed_or_woken(
    mut sleep: Pin<&mut Option<Sleep>>,
    at: Option<Instant>,
) -> bool {
    let mut polled = false;
    poll_fn(|cx| {
        if polled {
            return Poll::Ready(false);
        }
        polled = true;
        match at {
            Some(at) => poll_sleep_until(sleep.as_mut(), at, cx).map(|()| true),
            None => Poll::Pending,
        }
    })
    .await
}

/// Counts and tells an admission made in the response future: the wait,
/// and (when it had to queue) a 429 avoided by waiting instead.
fn admitted_after_wait(group: &Group, started: Instant, was_queued: bool) {
    let waited = started.elapsed();
    telemetry::queue_wait("rate", waited);
    if was_queued {
        #[cfg(feature = "metrics")]
        telemetry::avoided_429(&group.label);
    }
    tracing::debug!(
        gen_ai.request.model = group.key.model.as_deref(),
        llm_resilience.queue.wait_ms = waited.as_millis() as u64,
        "rate limit: admitted after waiting"
    );
}

/// The error for a request that cannot wait until `at`.
fn give_up(fail_fast: bool, started: Instant, at: Instant) -> BoxError {
    let now = Instant::now();
    tracing::debug!(
        llm_resilience.queue.wait_ms = now.saturating_duration_since(started).as_millis() as u64,
        llm_resilience.rate_limit.retry_after_ms = at.saturating_duration_since(now).as_millis() as u64,
        error.type = if fail_fast { "rate_limited" } else { "queue_timeout" },
        "rate limit: gave up waiting"
    );
    if fail_fast {
        RateLimited {
            retry_after: at.saturating_duration_since(now),
        }
        .into()
    } else {
        QueueTimeout {
            waited: now.saturating_duration_since(started),
        }
        .into()
    }
}

/// A reservation held by a request: settled from its response's usage, or
/// given back (cancelled) when the request is dropped before it was sent.
pub(crate) struct Hold {
    pub(crate) group: Arc<Group>,
    pub(crate) ticket: Ticket,
    pub(crate) sent: bool,
    pub(crate) done: bool,
    /// Where it was reserved, and so where its settlement goes.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) via: Via,
}

/// Where a reservation was made.
pub(crate) enum Via {
    /// In this process's buckets only.
    Local,
    /// In Redis: the correction, a 429's gate and the provider's
    /// `remaining` go there too.
    #[cfg(feature = "redis")]
    Redis,
    /// In the fallback's buckets while Redis failed ([`FailurePolicy::Local`](crate::redis::FailurePolicy::Local)):
    /// the shared path's group, which a 429 closes too.
    #[cfg(feature = "redis")]
    Fallback(Arc<Group>),
}

impl Via {
    /// [`Via::Redis`] when Redis reserved it (only ever with the `redis`
    /// feature), else [`Via::Local`].
    pub(crate) fn of(remote: bool) -> Self {
        #[cfg(feature = "redis")]
        if remote {
            return Via::Redis;
        }
        let _ = remote;
        Via::Local
    }
}

impl Hold {
    fn settle(&mut self, outcome: Settle) {
        self.done = true;
        let delta = self.group.shared.settle(&self.group, &self.ticket, outcome);
        self.reconcile(delta);
        #[cfg(feature = "redis")]
        self.remote_calendar(Some(&outcome));
    }

    /// Sends a correction (and no gate) to Redis, for a reservation made
    /// there.
    #[cfg(feature = "redis")]
    fn reconcile(&self, delta: [i128; DIMENSIONS]) {
        self.remote_gate(delta, std::time::Duration::ZERO);
    }

    #[cfg(not(feature = "redis"))]
    fn reconcile(&self, _delta: [i128; DIMENSIONS]) {}

    /// Sends a correction and a gate to close to Redis, for a reservation
    /// made there (spawned: nothing waits for it).
    #[cfg(feature = "redis")]
    fn remote_gate(&self, delta: [i128; DIMENSIONS], gate: std::time::Duration) {
        if !matches!(self.via, Via::Redis) {
            return;
        }
        let shared = &self.group.shared;
        if let Some(remote) = &shared.config.remote {
            if let Some(cell) = self.group.lease.as_deref() {
                // Kept with the lease, sent with the next one; a gate
                // still goes at once.
                crate::sync::lock(&cell.state).correct(&delta);
                if gate.is_zero() {
                    return;
                }
                let limits = shared.limits_of(&self.group);
                let none = [0; DIMENSIONS];
                remote
                    .store
                    .reconcile(super::remote::slot(&self.group), limits, none, gate);
                return;
            }
            let limits = shared.limits_of(&self.group);
            remote
                .store
                .reconcile(super::remote::slot(&self.group), limits, delta, gate);
        }
    }
}

#[cfg(feature = "redis")]
impl Hold {
    /// A 429's gate closes for every process, not only this one: it goes
    /// to Redis with a reservation made there. One the fallback admitted
    /// while Redis failed closes the shared path's group too — so this
    /// process keeps to it once Redis answers again — and is sent to
    /// Redis, which others see only if Redis answers by then.
    fn share_gate(&self) {
        let shared = &self.group.shared;
        let gate = shared.cooldown_left(&self.group, shared.now());
        match &self.via {
            Via::Redis => self.remote_gate([0; DIMENSIONS], gate),
            Via::Fallback(main) => {
                main.shared.close_gate(main, gate);
                if let Some(remote) = &main.shared.config.remote {
                    let limits = main.shared.limits_of(main);
                    let none = [0; DIMENSIONS];
                    remote
                        .store
                        .reconcile(super::remote::slot(main), limits, none, gate);
                }
            }
            Via::Local => {}
        }
    }

    /// Sends a key pool's calendar correction to Redis, for a reservation
    /// its script made (`None`: given back in full).
    fn remote_calendar(&self, outcome: Option<&Settle>) {
        if !matches!(self.via, Via::Redis) {
            return;
        }
        let Some(t) = &self.ticket.pool else { return };
        let shared = &self.group.shared;
        if let (Some(remote), Some(pool)) = (&shared.config.remote, &shared.config.pool)
            && let Some((member, delta)) = pool.redis_correction(t, outcome)
        {
            remote.store.calendar(pool.tag(), member, t.period, delta);
        }
    }

    /// Sends the provider's `remaining` to Redis, for a reservation made
    /// there (spawned: nothing waits for it).
    fn remote_tighten(&self, remaining: [Option<u64>; DIMENSIONS]) {
        if !matches!(self.via, Via::Redis) || remaining.iter().all(Option::is_none) {
            return;
        }
        let shared = &self.group.shared;
        if let Some(remote) = &shared.config.remote {
            let limits = shared.limits_of(&self.group);
            if let Some(cell) = self.group.lease.as_deref() {
                // Kept with the lease, sent with the next one (one round
                // trip per lease, not one per response).
                let mut within = remaining;
                for (r, l) in within.iter_mut().zip(limits) {
                    *r = r.zip(l).map(|(r, l)| r.min(l.burst()));
                }
                crate::sync::lock(&cell.state).bound(&within, &self.ticket.remote_net);
                return;
            }
            remote.store.tighten(
                super::remote::slot(&self.group),
                limits,
                remaining,
                self.ticket.remote_net,
            );
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.sent {
            // Dropped after sending: the estimate stands.
            let delta = self
                .group
                .shared
                .settle(&self.group, &self.ticket, Settle::Unknown);
            self.reconcile(delta);
        } else {
            self.group.shared.cancel(&self.group, &self.ticket);
            self.reconcile(self.ticket.cost.map(|c| -i128::from(c)));
            #[cfg(feature = "redis")]
            self.remote_calendar(None);
        }
    }
}

/// The reservation as the response body's observer: settled from the
/// usage the body reports.
pub(crate) struct Reconcile {
    hold: Hold,
    success: bool,
    /// What the metrics of the attempt need.
    #[cfg(feature = "metrics")]
    op: Op,
    /// Whether the inner future was polled: a request admitted and called
    /// at the call is counted as sent there, but a tower service sends
    /// only when its future is polled.
    polled: bool,
}

/// The attempt as the metrics see it.
#[cfg(feature = "metrics")]
struct Op {
    started: Instant,
    api: Option<Api>,
    status: Option<http::StatusCode>,
}

impl Reconcile {
    pub(crate) fn boxed(hold: Hold) -> Box<Self> {
        Box::new(Reconcile {
            hold,
            success: false,
            #[cfg(feature = "metrics")]
            op: Op {
                started: Instant::now(),
                api: None,
                status: None,
            },
            polled: false,
        })
    }

    /// The request's API shape (`gen_ai.provider.name`).
    #[inline]
    pub(crate) fn with_api(self: Box<Self>, api: Option<Api>) -> Box<Self> {
        #[cfg(feature = "metrics")]
        {
            let mut this = self;
            this.op.api = api;
            this
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = api;
            self
        }
    }
}

impl Drop for Reconcile {
    fn drop(&mut self) {
        // Made at the call, dropped before its first poll: nothing was
        // sent, so the reservation is given back in full (as a request
        // dropped before sending is), not left standing until refill.
        if !self.polled && self.hold.sent && !self.hold.done {
            self.hold.group.shared.unsent(&self.hold.group);
            self.hold.sent = false;
        }
    }
}

impl BodyObserver for Reconcile {
    fn on_complete(mut self: Box<Self>, c: &Completion) {
        let model = self.hold.group.key.model.as_deref();
        match c.usage {
            Some(u) => tracing::debug!(
                gen_ai.request.model = model,
                gen_ai.usage.input_tokens = u.total_input_tokens(),
                gen_ai.usage.output_tokens = u.output_tokens,
                "rate limit: response settled"
            ),
            None => tracing::debug!(
                gen_ai.request.model = model,
                llm_resilience.rate_limit.success = self.success,
                "rate limit: response settled without usage"
            ),
        }
        #[cfg(feature = "metrics")]
        telemetry::operation(
            &self.hold.group.label,
            telemetry::provider(self.op.api),
            self.op.started.elapsed(),
            self.op.status,
            c.usage.map(|u| (u.total_input_tokens(), u.output_tokens)),
        );
        let outcome = if !self.success {
            Settle::Refused
        } else {
            match c.usage {
                Some(usage) => Settle::Usage {
                    usage,
                    complete: c.outcome.is_complete(),
                },
                None => Settle::Unknown,
            }
        };
        self.hold.settle(outcome);
    }
}
