//! The response future of [`Cache`](super::Cache), and the observer that
//! fills an entry from a miss's body.

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::flight::{Joined, Leader, Waited};
use super::key::CacheKey;
use super::layer::Shared;
use super::service::Plan;
use super::store::{CacheStore, CachedResponse};
use super::{CACHE_HEADER, CacheStatus, Status};
use crate::error::{BoxError, DeadlineElapsed};
use crate::request::Deadline;
use crate::response::{BodyObserver, Completion, ResponseBody};
use crate::util::SlowPath;

const AFTER_COMPLETION: &str = "cache future polled after completion";

pin_project! {
    /// Answers from the cache, or waits for an identical request in
    /// flight, or calls the inner service (and fills the cache when the
    /// response completes); a request that is not cached and found the
    /// inner service ready is only the inner future.
    pub struct ResponseFuture<S: Service<Request<B>>, B, St: CacheStore> {
        #[pin]
        kind: Kind<S::Future>,
        // The store's types live in the boxed lookup only.
        _store: PhantomData<fn() -> St>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // Not cached, sent at the call: only the inner future.
        Pass { #[pin] fut: F },
        // Answered from memory at the call.
        Hit { res: Option<Response<ResponseBody>> },
        // Boxed: it holds the request, the inner service and the flight
        // state, and the request goes upstream anyway (or waits for one
        // that does); inline it would make every future larger.
        Lookup { fut: SlowPath },
    }
}

impl<S: Service<Request<B>>, B, St: CacheStore> fmt::Debug for ResponseFuture<S, B, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        match &self.kind {
            Kind::Pass { .. } => {}
            Kind::Hit { .. } => {
                d.field("hit", &true);
            }
            Kind::Lookup { fut } => {
                d.field("lookup", &fut.is_pending());
            }
        }
        d.finish_non_exhaustive()
    }
}

impl<S: Service<Request<B>>, B, St: CacheStore> ResponseFuture<S, B, St> {
    pub(crate) fn pass(fut: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Pass { fut },
            _store: PhantomData,
        }
    }

    /// Looks the request up, answers a hit, joins a flight, or calls the
    /// inner service and fills the cache from its answer. `inner` gives the
    /// service to call; it is not asked for when the request is answered
    /// at once.
    pub(crate) fn new<RB>(
        shared: Arc<Shared<St>>,
        inner: impl FnOnce() -> S,
        req: Request<B>,
        plan: Plan,
    ) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let mut stale = None;
        let start = match &plan.key {
            Some(key) if plan.read => match shared.store.try_get(key) {
                // The store answered without waiting (in memory): a hit is
                // served before the inner service is even cloned.
                Some(found) => {
                    let now = Instant::now();
                    match found {
                        Some(entry) if entry.is_fresh(now) => {
                            tracing::trace!(key = ?plan.key, "cache hit");
                            return ResponseFuture {
                                kind: Kind::Hit {
                                    res: Some(serve(&entry, Status::Hit, now)),
                                },
                                _store: PhantomData,
                            };
                        }
                        Some(entry) if usable_stale(&shared, &entry, now) => {
                            stale = Some(entry);
                        }
                        _ => {}
                    }
                    Start::Join
                }
                None => Start::Get(shared.store.get(key)),
            },
            _ => Start::Call,
        };
        let lookup = Lookup {
            shared,
            inner: inner(),
            req,
            key: plan.key,
            ttl: plan.ttl,
            stale,
        };
        ResponseFuture {
            kind: Kind::Lookup {
                fut: SlowPath::new(lookup.run(start)),
            },
            _store: PhantomData,
        }
    }
}

impl<S, B, St, RB> Future for ResponseFuture<S, B, St>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    St: CacheStore,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Pass { fut } => {
                let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                let mut res = ResponseBody::from_response(res);
                told_upstream("bypass");
                mark(&mut res, Status::Miss, Duration::ZERO);
                Poll::Ready(Ok(res))
            }
            KindProj::Hit { res } => Poll::Ready(res.take().ok_or_else(|| AFTER_COMPLETION.into())),
            KindProj::Lookup { fut } => fut.poll(cx, AFTER_COMPLETION),
        }
    }
}

/// Where a lookup starts, as far as the call could take it.
enum Start<G> {
    /// The store answers later: wait for it.
    Get(G),
    /// The store had no fresh entry: lead or join the key's flight.
    Join,
    /// Not read from the cache (no key, or `no-cache`): call the inner
    /// service.
    Call,
}

/// A request the cache did not answer at the call.
struct Lookup<S, B, St> {
    shared: Arc<Shared<St>>,
    inner: S,
    req: Request<B>,
    key: Option<CacheKey>,
    ttl: Duration,
    stale: Option<Arc<CachedResponse>>,
}

impl<S, B, St, RB> Lookup<S, B, St>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    St: CacheStore,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    /// Answers a hit, or waits for the leader of the key's flight, or calls
    /// the inner service (leading the flight, or alone). Dropped at any
    /// await, it leaves the flight as `Waiter` and `Leader` drop: a
    /// cancelled leader lets one waiter take over.
    async fn run(self, start: Start<St::Get>) -> Result<Response<ResponseBody>, BoxError> {
        let Lookup {
            shared,
            mut inner,
            req,
            mut key,
            ttl,
            mut stale,
        } = self;
        let join = match start {
            Start::Get(get) => {
                let found = get.await;
                let now = Instant::now();
                if let Some(entry) = found {
                    if entry.is_fresh(now) {
                        tracing::trace!(key = ?key, "cache hit");
                        return Ok(serve(&entry, Status::Hit, now));
                    }
                    if usable_stale(&shared, &entry, now) {
                        stale = Some(entry);
                    }
                }
                true
            }
            Start::Join => true,
            Start::Call => false,
        };
        let mut lead = None;
        if join && let Some(k) = key.as_ref() {
            match shared.flights.join(k) {
                Joined::Lead(leader) => {
                    tracing::trace!(key = ?k, "cache miss: leading");
                    lead = Some(leader);
                }
                Joined::Wait(waiter) => {
                    tracing::trace!(key = ?k, "cache miss: waiting for the leader");
                    // Bounded by `coalesce_timeout` and, first, by the
                    // request's deadline: past it, going upstream alone
                    // is pointless.
                    let give_up = Instant::now() + shared.coalesce_timeout;
                    let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
                    let at = deadline.map_or(give_up, |d| d.min(give_up));
                    let waited = tokio::time::timeout_at(at, waiter.wait())
                        .await
                        .unwrap_or(Waited::TimedOut);
                    if matches!(waited, Waited::TimedOut)
                        && deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        tracing::debug!(key = ?key, "deadline passed waiting for the leader");
                        return match stale {
                            Some(entry) => Ok(serve(&entry, Status::Stale, Instant::now())),
                            None => Err(DeadlineElapsed::new().into()),
                        };
                    }
                    match waited {
                        Waited::Served((entry, status)) => {
                            tracing::trace!(key = ?key, ?status, "served by the leader");
                            told("coalesced", &entry, Instant::now());
                            return Ok(entry_response(&entry, status, Instant::now()));
                        }
                        Waited::Lead(leader) => {
                            tracing::trace!(key = ?key, "taking over as leader");
                            lead = Some(leader);
                        }
                        Waited::TimedOut => {
                            tracing::debug!(key = ?key, "waited too long for the leader: going alone");
                        }
                    }
                }
            }
        }
        if let Err(e) = poll_fn(|cx| inner.poll_ready(cx)).await {
            return failed(&mut stale, &mut lead, e.into());
        }
        match inner.call(req).await {
            Ok(res) => Ok(respond(&shared, &mut key, ttl, &mut stale, &mut lead, res)),
            Err(e) => failed(&mut stale, &mut lead, e.into()),
        }
    }
}

fn usable_stale<St>(shared: &Shared<St>, entry: &CachedResponse, now: Instant) -> bool {
    entry.age(now) < entry.ttl().saturating_add(shared.stale_if_error)
}

/// Upstream answers that a stale entry may stand in for.
fn is_failure(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A response served from a stored entry, counted and traced as `status`.
fn serve(entry: &CachedResponse, status: Status, now: Instant) -> Response<ResponseBody> {
    told(
        if status == Status::Stale {
            "stale"
        } else {
            "hit"
        },
        entry,
        now,
    );
    entry_response(entry, status, now)
}

/// Counts and traces an answer from a stored entry.
#[inline]
fn told(result: &'static str, entry: &CachedResponse, now: Instant) {
    crate::telemetry::record::cache(result);
    tracing::debug!(
        llm_resilience.cache.result = result,
        llm_resilience.cache.age_ms = entry.age(now).as_millis() as u64,
        "cache: answered from a stored entry"
    );
}

/// Counts and traces an answer from upstream (`miss`, `bypass`).
#[inline]
fn told_upstream(result: &'static str) {
    crate::telemetry::record::cache(result);
    tracing::debug!(
        llm_resilience.cache.result = result,
        "cache: answered by upstream"
    );
}

/// A response made from a stored entry.
fn entry_response(entry: &CachedResponse, status: Status, now: Instant) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::replay(Arc::clone(entry.chunks())));
    *res.status_mut() = entry.status();
    *res.headers_mut() = entry.headers().clone();
    let age = entry.age(now);
    if status == Status::Hit {
        // The stored headers already say HIT.
        res.extensions_mut().insert(CacheStatus { status, age });
    } else {
        mark(&mut res, status, age);
    }
    res
}

/// [`CACHE_HEADER`] as a `HeaderName`, built at compile time (inserting by
/// `&str` parses the name on every response).
const CACHE_HEADER_NAME: http::HeaderName = http::HeaderName::from_static(CACHE_HEADER);

fn mark(res: &mut Response<ResponseBody>, status: Status, age: Duration) {
    res.headers_mut()
        .insert(CACHE_HEADER_NAME, HeaderValue::from_static(status.as_str()));
    res.extensions_mut().insert(CacheStatus { status, age });
}

/// The inner service failed: a stale entry answers instead, if there is one.
fn failed(
    stale: &mut Option<Arc<CachedResponse>>,
    lead: &mut Option<Leader>,
    err: BoxError,
) -> Result<Response<ResponseBody>, BoxError> {
    match stale.take() {
        Some(entry) => {
            tracing::debug!(error = %err, "upstream failed: serving a stale entry");
            if let Some(leader) = lead.take() {
                leader.finish((Arc::clone(&entry), Status::Stale));
            }
            Ok(serve(&entry, Status::Stale, Instant::now()))
        }
        None => {
            // Dropping the leadership lets one waiter try.
            lead.take();
            Err(err)
        }
    }
}

fn respond<St: CacheStore, RB>(
    shared: &Arc<Shared<St>>,
    key: &mut Option<CacheKey>,
    ttl: Duration,
    stale: &mut Option<Arc<CachedResponse>>,
    lead: &mut Option<Leader>,
    res: Response<RB>,
) -> Response<ResponseBody>
where
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let status = res.status();
    if is_failure(status)
        && let Some(entry) = stale.take()
    {
        tracing::debug!(%status, "upstream failed: serving a stale entry");
        if let Some(leader) = lead.take() {
            leader.finish((Arc::clone(&entry), Status::Stale));
        }
        // The failed response's body is dropped here, releasing what it
        // holds below.
        return serve(&entry, Status::Stale, Instant::now());
    }
    let mut res = ResponseBody::from_response(res);
    let too_large = res
        .body()
        .size_hint()
        .lower()
        .try_into()
        .map_or(true, |n: usize| n > shared.max_entry);
    match key.take() {
        Some(key) if status.is_success() && !too_large => {
            let filler = Filler {
                shared: Arc::clone(shared),
                key: Some(key),
                ttl,
                lead: lead.take(),
                status,
                headers: storable(res.headers()),
                chunks: Vec::new(),
                size: 0,
                overflow: false,
            };
            res.body_mut().observe(Box::new(filler));
        }
        _ => {
            // Not cacheable: one waiter (if any) takes over.
            lead.take();
        }
    }
    told_upstream("miss");
    mark(&mut res, Status::Miss, Duration::ZERO);
    res
}

/// The headers worth replaying: all but hop-by-hop ones (and those the
/// `Connection` header names) and the cache's own marker.
fn storable(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        CACHE_HEADER,
    ] {
        out.remove(name);
    }
    for name in named {
        out.remove(name.as_str());
    }
    out
}

/// Collects a miss's body as it passes to the caller, and commits it when
/// — and only when — the body completed and is a complete provider answer
/// (`answer.rs`: a stream through its terminal event, or one JSON object
/// that is not an error object).
struct Filler<St> {
    shared: Arc<Shared<St>>,
    key: Option<CacheKey>,
    ttl: Duration,
    lead: Option<Leader>,
    status: StatusCode,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    size: usize,
    overflow: bool,
}

impl<St: CacheStore> BodyObserver for Filler<St> {
    fn on_data(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        self.size = self.size.saturating_add(data.len());
        if self.size > self.shared.max_entry {
            tracing::trace!(key = ?self.key, "response over the entry limit: not cached");
            self.overflow = true;
            self.chunks = Vec::new();
            // Waiters need not wait for a body that will not be stored.
            self.lead.take();
        } else {
            self.chunks.push(data.clone());
        }
    }

    fn on_complete(mut self: Box<Self>, completion: &Completion) {
        let Some(key) = self.key.take() else { return };
        if self.overflow || !completion.outcome.is_complete() {
            tracing::trace!(key = ?key, outcome = ?completion.outcome, "not cached");
            return; // dropping the leadership lets one waiter try
        }
        if !super::answer::is_answer(&self.headers, &self.chunks) {
            tracing::trace!(key = ?key, "not a complete provider answer: not cached");
            return;
        }
        let entry = Arc::new(CachedResponse::new(
            self.status,
            std::mem::take(&mut self.headers),
            std::mem::take(&mut self.chunks).into(),
            Instant::now(),
            self.ttl,
        ));
        if entry.size() > self.shared.max_entry {
            return;
        }
        tracing::trace!(key = ?key, size = entry.size(), "cached");
        let retain = self.ttl.saturating_add(self.shared.stale_if_error);
        drive(self.shared.store.put(key, Arc::clone(&entry), retain));
        if let Some(leader) = self.lead.take() {
            leader.finish((entry, Status::Hit));
        }
    }
}

/// Runs a store's write: at once when it is ready at once (in memory),
/// else on the current tokio runtime.
fn drive<F: Future<Output = ()> + Send + 'static>(fut: F) {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(fut);
            }
            Err(_) => tracing::warn!("cache store write needs a tokio runtime: dropped"),
        }
    }
}
