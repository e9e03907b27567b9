//! The simulator itself: the axum router, the accept loop and the handle.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::post;
use http::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::config::SimConfig;
use super::counters::CountersSnapshot;
use super::handler::{Api, DropConnection, Shared, SimError, error_response, handle};
use super::idempotency::{IdempotencySnapshot, KeyCount};
use crate::error::InvalidConfig;

/// How long [`SimHandle::shutdown`] waits for open connections to finish.
const GRACE: Duration = Duration::from_secs(5);

/// A simulated Anthropic + OpenAI provider.
///
/// Cheap to clone: clones share limits, counters and the PRNG. Serve it with
/// [`listen`](Self::listen) (or create-and-serve with [`start`](Self::start)),
/// or embed its [`router`](Self::router) in your own axum app.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    not_found: Arc<AtomicU64>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator for `config` (not yet serving).
    ///
    /// # Errors
    ///
    /// An [`InvalidConfig`] if the configuration is invalid.
    pub fn new(config: SimConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(config)),
            not_found: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Validates `config`, binds its address (default `127.0.0.1:0`) and
    /// serves until the returned handle is shut down or dropped.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] wrapping an [`InvalidConfig`] for an
    /// invalid configuration, or the bind error.
    pub async fn start(config: SimConfig) -> io::Result<SimHandle> {
        let sim = Self::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        sim.listen().await
    }

    /// Binds the configured address and serves on a background task.
    ///
    /// Served this way, the drop-connection fault really closes the TCP
    /// connection without a response (hyper drops a connection whose service
    /// fails).
    ///
    /// # Errors
    ///
    /// The bind error.
    pub async fn listen(self) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(self.shared.config.addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, self.router(), stopped));
        Ok(SimHandle {
            addr,
            sim: self,
            stop,
            task: Some(task),
        })
    }

    /// The axum router: `POST /v1/messages` (Anthropic) and
    /// `POST /v1/chat/completions` (OpenAI); anything else is a 404 in the
    /// provider's shape.
    ///
    /// Embedded in another server, a drop-connection fault becomes an empty
    /// 500 response (only [`listen`](Self::listen) can drop the connection).
    pub fn router(&self) -> Router {
        let anthropic = Arc::clone(&self.shared);
        let openai = Arc::clone(&self.shared);
        let fallback = Arc::clone(&self.shared);
        let counter = Arc::clone(&self.not_found);
        let fallback405 = Arc::clone(&self.shared);
        let counter405 = Arc::clone(&self.not_found);
        Router::new()
            .route(
                "/v1/messages",
                post(move |req: Request| handle(Arc::clone(&anthropic), Api::Anthropic, req)),
            )
            .route(
                "/v1/chat/completions",
                post(move |req: Request| handle(Arc::clone(&openai), Api::OpenAi, req)),
            )
            .fallback(move |req: Request| {
                let (shared, counter) = (Arc::clone(&fallback), Arc::clone(&counter));
                async move { unrouted(&shared, &counter, &req, &SimError::NotFound) }
            })
            .method_not_allowed_fallback(move |req: Request| {
                let (shared, counter) = (Arc::clone(&fallback405), Arc::clone(&counter405));
                async move { unrouted(&shared, &counter, &req, &SimError::MethodNotAllowed) }
            })
    }

    /// A copy of the counters now.
    #[must_use]
    pub fn counters(&self) -> CountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// What the simulator saw per `idempotency-key` request header:
    /// arrivals and completions per key, summarised (bounded by
    /// [`SimConfig::with_max_idempotency_keys`]).
    #[must_use]
    pub fn idempotency(&self) -> IdempotencySnapshot {
        self.shared.idempotency.snapshot()
    }

    /// The counts of one `idempotency-key`, if it arrived and was counted.
    #[must_use]
    pub fn idempotency_key(&self, key: &str) -> Option<KeyCount> {
        self.shared.idempotency.get(key)
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }
}

/// A 404 / 405 in the shape of the API the path looks like.
fn unrouted(
    shared: &Shared,
    counter: &AtomicU64,
    req: &Request,
    err: &SimError,
) -> Response<axum::body::Body> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let api = if req.uri().path().starts_with("/v1/chat") {
        Api::OpenAi
    } else {
        Api::Anthropic
    };
    let id = format!("req_unrouted{n:012}");
    error_response(api, &shared.config, &id, err, None)
}

/// The error that makes hyper drop a connection without responding.
#[derive(Debug)]
struct DroppedConnection;

impl fmt::Display for DroppedConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated dropped connection")
    }
}

impl std::error::Error for DroppedConnection {}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, router.clone(), stop.clone()));
                }
                Err(e) => {
                    // e.g. too many open files: back off instead of spinning
                    tracing::debug!(error = %e, "sim accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

async fn serve_connection(stream: TcpStream, router: Router, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut router = router.clone();
        async move {
            let response: Response<axum::body::Body> =
                match tower_service::Service::call(&mut router, req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
            if response.extensions().get::<DropConnection>().is_some() {
                Err(DroppedConnection)
            } else {
                Ok::<_, DroppedConnection>(response)
            }
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::trace!(error = %e, "sim connection ended");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A running simulator: its address, counters and shutdown.
///
/// Dropping the handle also shuts the server down (in the background);
/// [`shutdown`](Self::shutdown) waits for it.
pub struct SimHandle {
    addr: SocketAddr,
    sim: Simulator,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .field("sim", &self.sim)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (SDK `base_url`).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of the counters now.
    #[must_use]
    pub fn counters(&self) -> CountersSnapshot {
        self.sim.counters()
    }

    /// Per-key counts: [`Simulator::idempotency`].
    #[must_use]
    pub fn idempotency(&self) -> IdempotencySnapshot {
        self.sim.idempotency()
    }

    /// One key's counts: [`Simulator::idempotency_key`].
    #[must_use]
    pub fn idempotency_key(&self, key: &str) -> Option<KeyCount> {
        self.sim.idempotency_key(key)
    }

    /// The simulator being served.
    #[must_use]
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// Stops accepting, lets open connections finish their current
    /// responses (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
