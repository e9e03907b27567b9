//! The connection every Redis store shares.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use crate::error::{BackendError, InvalidConfig};

/// A handle to one Redis server, cheap to clone: every clone shares one
/// multiplexed, reconnecting connection and one error count.
///
/// Every command is bounded by [`timeout`](Redis::with_timeout) (default
/// 50 ms): a store decides what to do when Redis is slow or down (its
/// failure policy), never waits on it unboundedly. The connection is made
/// lazily, so a service starts while Redis is down and uses it once it is
/// up.
///
/// The server can be changed while the handle is in use
/// ([`reconnect_to`](Redis::reconnect_to), after a failover): every clone
/// follows.
///
/// `Debug` shows the server's address without its password.
#[derive(Clone)]
pub struct Redis {
    server: Arc<RwLock<Server>>,
    timeout: Duration,
    errors: Arc<AtomicU64>,
    prefix: Arc<str>,
}

/// The server a handle talks to: its client, connection and address.
#[derive(Clone)]
struct Server {
    client: redis::Client,
    conn: ConnectionManager,
    address: Arc<str>,
}

impl Server {
    fn open(url: &str, timeout: Duration) -> Result<Self, InvalidConfig> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(InvalidConfig::new(
                "redis",
                "must be made inside a tokio runtime",
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|_| InvalidConfig::new("redis.url", "not a valid Redis URL"))?;
        let address = client.get_connection_info().addr().to_string();
        Ok(Server {
            conn: manager(&client, timeout)?,
            client,
            address: Arc::from(address),
        })
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.server().address)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("errors", &self.errors())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle to the server at `url` (`redis://[:password@]host:port[/db]`),
    /// connecting on first use; keys are prefixed `llm:`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for a URL redis-rs cannot parse (the message never
    /// repeats the URL, which may hold a password), or when called outside
    /// a tokio runtime (the connection manager runs a task of its own).
    pub fn new(url: &str) -> Result<Self, InvalidConfig> {
        let timeout = Duration::from_millis(50);
        Ok(Redis {
            server: Arc::new(RwLock::new(Server::open(url, timeout)?)),
            timeout,
            errors: Arc::new(AtomicU64::new(0)),
            prefix: Arc::from("llm:"),
        })
    }

    /// The bound on every command, connecting included (a new connection
    /// manager is made for it: call it before cloning the handle; clones
    /// made before keep the old one, and do not follow this handle's
    /// [`reconnect_to`](Self::reconnect_to)).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        let mut server = self.server();
        if let Ok(conn) = manager(&server.client, timeout) {
            server.conn = conn;
        }
        self.server = Arc::new(RwLock::new(server));
        self.timeout = timeout;
        self
    }

    /// Sends every later command of this handle and of all its clones to
    /// the server at `url` — a replica just promoted (`REPLICAOF NO ONE`)
    /// after the primary failed: how the new address is learned (Sentinel,
    /// an orchestrator, an operator) is the caller's. Commands already
    /// sent finish, or fail, on the old connection.
    ///
    /// Redis replicates asynchronously: what the old primary acknowledged
    /// but had not yet sent to the replica is lost — buckets a little
    /// fuller, budget counters a little lower, cache entries missing — by
    /// what the last writes before the failure added. The stores carry on
    /// from whatever the new server holds.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] as for [`new`](Self::new); the handle then keeps
    /// its server.
    pub fn reconnect_to(&self, url: &str) -> Result<(), InvalidConfig> {
        let server = Server::open(url, self.timeout)?;
        *self.server.write().unwrap_or_else(PoisonError::into_inner) = server;
        Ok(())
    }

    fn server(&self) -> Server {
        self.server
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn conn(&self) -> ConnectionManager {
        self.server
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .conn
            .clone()
    }

    /// The prefix of every key this crate writes (default `llm:`): lets
    /// deployments, or tests, share one server without meeting. Braces are
    /// dropped from it: the keys of one group share a Redis Cluster hash
    /// tag (`{…}`), which a brace in the prefix would replace, putting
    /// every key in one slot.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        let prefix: Arc<str> = prefix.into();
        self.prefix = if prefix.contains(['{', '}']) {
            Arc::from(prefix.replace(['{', '}'], ""))
        } else {
            prefix
        };
        self
    }

    /// The configured command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Commands that failed or timed out, since this handle was made.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// `PING`, bounded by the timeout: whether Redis answers now.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when it does not.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    /// Runs `invocation` of a script: `EVALSHA`, and after `NOSCRIPT` the
    /// script is loaded and run again (redis-rs does this), all within the
    /// timeout. A failure is counted and returned typed.
    #[cfg_attr(
        not(any(feature = "rate", feature = "cache", feature = "budget")),
        allow(dead_code)
    )]
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn();
        self.bounded(async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Runs one command, bounded and counted like [`run`](Self::run).
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn();
        self.bounded(async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => BackendError::unavailable(e.category()),
            Err(_) => BackendError::timeout(self.timeout),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        Err(result)
    }

    /// A script, for stores to keep in a `static` (its SHA is computed
    /// once).
    #[cfg_attr(
        not(any(feature = "rate", feature = "cache", feature = "budget")),
        allow(dead_code)
    )]
    pub(crate) fn script(source: &str) -> Script {
        Script::new(source)
    }
}

/// A lazy connection manager whose connecting is bounded by `timeout`.
/// It has no response timeout of its own: each command is bounded by the
/// handle's (a fixed one here would cut every command at it).
fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, InvalidConfig> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        // Reconnect attempts are the manager's; a command does not wait
        // for them beyond its own timeout.
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|_| InvalidConfig::new("redis.url", "cannot make a connection manager"))
}
