//! The response future of [`Cache`](super::Cache), and the observer that
//! fills an entry from a miss's body.

use std::fmt;
use std::future::Future;
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
use crate::error::BoxError;
use crate::response::{BodyObserver, Completion, ResponseBody};

type WaitFuture = Pin<Box<dyn Future<Output = Waited> + Send>>;

pin_project! {
    /// Answers from the cache, or waits for an identical request in
    /// flight, or calls the inner service (and fills the cache when the
    /// response completes); a request that is not cached and found the
    /// inner service ready is only the inner future.
    pub struct ResponseFuture<S: Service<Request<B>>, B, St: CacheStore> {
        #[pin]
        kind: Kind<S::Future, Lookup<S, B, St>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, L> {
        // Not cached, sent at the call: only the inner future.
        Pass { #[pin] fut: F },
        // Answered from memory at the call.
        Hit { res: Option<Response<ResponseBody>> },
        // Boxed: it holds the request, the inner service and the flight
        // state, and the request goes upstream anyway (or waits for one
        // that does); inline it would make every future larger.
        Lookup { fut: Pin<Box<L>> },
    }
}

impl<S: Service<Request<B>>, B, St: CacheStore> fmt::Debug for ResponseFuture<S, B, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Pass { .. } => f.debug_struct("ResponseFuture").finish_non_exhaustive(),
            Kind::Hit { .. } => f
                .debug_struct("ResponseFuture")
                .field("hit", &true)
                .finish_non_exhaustive(),
            Kind::Lookup { fut } => fmt::Debug::fmt(&**fut, f),
        }
    }
}

impl<S: Service<Request<B>>, B, St: CacheStore> ResponseFuture<S, B, St> {
    pub(crate) fn pass(fut: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Pass { fut },
        }
    }

    pub(crate) fn new(
        shared: Arc<Shared<St>>,
        inner: impl FnOnce() -> S,
        req: Request<B>,
        plan: Plan,
    ) -> Self {
        let kind = match Lookup::new(shared, inner, req, plan) {
            Started::Hit(res) => Kind::Hit { res: Some(res) },
            Started::Lookup(fut) => Kind::Lookup { fut: Box::pin(fut) },
        };
        ResponseFuture { kind }
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
                mark(&mut res, Status::Miss, Duration::ZERO);
                Poll::Ready(Ok(res))
            }
            KindProj::Hit { res } => Poll::Ready(
                res.take()
                    .ok_or_else(|| "cache future polled after completion".into()),
            ),
            KindProj::Lookup { fut } => fut.as_mut().poll(cx),
        }
    }
}

pin_project! {
    /// Looks the request up, answers a hit, joins a flight, or calls the
    /// inner service and fills the cache from its answer.
    pub(crate) struct Lookup<S: Service<Request<B>>, B, St: CacheStore> {
        shared: Arc<Shared<St>>,
        inner: Option<S>,
        req: Option<Request<B>>,
        key: Option<CacheKey>,
        ttl: Duration,
        stale: Option<Arc<CachedResponse>>,
        lead: Option<Leader>,
        #[pin]
        state: State<St::Get, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<G, F> {
        Lookup { #[pin] get: G },
        Join,
        Wait { wait: WaitFuture },
        Ready,
        Call { #[pin] fut: F },
        Done,
    }
}

impl<S: Service<Request<B>>, B, St: CacheStore> fmt::Debug for Lookup<S, B, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("key", &self.key)
            .field("leader", &self.lead.is_some())
            .field("stale", &self.stale.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<B>>, B, St: CacheStore> Lookup<S, B, St> {
    /// `inner` gives the service to call; it is not asked for when the
    /// request is answered at once.
    fn new(
        shared: Arc<Shared<St>>,
        inner: impl FnOnce() -> S,
        req: Request<B>,
        plan: Plan,
    ) -> Started<Self> {
        let mut stale = None;
        let state = match &plan.key {
            Some(key) if plan.read => match shared.store.try_get(key) {
                // The store answered without waiting (in memory): a hit is
                // served before the inner service is even cloned.
                Some(found) => {
                    let now = Instant::now();
                    match found {
                        Some(entry) if entry.is_fresh(now) => {
                            tracing::trace!(key = ?plan.key, "cache hit");
                            return Started::Hit(serve(&entry, Status::Hit, now));
                        }
                        Some(entry) if usable_stale(&shared, &entry, now) => {
                            stale = Some(entry);
                        }
                        _ => {}
                    }
                    State::Join
                }
                None => State::Lookup {
                    get: shared.store.get(key),
                },
            },
            _ => State::Ready,
        };
        Started::Lookup(Lookup {
            shared,
            inner: Some(inner()),
            req: Some(req),
            key: plan.key,
            ttl: plan.ttl,
            stale,
            lead: None,
            state,
        })
    }
}

/// A lookup answered at once, or to be driven (a return value, moved once
/// into the boxed or inline state it belongs in).
#[allow(clippy::large_enum_variant)]
enum Started<L> {
    Hit(Response<ResponseBody>),
    Lookup(L),
}

fn usable_stale<St>(shared: &Shared<St>, entry: &CachedResponse, now: Instant) -> bool {
    entry.age(now) < entry.ttl().saturating_add(shared.stale_if_error)
}

/// Upstream answers that a stale entry may stand in for.
fn is_failure(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A response served from a stored entry.
fn serve(entry: &CachedResponse, status: Status, now: Instant) -> Response<ResponseBody> {
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

impl<S, B, St, RB> Future for Lookup<S, B, St>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    St: CacheStore,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup { get } => {
                    let found = ready!(get.poll(cx));
                    let now = Instant::now();
                    if let Some(entry) = found {
                        if entry.is_fresh(now) {
                            tracing::trace!(key = ?this.key, "cache hit");
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(serve(&entry, Status::Hit, now)));
                        }
                        if usable_stale(this.shared, &entry, now) {
                            *this.stale = Some(entry);
                        }
                    }
                    this.state.set(State::Join);
                }
                StateProj::Join => {
                    let Some(key) = this.key.as_ref() else {
                        this.state.set(State::Ready);
                        continue;
                    };
                    match this.shared.flights.join(key) {
                        Joined::Lead(leader) => {
                            tracing::trace!(key = ?key, "cache miss: leading");
                            *this.lead = Some(leader);
                            this.state.set(State::Ready);
                        }
                        Joined::Wait(waiter) => {
                            tracing::trace!(key = ?key, "cache miss: waiting for the leader");
                            let limit = this.shared.coalesce_timeout;
                            this.state.set(State::Wait {
                                wait: Box::pin(async move {
                                    tokio::time::timeout(limit, waiter.wait())
                                        .await
                                        .unwrap_or(Waited::TimedOut)
                                }),
                            });
                        }
                    }
                }
                StateProj::Wait { wait } => match ready!(wait.as_mut().poll(cx)) {
                    Waited::Served((entry, status)) => {
                        tracing::trace!(key = ?this.key, ?status, "served by the leader");
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(serve(&entry, status, Instant::now())));
                    }
                    Waited::Lead(leader) => {
                        tracing::trace!(key = ?this.key, "taking over as leader");
                        *this.lead = Some(leader);
                        this.state.set(State::Ready);
                    }
                    Waited::TimedOut => {
                        tracing::debug!(key = ?this.key, "waited too long for the leader: going alone");
                        this.state.set(State::Ready);
                    }
                },
                StateProj::Ready => {
                    let Some(inner) = this.inner.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("cache future polled after completion".into()));
                    };
                    if let Err(e) = ready!(inner.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(failed(this.stale, this.lead, e.into()));
                    }
                    let Some(req) = this.req.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("cache future polled after completion".into()));
                    };
                    let fut = inner.call(req);
                    this.state.set(State::Call { fut });
                }
                StateProj::Call { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(match result {
                        Ok(res) => Ok(respond(
                            this.shared,
                            this.key,
                            *this.ttl,
                            this.stale,
                            this.lead,
                            res,
                        )),
                        Err(e) => failed(this.stale, this.lead, e.into()),
                    });
                }
                StateProj::Done => {
                    return Poll::Ready(Err("cache future polled after completion".into()));
                }
            }
        }
    }
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
/// — and only when — the body completed.
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
