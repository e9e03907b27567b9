//! A Redis for the suites that need one.
//!
//! `REDIS_URL` when it is set; otherwise a private `redis-server` started
//! on a free port (when the binary is on `PATH`), killed when dropped.
//! Neither: the suite prints one line saying it is skipped and passes —
//! unless `REQUIRE_REDIS=1` (as `.ci/run` sets it), which fails it.
//!
//! Each test takes its own key prefix ([`RedisServer::handle`]), so tests
//! sharing one server never meet.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower_llm_resilience::redis::Redis;

/// A Redis server for a test: one it started (and kills on drop), or the
/// one `REDIS_URL` names.
#[derive(Debug)]
pub(crate) struct RedisServer {
    pub(crate) url: String,
    pub(crate) port: Option<u16>,
    child: Option<Child>,
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

impl RedisServer {
    /// The server for this test, or `None` (after printing why) when there
    /// is none and none is required. `suite` names the test in the skip
    /// line.
    ///
    /// # Panics
    ///
    /// When there is no Redis and `REQUIRE_REDIS=1`.
    pub(crate) fn get(suite: &str) -> Option<RedisServer> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some(RedisServer {
                url,
                port: None,
                child: None,
            });
        }
        match RedisServer::start() {
            Ok(server) => Some(server),
            Err(why) => {
                if std::env::var("REQUIRE_REDIS").is_ok_and(|v| v == "1") {
                    panic!("{suite}: REQUIRE_REDIS=1 but no Redis: {why}");
                }
                eprintln!(
                    "{suite}: skipped: no Redis ({why}); set REDIS_URL or install redis-server"
                );
                None
            }
        }
    }

    /// A private `redis-server` on a free port, whatever `REDIS_URL` says
    /// (for tests that kill or pause it).
    pub(crate) fn start() -> Result<RedisServer, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        RedisServer::start_on(port)
    }

    /// A private `redis-server` on `port` (a restart after [`kill`](Self::kill)).
    pub(crate) fn start_on(port: u16) -> Result<RedisServer, String> {
        RedisServer::start_with(port, &[])
    }

    /// A private `redis-server` replicating `primary` (one this test
    /// started), once it holds the primary's data set (its link is up).
    pub(crate) fn replica_of(primary: &RedisServer) -> Result<RedisServer, String> {
        let of = primary
            .port
            .ok_or("the primary is not private")?
            .to_string();
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let replica = RedisServer::start_with(port, &["--replicaof", "127.0.0.1", &of])?;
        let give_up = Instant::now() + Duration::from_secs(10);
        while !replica
            .info("replication")
            .contains("master_link_status:up")
        {
            if Instant::now() > give_up {
                return Err("the replica's link did not come up within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(replica)
    }

    /// `INFO section`, all of it.
    pub(crate) fn info(&self, section: &str) -> String {
        let client = ::redis::Client::open(self.url.as_str()).expect("url");
        client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut c| ::redis::cmd("INFO").arg(section).query::<String>(&mut c))
            .unwrap_or_default()
    }

    fn start_with(port: u16, extra: &[&str]) -> Result<RedisServer, String> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // A replica writes the data set it syncs to disk: not here.
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(["--dbfilename", &rdb_name(port)])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let mut server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port: Some(port),
            child: Some(child),
        };
        let give_up = Instant::now() + Duration::from_secs(10);
        while !ping(port) {
            if Instant::now() > give_up {
                server.kill();
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// A handle with a key prefix no other test of this process uses.
    pub(crate) fn handle(&self) -> Redis {
        let n = PREFIX.fetch_add(1, Ordering::Relaxed);
        Redis::new(&self.url)
            .expect("redis url")
            .with_prefix(format!("test:{}:{n}:", std::process::id()))
    }

    /// Kills the server (only one this test started): the outage.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(port) = self.port {
                let _ = std::fs::remove_file(std::env::temp_dir().join(rdb_name(port)));
            }
        }
    }

    /// Runs one command on the server by its own protocol, outside the
    /// crate (`SCRIPT FLUSH`, `DEBUG SLEEP`, …): the reply's first line.
    pub(crate) fn command(&self, args: &[&str]) -> String {
        let port = self.port.expect("a server this test started");
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).expect("write");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The file a server on `port` would save its data set in.
fn rdb_name(port: u16) -> String {
    format!("tower-llm-test-redis-{port}.rdb")
}

/// A free port this process has not given out before: a test that kills
/// its server and starts it again on the same port (or keeps a replica
/// pointed at it) must not meet another test's server there.
fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}
