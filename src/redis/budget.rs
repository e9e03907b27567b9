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

use std::sync::LazyLock;

use redis::Script;

use super::Redis;
use crate::budget::{Answer, Balance, BudgetStore, Charge, Counter, Reserve, Settlement, Spend};

/// How long a counter's key outlives its period, in seconds.
const KEY_MARGIN_SECS: i64 = 86_400;

/// ARGV per key: limit, amount, period start, period end. Returns `{0}`
/// reserved, `{1, index, used}` over a cap (1-based index), `{2, now}`
/// when a period does not hold Redis's time.
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
for i = 1, n do
  local b = (i - 1) * 4
  redis.call('HINCRBY', KEYS[i], 'r', ARGV[b + 2])
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[b + 4]) + tonumber(ARGV[#ARGV]))
end
return {0}
",
    )
});

/// ARGV per key: minus the reservation, the actual cost, period end.
/// Returns, per key, the settled spend before and after.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(
        r"
local out = {}
for i = 1, #KEYS do
  local b = (i - 1) * 3
  local r = redis.call('HINCRBY', KEYS[i], 'r', ARGV[b + 1])
  if r < 0 then redis.call('HSET', KEYS[i], 'r', 0) end
  local before = tonumber(redis.call('HGET', KEYS[i], 's')) or 0
  local after = redis.call('HINCRBY', KEYS[i], 's', ARGV[b + 2])
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[b + 3]) + tonumber(ARGV[#ARGV]))
  out[#out + 1] = before
  out[#out + 1] = after
end
return out
",
    )
});

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
            inv.arg(KEY_MARGIN_SECS);
            let reply: Vec<i64> = redis.run(&inv).await?;
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
                let refund = -i64::try_from(s.reserved).unwrap_or(i64::MAX);
                inv.key(key)
                    .arg(refund)
                    .arg(s.actual)
                    .arg(s.counter.window.end);
            }
            inv.arg(KEY_MARGIN_SECS);
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
