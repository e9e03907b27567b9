//! Budget counters in Redis: [`RedisBudgetStore`], the
//! [`BudgetStore`](crate::budget::BudgetStore) every process of a
//! deployment shares.
//!
//! Each counter is a hash (`s`: settled spend, `r`: reserved) at
//! `<prefix>budget:{<tag>}:<counter id>`. One Lua script reserves across
//! every cap of a request — it checks all, then reserves all, or none —
//! so two processes cannot both take the last room of a cap; a second
//! script settles (returning the spend before and after, so exactly one
//! process sees each threshold crossing). Both run by `EVALSHA` (loaded
//! again after `NOSCRIPT`), bounded by the handle's timeout.
//!
//! - **Clock**: the reserve script reads Redis `TIME` and refuses to
//!   reserve in a period that does not hold it; the layer then asks again
//!   with Redis's periods and keeps the offset for the next requests.
//!   Client clocks play no part in which period is charged.
//! - **Keys**: every key expires a day after its period ends (kept for
//!   reading, and for late settlements). The keys of one request share a
//!   hash tag — the tenant when every cap of the budget is per tenant,
//!   else the budget's name — so the script's keys live in one Redis
//!   Cluster slot.
//! - **Keys per API key**: a counter per key (or a tenant that defaults
//!   to the key) is named by the key's [`KeyId`](crate::KeyId), a keyed
//!   hash under a secret of each process. Processes that share per-key
//!   counters must install one secret
//!   ([`KeyIdentity::with_secret`](crate::request::KeyIdentity::with_secret)),
//!   or each keeps counters of its own. Named tenants, models and global
//!   caps need nothing.
//! - **Numbers**: limits and amounts up to 2⁵³ (Lua numbers are doubles);
//!   a cap's limit is bounded so by its builder.
//! - **Failures**: a command that fails or times out is a
//!   [`BackendError`](crate::error::BackendError), counted by the
//!   [`Redis`] handle; the budget's
//!   [`FailurePolicy`](crate::budget::FailurePolicy) decides (refuse by
//!   default). A settlement that fails is counted and lost: its
//!   reservation stays until the period's key expires (an over-count,
//!   never an under-count), as does that of a process that died holding
//!   reservations.
//! - **Reservations by id**: each request's reservation has an id
//!   ([`Charge::reservation`](crate::budget::Charge::reservation)); the
//!   reserve script records it as a field of the first counter's hash
//!   (`x:<id>`: every counter's amount), and settling or releasing takes
//!   it back by that field, once — a second settlement, a late or repeated
//!   release gives back nothing. A reserve whose answer does not come (a
//!   timeout, a caller giving up at its deadline) may still have run: it
//!   is released by its id off the request's path (`EVAL`, tried up to
//!   three times). A reserve queued behind a stalled server runs before the
//!   release sent after it (one connection, in order). The field of a
//!   process that died holding it stays until the counter expires, as its
//!   reservation does.
//!
use std::sync::LazyLock;

use redis::Script;

use super::Redis;
use crate::budget::{Answer, Balance, BudgetStore, Charge, Counter, Reserve, Settlement, Spend};

/// How long a counter's key outlives its period, in seconds.
const KEY_MARGIN_SECS: i64 = 86_400;

/// KEYS: the counters. ARGV per counter: limit, amount, period start,
/// period end; then the reservation's field (`x:<id>`), then the keys'
/// margin. Returns `{0}` reserved — and the first counter's hash holds the
/// reservation's field, every counter's amount in order — `{1, index,
/// used}` over a cap (1-based index), `{2, now}` when a period does not
/// hold Redis's time.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(
        r"
local now = tonumber(redis.call('TIME')[1])
local n = #KEYS
for i = 1, n do
  local b = (i - 1) * 4
  if now < tonumber(ARGV[b + 3]) or now >= tonumber(ARGV[b + 4]) then
    return {2, now}
  end
end
for i = 1, n do
  local b = (i - 1) * 4
  local v = redis.call('HMGET', KEYS[i], 's', 'r')
  local used = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  if used + tonumber(ARGV[b + 2]) > tonumber(ARGV[b + 1]) then
    return {1, i, used}
  end
end
local amounts = {}
for i = 1, n do
  local b = (i - 1) * 4
  redis.call('HINCRBY', KEYS[i], 'r', ARGV[b + 2])
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[b + 4]) + tonumber(ARGV[#ARGV]))
  amounts[i] = ARGV[b + 2]
end
redis.call('HSET', KEYS[1], ARGV[#ARGV - 1], table.concat(amounts, ','))
return {0}
",
    )
});

/// The shared part of settling and releasing (concatenated before each):
/// `take(field)` gives back what the reservation `field` holds on every
/// counter and removes it; false when it is not there (released or settled
/// already, or never reserved), and nothing changes.
const TAKE: &str = r"
local function take(field)
  local v = redis.call('HGET', KEYS[1], field)
  if not v then return false end
  local i = 1
  for amount in string.gmatch(v, '[^,]+') do
    local a = tonumber(amount)
    if KEYS[i] and a > 0 then
      local r = redis.call('HINCRBY', KEYS[i], 'r', -a)
      if r < 0 then redis.call('HSET', KEYS[i], 'r', 0) end
    end
    i = i + 1
  end
  redis.call('HDEL', KEYS[1], field)
  return true
end
";

/// ARGV per key: the actual cost, period end; then the reservation's
/// field, then the keys' margin. The reservation is given back by its
/// field (once: a second settlement of it gives back nothing), the actual
/// cost added to the spend. Returns, per key, the settled spend before and
/// after.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(&format!(
        "{TAKE}{}",
        r"
take(ARGV[#ARGV - 1])
local out = {}
for i = 1, #KEYS do
  local b = (i - 1) * 2
  local before = tonumber(redis.call('HGET', KEYS[i], 's')) or 0
  local after = redis.call('HINCRBY', KEYS[i], 's', ARGV[b + 1])
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[b + 2]) + tonumber(ARGV[#ARGV]))
  out[#out + 1] = before
  out[#out + 1] = after
end
return out
"
    ))
});

/// KEYS: the counters of a reservation whose answer was lost; ARGV[1] its
/// field. Gives it back if the reserve ran and nothing took it since (1),
/// else changes nothing (0): a release sent twice, late, or for a reserve
/// that never ran credits nothing.
///
/// Sent by `EVAL`, not `EVALSHA`: it runs when a server was slow, and a
/// `NOSCRIPT` answered after the caller's timeout would never be followed
/// by the load and the second try (nobody reads it), so the release would
/// be lost.
static RELEASE: LazyLock<String> =
    LazyLock::new(|| format!("{TAKE}\nif take(ARGV[1]) then return 1 end\nreturn 0\n"));

/// How often a release is tried (each bounded by the handle's timeout,
/// the next after as long again): it is idempotent, so trying again is
/// safe.
const RELEASE_TRIES: u32 = 3;

/// The hash field of reservation `id`.
fn field(id: u64) -> String {
    format!("x:{id:016x}")
}

/// A reserve whose answer has not come: dropped so (an error, a timeout,
/// the caller giving up at its deadline), it releases the reservation by
/// its id, in a task of its own, in case the script ran.
struct Pending {
    redis: Redis,
    keys: Vec<String>,
    field: String,
    armed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let redis = self.redis.clone();
        let keys = std::mem::take(&mut self.keys);
        let field = std::mem::take(&mut self.field);
        runtime.spawn(async move {
            for _ in 0..RELEASE_TRIES {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE.as_str()).arg(keys.len());
                for key in &keys {
                    cmd.arg(key);
                }
                cmd.arg(&field);
                if redis.query::<i64>(&cmd).await.is_ok() {
                    return;
                }
                tokio::time::sleep(redis.timeout()).await;
            }
            tracing::warn!("budget store: a lost reservation could not be released");
        });
    }
}

/// Budget counters shared through Redis (see the module docs).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_llm_resilience::budget::{BudgetLayer, Cap, Money, Period, PriceTable, Scope};
/// use tower_llm_resilience::redis::{Redis, RedisBudgetStore};
/// let redis = Redis::new("redis://127.0.0.1:6379")?;
/// let budget = BudgetLayer::builder()
///     .prices(PriceTable::presets())
///     .cap(Cap::money("tenant-daily", Scope::TENANT, Period::day(), Money::from_units(50)))
///     .store(RedisBudgetStore::new(redis))
///     .build()?;
/// # let _ = budget; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisBudgetStore {
    redis: Redis,
}

impl RedisBudgetStore {
    /// Counters on this server, under its handle's prefix and timeout.
    #[must_use]
    pub fn new(redis: Redis) -> Self {
        RedisBudgetStore { redis }
    }

    /// The handle (its error count, its timeout).
    #[must_use]
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    fn key(&self, c: &Counter) -> String {
        format!(
            "{}budget:{{{}}}:{}",
            self.redis.prefix(),
            c.hash_tag(),
            c.id()
        )
    }
}

impl BudgetStore for RedisBudgetStore {
    fn reserve(&self, _now: i64, charges: Vec<Charge>) -> Answer<Reserve> {
        if charges.is_empty() {
            return Answer::Now(Ok(Reserve::Reserved));
        }
        let keys: Vec<String> = charges.iter().map(|c| self.key(&c.counter)).collect();
        let field = field(charges[0].reservation);
        let redis = self.redis.clone();
        Answer::Later(Box::pin(async move {
            let mut inv = RESERVE.prepare_invoke();
            for (key, c) in keys.iter().zip(&charges) {
                inv.key(key)
                    .arg(c.limit)
                    .arg(c.amount)
                    .arg(c.counter.window.start)
                    .arg(c.counter.window.end);
            }
            inv.arg(&field).arg(KEY_MARGIN_SECS);
            // Until the answer is in hand, a drop releases by the id.
            let mut pending = Pending {
                redis: redis.clone(),
                keys: keys.clone(),
                field: field.clone(),
                armed: true,
            };
            let reply: Vec<i64> = redis.run(&inv).await?;
            pending.armed = false;
            Ok(match reply.as_slice() {
                [0] => Reserve::Reserved,
                [1, index, used] => Reserve::Exceeded {
                    index: usize::try_from(*index - 1).unwrap_or(usize::MAX),
                    used: u64::try_from(*used).unwrap_or(0),
                },
                [2, now] => Reserve::Clock { now: *now },
                _ => {
                    return Err(crate::error::BackendError::new(
                        "unexpected reply from the reserve script",
                    ));
                }
            })
        }))
    }

    fn settle(&self, settlements: Vec<Settlement>) -> Answer<Vec<Spend>> {
        if settlements.is_empty() {
            return Answer::Now(Ok(Vec::new()));
        }
        let keys: Vec<String> = settlements.iter().map(|s| self.key(&s.counter)).collect();
        let redis = self.redis.clone();
        Answer::Later(Box::pin(async move {
            let mut inv = SETTLE.prepare_invoke();
            for (key, s) in keys.iter().zip(&settlements) {
                inv.key(key).arg(s.actual).arg(s.counter.window.end);
            }
            inv.arg(field(settlements[0].reservation))
                .arg(KEY_MARGIN_SECS);
            let reply: Vec<i64> = redis.run(&inv).await?;
            let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(reply
                .chunks_exact(2)
                .map(|p| Spend {
                    before: as_u64(p[0]),
                    after: as_u64(p[1]),
                })
                .collect())
        }))
    }

    fn read(&self, counter: &Counter) -> Answer<Balance> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key(counter)).arg("s").arg("r");
        let redis = self.redis.clone();
        Answer::Later(Box::pin(async move {
            let (s, r): (Option<i64>, Option<i64>) = redis.query(&cmd).await?;
            Ok(Balance {
                spent: s.map_or(0, |v| u64::try_from(v).unwrap_or(0)),
                reserved: r.map_or(0, |v| u64::try_from(v).unwrap_or(0)),
            })
        }))
    }
}
