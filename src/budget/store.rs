//! Where budget counters live: the [`BudgetStore`] abstraction (reserve
//! across caps, settle, read), its in-memory [`MemoryBudgetStore`], and
//! what they exchange ([`Counter`], [`Charge`], [`Settlement`]).
//!
//! A counter holds two numbers for one period of one cap's scope: `spent`
//! (settled charges) and `reserved` (estimates of requests in flight). A
//! request is admitted when, for *every* cap that applies, `spent +
//! reserved + estimate ≤ limit`; then each estimate is added to
//! `reserved` — all of them or none, atomically. When its response ends,
//! the estimate leaves `reserved` and the actual cost joins `spent`. So
//! `spent` passes a limit only by what requests admitted under it cost
//! beyond their estimates: by at most what is in flight.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use super::calendar::{Period, Window};
use crate::error::BackendError;
use crate::request::KeyId;

/// Who a request is charged to, for caps per tenant.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum TenantId {
    /// Named by the request (extension or header).
    Named(Arc<str>),
    /// Its API key, when nothing names a tenant.
    Key(KeyId),
    /// Neither: every such request shares one tenant.
    Anonymous,
}

/// One counter: a cap, the values of its scope for a request, and one
/// period instance.
///
/// `Debug` shows its [`label`](Counter::label): names of the cap, tenant
/// and model, a key's 8-hex-digit [`KeyId`] label — never key material.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Counter {
    pub(crate) cap: Arc<str>,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) key: Option<Option<KeyId>>,
    pub(crate) model: Option<Option<Arc<str>>>,
    pub(crate) period: Period,
    pub(crate) window: Window,
    pub(crate) tag: Arc<str>,
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({})", self.label())
    }
}

impl Counter {
    /// The cap's name.
    #[must_use]
    pub fn cap(&self) -> &str {
        &self.cap
    }

    /// The period instance it counts.
    #[must_use]
    pub fn window(&self) -> Window {
        self.window
    }

    /// The scope's values, for people: `tenant=acme model=claude-sonnet-4`,
    /// `key=1a2b3c4d` (a [`KeyId`] label), `all` for a global cap.
    #[must_use]
    pub fn scope_label(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tenant {
            match t {
                TenantId::Named(n) => {
                    let _ = write!(s, "tenant={n}");
                }
                TenantId::Key(k) => {
                    let _ = write!(s, "tenant=key:{k}");
                }
                TenantId::Anonymous => s.push_str("tenant=-"),
            }
        }
        if let Some(k) = &self.key {
            if !s.is_empty() {
                s.push(' ');
            }
            match k {
                Some(k) => {
                    let _ = write!(s, "key={k}");
                }
                None => s.push_str("key=-"),
            }
        }
        if let Some(m) = &self.model {
            if !s.is_empty() {
                s.push(' ');
            }
            let _ = write!(s, "model={}", m.as_deref().unwrap_or("-"));
        }
        if s.is_empty() {
            s.push_str("all");
        }
        s
    }

    /// The cap, scope and period: `daily-usd tenant=acme day@1796169600`.
    #[must_use]
    pub fn label(&self) -> String {
        format!(
            "{} {} {}@{}",
            self.cap,
            self.scope_label(),
            self.period.name(),
            self.window.start
        )
    }

    /// A name for the counter in a store's key space, unique per counter
    /// and free of key material: the cap, each scope value escaped to
    /// `[A-Za-z0-9._-]` and `%XX`, a key as 16 hex digits of its
    /// [`KeyId`] (a keyed hash: equal across processes only when they
    /// install one [`KeyIdentity`](crate::request::KeyIdentity) secret),
    /// the period and its start.
    #[must_use]
    pub fn id(&self) -> String {
        let mut s = String::with_capacity(64);
        s.push_str(&self.cap);
        if let Some(t) = &self.tenant {
            match t {
                TenantId::Named(n) => {
                    s.push_str(":t.");
                    escape(&mut s, n);
                }
                TenantId::Key(k) => {
                    let _ = write!(s, ":tk.{:016x}", k.word());
                }
                TenantId::Anonymous => s.push_str(":t-"),
            }
        }
        if let Some(k) = &self.key {
            match k {
                Some(k) => {
                    let _ = write!(s, ":k.{:016x}", k.word());
                }
                None => s.push_str(":k-"),
            }
        }
        if let Some(m) = &self.model {
            match m {
                Some(m) => {
                    s.push_str(":m.");
                    escape(&mut s, m);
                }
                None => s.push_str(":m-"),
            }
        }
        let _ = write!(s, ":{}:{}", self.period.name(), self.window.start);
        s
    }

    /// The hash tag its store may group keys by: the tenant when every
    /// cap of the budget is per tenant (so one request's counters share a
    /// slot and each tenant may live on another), else the budget's name.
    #[must_use]
    pub fn hash_tag(&self) -> &str {
        &self.tag
    }
}

pub(crate) fn escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A reservation asked of one counter.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Charge {
    /// The counter.
    pub counter: Counter,
    /// Its cap's limit.
    pub limit: u64,
    /// The estimate to reserve.
    pub amount: u64,
    /// The reservation's id, one for every charge of a request (unique
    /// across processes with overwhelming probability): what a store that
    /// may lose an answer releases or settles by, so that a late or
    /// repeated release never credits twice. Stores in memory ignore it.
    pub reservation: u64,
}

/// What a reservation across counters came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reserve {
    /// Every charge was reserved.
    Reserved,
    /// The charge at `index` did not fit (`used`: spent + reserved);
    /// nothing was reserved.
    Exceeded {
        /// Which charge.
        index: usize,
        /// What its counter held.
        used: u64,
    },
    /// The store's clock (Unix seconds) is outside a charge's period:
    /// nothing was reserved; ask again with periods of that time.
    Clock {
        /// The store's time.
        now: i64,
    },
    /// The store has no room for a new counter without forgetting spend.
    Full {
        /// Its bound.
        max_counters: usize,
    },
}

/// Settling one counter: the reservation leaves, the actual cost stays.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settlement {
    /// The counter.
    pub counter: Counter,
    /// What was reserved.
    pub reserved: u64,
    /// What the request really cost.
    pub actual: u64,
    /// The reservation's id ([`Charge::reservation`]).
    pub reservation: u64,
}

/// A fresh reservation id: unique across processes with overwhelming
/// probability (the wall clock at first use, the process id and a
/// counter, mixed).
pub(crate) fn reservation_id() -> u64 {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: LazyLock<u64> = LazyLock::new(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
            });
        crate::util::splitmix64(nanos ^ (u64::from(std::process::id()) << 32))
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    crate::util::splitmix64(*SEED ^ n.wrapping_mul(crate::util::GOLDEN_GAMMA))
}

/// A counter's settled spend before and after a settlement (for
/// thresholds: a crossing is seen by exactly the settlement that made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Spend {
    /// Before.
    pub before: u64,
    /// After.
    pub after: u64,
}

/// A counter's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Balance {
    /// Settled.
    pub spent: u64,
    /// Reserved by requests in flight.
    pub reserved: u64,
}

/// A store's answer to come.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'static>>;

/// A store's answer: at once (a memory store, decided inside the layer's
/// `call`), or later (a network store).
pub enum Answer<T> {
    /// Answered now.
    Now(Result<T, BackendError>),
    /// To be awaited.
    Later(StoreFuture<T>),
}

impl<T> fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Answer::Now(_) => "Answer::Now",
            Answer::Later(_) => "Answer::Later",
        })
    }
}

impl<T: Send + 'static> Answer<T> {
    /// Waits for the answer.
    pub async fn get(self) -> Result<T, BackendError> {
        match self {
            Answer::Now(r) => r,
            Answer::Later(f) => f.await,
        }
    }
}

/// Where budget counters are kept.
///
/// `reserve` must be atomic across its charges: every one reserved, or
/// none. A store shared by several processes must also be atomic across
/// them (the Redis store runs one Lua script), and may use its own clock
/// as the authority on periods (answering [`Reserve::Clock`]).
pub trait BudgetStore: Send + Sync + 'static {
    /// Reserves every charge, or none; `now` is the caller's clock (Unix
    /// seconds).
    fn reserve(&self, now: i64, charges: Vec<Charge>) -> Answer<Reserve>;
    /// Settles each counter; one [`Spend`] per settlement, in order.
    fn settle(&self, settlements: Vec<Settlement>) -> Answer<Vec<Spend>>;
    /// A counter's state.
    fn read(&self, counter: &Counter) -> Answer<Balance>;
}

/// The default bound of a [`MemoryBudgetStore`].
pub const DEFAULT_MAX_COUNTERS: usize = 100_000;

/// Budget counters in this process's memory: decided inside the layer's
/// `call`, under one lock.
///
/// Bounded to `max_counters`. Forgetting a counter that holds spend of its
/// current period would under-count, so only counters whose period has
/// ended, or that hold nothing (no spend, no reservation), are ever
/// evicted: the oldest first, a few looked at per insert (amortised O(1);
/// one still in use is moved to the back). When none of those may go, a
/// request needing a new counter is refused
/// ([`TooManyBudgets`](crate::error::TooManyBudgets)) — the budget stays
/// exact, and the refusal says to raise the bound.
pub struct MemoryBudgetStore {
    max_counters: usize,
    state: Mutex<Counters>,
}

impl fmt::Debug for MemoryBudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudgetStore")
            .field("max_counters", &self.max_counters)
            .field("counters", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Counters {
    map: HashMap<Counter, Balance>,
    /// Insertion order (each counter once), for eviction.
    order: VecDeque<Counter>,
}

/// Counters looked at per insert into a full map.
const EVICTION_PROBES: usize = 8;

impl Default for MemoryBudgetStore {
    fn default() -> Self {
        MemoryBudgetStore::new(DEFAULT_MAX_COUNTERS)
    }
}

impl MemoryBudgetStore {
    /// A store of at most `max_counters` counters (at least 1).
    #[must_use]
    pub fn new(max_counters: usize) -> Self {
        MemoryBudgetStore {
            max_counters: max_counters.max(1),
            state: Mutex::new(Counters::default()),
        }
    }

    /// How many counters it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets one counter that may go at `now` (see the type's docs),
    /// looking at a few of the oldest; `false` when none of them may.
    fn evict_one(s: &mut Counters, now: i64) -> bool {
        for _ in 0..EVICTION_PROBES.min(s.order.len()) {
            let Some(c) = s.order.pop_front() else { break };
            let b = s.map.get(&c).copied().unwrap_or_default();
            let idle = b.spent == 0 && b.reserved == 0;
            let past = c.window.end <= now && b.reserved == 0;
            if idle || past {
                s.map.remove(&c);
                return true;
            }
            s.order.push_back(c);
        }
        false
    }

    /// The synchronous reservation (see [`BudgetStore::reserve`]).
    pub fn try_reserve(&self, now: i64, charges: &[Charge]) -> Reserve {
        let mut s = self.lock();
        for (index, c) in charges.iter().enumerate() {
            let used = s
                .map
                .get(&c.counter)
                .map_or(0, |b| b.spent.saturating_add(b.reserved));
            if used.saturating_add(c.amount) > c.limit {
                return Reserve::Exceeded { index, used };
            }
        }
        let new = charges
            .iter()
            .filter(|c| !s.map.contains_key(&c.counter))
            .count();
        while s.map.len() + new > self.max_counters {
            if !Self::evict_one(&mut s, now) {
                return Reserve::Full {
                    max_counters: self.max_counters,
                };
            }
        }
        for c in charges {
            let s = &mut *s;
            let b = match s.map.get_mut(&c.counter) {
                Some(b) => b,
                None => {
                    s.order.push_back(c.counter.clone());
                    s.map.entry(c.counter.clone()).or_default()
                }
            };
            b.reserved = b.reserved.saturating_add(c.amount);
        }
        Reserve::Reserved
    }

    /// The synchronous settlement (see [`BudgetStore::settle`]). A counter
    /// evicted meanwhile (its period over) is not made again.
    pub fn settle_now(&self, settlements: &[Settlement]) -> Vec<Spend> {
        let mut s = self.lock();
        settlements
            .iter()
            .map(|st| match s.map.get_mut(&st.counter) {
                Some(b) => {
                    let before = b.spent;
                    b.reserved = b.reserved.saturating_sub(st.reserved);
                    b.spent = b.spent.saturating_add(st.actual);
                    Spend {
                        before,
                        after: b.spent,
                    }
                }
                None => Spend::default(),
            })
            .collect()
    }

    /// Every counter it holds and its state, oldest first (a snapshot,
    /// for dashboards and tests; O(counters)).
    #[must_use]
    pub fn counters(&self) -> Vec<(Counter, Balance)> {
        let s = self.lock();
        s.order
            .iter()
            .filter_map(|c| Some((c.clone(), *s.map.get(c)?)))
            .collect()
    }

    /// A counter's state now.
    #[must_use]
    pub fn balance(&self, counter: &Counter) -> Balance {
        self.lock().map.get(counter).copied().unwrap_or_default()
    }
}

impl BudgetStore for MemoryBudgetStore {
    fn reserve(&self, now: i64, charges: Vec<Charge>) -> Answer<Reserve> {
        Answer::Now(Ok(self.try_reserve(now, &charges)))
    }

    fn settle(&self, settlements: Vec<Settlement>) -> Answer<Vec<Spend>> {
        Answer::Now(Ok(self.settle_now(&settlements)))
    }

    fn read(&self, counter: &Counter) -> Answer<Balance> {
        Answer::Now(Ok(self.balance(counter)))
    }
}

impl<S: BudgetStore + ?Sized> BudgetStore for Arc<S> {
    fn reserve(&self, now: i64, charges: Vec<Charge>) -> Answer<Reserve> {
        (**self).reserve(now, charges)
    }
    fn settle(&self, settlements: Vec<Settlement>) -> Answer<Vec<Spend>> {
        (**self).settle(settlements)
    }
    fn read(&self, counter: &Counter) -> Answer<Balance> {
        (**self).read(counter)
    }
}
