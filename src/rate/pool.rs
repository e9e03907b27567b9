//! A pool of API keys the rate limiter chooses from at admission.
//!
//! The full story is on [`KeyPool`], the public face of this module.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use http::{HeaderName, HeaderValue, Request};

use super::calendar::{CalendarQuota, Clock, PeriodCost, PeriodUsage, QuotaFit, until};
use super::gcra::{DIMENSIONS, Denied, Dimension};
use super::state::{Attempt, Fit, Group, GroupKey, Limiter, Settle, Ticket};
use crate::error::{InvalidConfig, TooManyGroups, UnpricedModel};
use crate::money::{Money, Price, PriceTable};
use crate::provider::Api;
use crate::queue::QueueKey;
use crate::request::{KeyId, RequestMeta};
use crate::sync::{Arc, Mutex, lock};

pub(crate) mod admit;
#[cfg(feature = "redis")]
pub(crate) mod remote;

/// The most keys one pool holds: every admission looks at each of them.
pub const MAX_POOL_KEYS: usize = 256;

/// Which header carries the key, as the provider expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthStyle {
    /// Anthropic: `x-api-key: <key>`.
    Anthropic,
    /// OpenAI (and OpenAI-compatible APIs): `authorization: Bearer <key>`.
    OpenAi,
    /// Azure OpenAI: `api-key: <key>`.
    Azure,
}

impl AuthStyle {
    fn header(self) -> HeaderName {
        match self {
            AuthStyle::Anthropic => HeaderName::from_static("x-api-key"),
            AuthStyle::OpenAi => http::header::AUTHORIZATION,
            AuthStyle::Azure => HeaderName::from_static("api-key"),
        }
    }

    fn value(self, secret: &str) -> Option<HeaderValue> {
        let mut value = match self {
            AuthStyle::OpenAi => HeaderValue::try_from(format!("Bearer {secret}")).ok()?,
            AuthStyle::Anthropic | AuthStyle::Azure => HeaderValue::from_str(secret).ok()?,
        };
        value.set_sensitive(true);
        Some(value)
    }
}

/// How a pool chooses among the keys that can take a request now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolStrategy {
    /// The most headroom left after the request's cost (see the
    /// [`KeyPool`] docs).
    #[default]
    MostHeadroom,
    /// The fewest requests used in the key's current calendar period.
    FewestUsed,
}

/// One key of a pool: a label (shown in logs and stats, never the secret),
/// the secret, and optionally its organisation and calendar quota.
pub struct PoolKey {
    label: Box<str>,
    secret: String,
    organization: Option<Box<str>>,
    quota: Option<CalendarQuota>,
}

impl fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolKey")
            .field("label", &self.label)
            .field("organization", &self.organization)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl PoolKey {
    /// A key named `label` (for people: it appears in logs and stats).
    pub fn new(label: impl Into<Box<str>>, secret: impl Into<String>) -> Self {
        PoolKey {
            label: label.into(),
            secret: secret.into(),
            organization: None,
            quota: None,
        }
    }

    /// The organisation the key belongs to: keys of one organisation share
    /// one limiter group (see [`KeyPool`]).
    #[must_use]
    pub fn organization(mut self, name: impl Into<Box<str>>) -> Self {
        self.organization = Some(name.into());
        self
    }

    /// The key's quota per calendar day or month.
    #[must_use]
    pub fn quota(mut self, quota: CalendarQuota) -> Self {
        self.quota = Some(quota);
        self
    }
}

/// Builds a [`KeyPool`].
#[must_use]
pub struct KeyPoolBuilder {
    auth: AuthStyle,
    keys: Vec<PoolKey>,
    strategy: PoolStrategy,
    clock: Clock,
    prices: Option<PriceTable>,
}

impl fmt::Debug for KeyPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPoolBuilder")
            .field("auth", &self.auth)
            .field("keys", &self.keys)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl KeyPoolBuilder {
    /// Adds a key with no organisation and no calendar quota.
    pub fn key(self, label: impl Into<Box<str>>, secret: impl Into<String>) -> Self {
        self.add_key(PoolKey::new(label, secret))
    }

    /// Adds a key.
    pub fn add_key(mut self, key: PoolKey) -> Self {
        self.keys.push(key);
        self
    }

    /// How a key is chosen (default [`PoolStrategy::MostHeadroom`]).
    pub fn strategy(mut self, strategy: PoolStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The prices calendar quotas in [`spend`](CalendarQuota::spend) charge
    /// by, and [`PoolKeyStats::spend_used`] counts in (a pool with such a
    /// quota needs them). Give the spend budget's table, so both count one
    /// spend.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// The wall clock calendar quotas count by (default the system's).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the pool.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for no key or more than [`MAX_POOL_KEYS`], a
    /// secret that is empty or not a valid header value, the same secret or
    /// label twice, an invalid [`CalendarQuota`], or a quota in spend
    /// without [`prices`](Self::prices). No message names a secret.
    pub fn build(self) -> Result<KeyPool, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if self.keys.is_empty() {
            return invalid("key_pool", "needs at least one key");
        }
        if self.keys.len() > MAX_POOL_KEYS {
            return invalid("key_pool", "holds at most 256 keys");
        }
        let name = self.auth.header();
        let mut members: Vec<Member> = Vec::with_capacity(self.keys.len());
        let mut organizations: Vec<(Box<str>, KeyId)> = Vec::new();
        for key in self.keys {
            if let Some(q) = &key.quota {
                q.validate()?;
            }
            if key.secret.is_empty() {
                return invalid("key_pool.key", "a secret must not be empty");
            }
            let Some(value) = self.auth.value(&key.secret) else {
                return invalid("key_pool.key", "a secret must be a valid header value");
            };
            let mut headers = http::HeaderMap::new();
            headers.insert(name.clone(), value.clone());
            let Some(id) = KeyId::from_headers(&headers) else {
                return invalid("key_pool.key", "a secret must be a valid header value");
            };
            if members.iter().any(|m| m.id == id) {
                return invalid("key_pool.key", "the same secret was added twice");
            }
            if members.iter().any(|m| m.label == key.label) {
                return invalid("key_pool.label", "two keys have the same label");
            }
            let group = match &key.organization {
                Some(org) => match organizations.iter().find(|(o, _)| o == org) {
                    Some((_, first)) => *first,
                    None => {
                        organizations.push((org.clone(), id));
                        id
                    }
                },
                None => id,
            };
            members.push(Member {
                label: key.label,
                value,
                id,
                group,
                organization: key.organization,
                quota: key.quota,
                usage: Mutex::new(PeriodUsage::default()),
            });
        }
        // The tag: the pool's groups, in an order every process agrees on.
        let mut words: Vec<u64> = members.iter().map(|m| m.group.word()).collect();
        words.sort_unstable();
        words.dedup();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let tag = xxhash_rust::xxh3::xxh3_64(&bytes);
        let capped = members.iter().filter(|m| m.capped_in_money()).count();
        if capped > 0 && self.prices.is_none() {
            return invalid("key_pool.prices", "a quota in spend needs prices");
        }
        Ok(KeyPool {
            inner: Arc::new(PoolInner {
                tag,
                prices: self.prices.unwrap_or_else(PriceTable::empty),
                all_capped_in_money: capped == members.len(),
                header: name,
                members: members.into_boxed_slice(),
                strategy: self.strategy,
                clock: self.clock,
                queue_key: QueueKey::unique(),
                queued: AtomicU32::new(0),
            }),
        })
    }
}

/// A pool of API keys for one provider, chosen per request at admission by
/// the rate limiter it is given to
/// ([`RateLimitBuilder::key_pool`](super::RateLimitBuilder::key_pool)).
///
/// Secrets are held as sensitive `HeaderValue`s and never shown: `Debug`
/// prints each key's label and its [`KeyId`]'s short label only. Building
/// a pool computes its keys' [`KeyId`]s, so a
/// [`KeyIdentity`](crate::request::KeyIdentity) of your own must be
/// installed before.
///
/// # What pooling is for, and what it is not for
///
/// A [`KeyPool`] is for more throughput when each key really has a quota
/// of its own (keys of separate projects or contracts, each with its own
/// limits), and for spreading traffic so that one key's 429, calendar quota
/// or slow refill does not stall callers another key could serve. It is
/// **not** a way around a provider's limits: providers limit per
/// organisation, not per key, and several keys of one organisation share
/// that organisation's limit — declare them with
/// [`PoolKey::organization`], and the pool gives them one limiter group.
/// Using many keys to exceed what a provider grants one customer breaks
/// most providers' terms; this crate does not help with that.
///
/// # How a key is chosen
///
/// A request that carries no credentials of its own (no `x-api-key`,
/// `authorization`, `api-key`… header, as [`KeyId`] reads them) is given a
/// key at admission — in the rate limiter itself, not in a layer above it,
/// so that "wait for any key" is one place in one queue rather than a loop
/// of retries. Among the keys that are not cooling down after a 429, not
/// out of their [`CalendarQuota`] (nor capped in money, for a request the
/// pool's prices cannot price), and whose group's buckets hold the
/// request's whole cost now, it takes
///
/// - [`PoolStrategy::MostHeadroom`] (the default): the key with the most
///   headroom after this cost — the least, over the limited dimensions of
///   its group, of `(available − cost) / burst` (1 when nothing is
///   limited); ties go to the key with the fewest requests used this
///   calendar period, then to the first declared;
/// - [`PoolStrategy::FewestUsed`]: the key with the fewest requests used in
///   its current calendar period (for example "the key with the fewest
///   requests today"); ties go to the most headroom, then the first
///   declared.
///
/// It reserves the cost in that key's group (and its calendar quota), sets
/// the key's auth header on the request — marked sensitive — and sends it.
/// The reservation is settled, and the response learned from, in that
/// key's group: a 429 on key A closes A's gate only, and traffic moves to B.
///
/// A spend budget sits above the rate limiter, so it is charged before a
/// pool key is chosen: its per-key scope ([`Scope::KEY`](crate::budget::Scope::KEY))
/// counts the credentials the request arrived with, never the pool key.
/// To cap what each pooled key uses, give it a [`CalendarQuota`] in
/// requests, tokens or money ([`spend`](CalendarQuota::spend), priced by
/// [`KeyPoolBuilder::prices`]) per day or month: the key out of it is
/// skipped for another until its reset.
///
/// A request no key can take now waits in the limiter's queue, in one place
/// for the whole pool (by priority, as any waiter), for whichever key frees
/// first: a refund, a gate opening or a learned limit on any key wakes the
/// pool's head, and a bucket's refill is the head's own timer (the earliest
/// time any key fits). It gives up at its deadline or the maximum wait with
/// [`NoKeyAvailable`](crate::error::NoKeyAvailable): at once when the first
/// key to free is already later than that, or when every key is out of
/// its calendar quota (`retry_after` is then the earliest reset).
///
/// # Shared through Redis
///
/// With a Redis store ([`RateLimitBuilder::redis`](super::RateLimitBuilder::redis),
/// the `redis` feature) the choice itself runs in Redis: one script reads
/// every key's calendar counters, 429 gate and buckets on Redis's clock,
/// chooses as above and reserves on the chosen key, atomically — so
/// processes sharing a pool choose against one state: a 429 on key A seen
/// by one process makes the others skip A, and a calendar quota used up
/// through one is used up for all. Processes sharing a pool must declare
/// the same keys (the pool's Redis hash tag is made from them) and install
/// one [`KeyIdentity`](crate::request::KeyIdentity) secret. Why one script
/// and not a local hint plus a reserve per key: `rate/pool/remote.rs`.
///
/// # Organisations
///
/// Keys declared with one [`organization`](PoolKey::organization) share one
/// limiter group — keyed by the [`KeyId`] of the organisation's first key —
/// and so one GCRA, one learned quota and one 429 gate: the provider's
/// bucket is the organisation's, so a 429 on one of its keys would be a 429
/// on every other one too, and closing only that key's gate would send the
/// next request into the same empty bucket. Calendar quotas stay per key.
///
/// ```
/// use tower_llm_resilience::rate::{
///     AuthStyle, CalendarQuota, KeyPool, Limits, PoolKey, RateLimitLayer,
/// };
/// let pool = KeyPool::builder(AuthStyle::Anthropic)
///     .key("team-a", "sk-ant-a…")
///     .add_key(PoolKey::new("team-b", "sk-ant-b…").quota(CalendarQuota::daily().requests(10_000)))
///     .build()?;
/// let layer = RateLimitLayer::builder()
///     .limits(Limits::per_minute(50, 20_000, 8_000)?)
///     .key_pool(pool)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), tower_llm_resilience::error::InvalidConfig>(())
/// ```
#[derive(Clone)]
pub struct KeyPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self
            .inner
            .members
            .iter()
            .map(|m| (&*m.label, m.id))
            .collect();
        f.debug_struct("KeyPool")
            .field("header", &self.inner.header)
            .field("keys", &keys)
            .field("strategy", &self.inner.strategy)
            .finish_non_exhaustive()
    }
}

/// What a pool can tell about one of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolKeyStats {
    /// The key's label.
    pub label: Box<str>,
    /// The identity of the key (never the key).
    pub key: KeyId,
    /// The identity its limiter group is keyed by: its own, or its
    /// organisation's first key's.
    pub group: KeyId,
    /// Its organisation, if declared.
    pub organization: Option<Box<str>>,
    /// Its calendar quota, if any.
    pub quota: Option<CalendarQuota>,
    /// Requests reserved in its current calendar period (a day in UTC
    /// when it has no quota).
    pub requests_used: u64,
    /// Tokens reserved in its current calendar period.
    pub tokens_used: u64,
    /// Spend reserved in its current calendar period (what the pool's
    /// prices can price).
    pub spend_used: Money,
}

impl KeyPool {
    /// A builder for a pool whose keys are sent as `auth` says.
    pub fn builder(auth: AuthStyle) -> KeyPoolBuilder {
        KeyPoolBuilder {
            auth,
            keys: Vec::new(),
            strategy: PoolStrategy::default(),
            clock: Clock::system(),
            prices: None,
        }
    }

    /// How many keys the pool holds.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Always `false`: a pool holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// The identity of the key labelled `label`.
    pub fn key_id(&self, label: &str) -> Option<KeyId> {
        self.inner
            .members
            .iter()
            .find(|m| &*m.label == label)
            .map(|m| m.id)
    }

    /// A snapshot of every key, in the order declared.
    pub fn stats(&self) -> Vec<PoolKeyStats> {
        let unix = self.inner.clock.unix();
        self.inner
            .members
            .iter()
            .map(|m| {
                let mut u = lock(&m.usage);
                u.roll(m.quota.as_ref(), unix);
                PoolKeyStats {
                    label: m.label.clone(),
                    key: m.id,
                    group: m.group,
                    organization: m.organization.clone(),
                    quota: m.quota,
                    requests_used: u.requests,
                    tokens_used: u.tokens,
                    spend_used: Money::from_nanos(u.spend),
                }
            })
            .collect()
    }

    /// The pool's place in the queue, when `key` is one of its groups'.
    pub(crate) fn wake_key(&self, key: Option<KeyId>) -> Option<QueueKey> {
        let key = key?;
        self.inner
            .members
            .iter()
            .any(|m| m.group == key)
            .then_some(self.inner.queue_key)
    }

    pub(crate) fn inner(&self) -> &Arc<PoolInner> {
        &self.inner
    }

    /// Requests of the pool waiting in the queue.
    pub(crate) fn queued(&self) -> u32 {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Sets member `i`'s auth header on `req` (sensitive).
    pub(crate) fn authorize<B>(&self, req: &mut Request<B>, member: usize) {
        let m = &self.inner.members[member];
        tracing::trace!(key = %m.label, id = %m.id, "key pool: key chosen");
        req.headers_mut()
            .insert(self.inner.header.clone(), m.value.clone());
    }

    /// Gives back (`None`: cancelled; `Refused`) or corrects (`Usage`) a
    /// calendar reservation, in the period it was made in; true when
    /// something came back.
    pub(crate) fn refund(&self, t: &PoolTicket, outcome: Option<&Settle>) -> bool {
        let Some(m) = self.inner.members.get(t.member as usize) else {
            return false;
        };
        let mut u = lock(&m.usage);
        if u.index != t.period {
            // A new period began: what was reserved in the old one is gone.
            return false;
        }
        let d = calendar_delta(t, outcome);
        u.requests = u.requests.saturating_add_signed(d.requests);
        u.tokens = u.tokens.saturating_add_signed(d.tokens);
        u.spend = u.spend.saturating_add_signed(d.spend);
        d.requests < 0 || d.tokens < 0 || d.spend < 0
    }

    /// The correction of a calendar reservation made in Redis: the
    /// member's id word and what to add (tokens and spend only when its
    /// quota counts them); `None` when nothing changes.
    #[cfg(feature = "redis")]
    pub(crate) fn redis_correction(
        &self,
        t: &PoolTicket,
        outcome: Option<&Settle>,
    ) -> Option<(u64, CalendarDelta)> {
        let m = self.inner.members.get(t.member as usize)?;
        let mut d = calendar_delta(t, outcome);
        if m.quota.is_none_or(|q| q.tokens.is_none()) {
            d.tokens = 0;
        }
        if m.quota.is_none_or(|q| q.spend.is_none()) {
            d.spend = 0;
        }
        (d != CalendarDelta::default()).then_some((m.id.word(), d))
    }

    /// How a request is priced on this pool's keys: `None` when the table
    /// has no price for its model (its spend is then not counted, and the
    /// keys capped in money do not take it).
    ///
    /// # Errors
    ///
    /// [`UnpricedModel`] when it has none and every key is capped in money:
    /// a cap in money never under-counts, and counting nothing would.
    pub(crate) fn pricing(
        &self,
        meta: Option<&RequestMeta>,
    ) -> Result<Option<Priced>, UnpricedModel> {
        let model = meta.and_then(RequestMeta::model);
        match self.inner.prices.price(model) {
            Some(price) => Ok(Some(Priced {
                price,
                api: meta.and_then(RequestMeta::api),
            })),
            None if self.inner.all_capped_in_money => Err(UnpricedModel::new(
                meta.and_then(RequestMeta::model_arc)
                    .map(|m| crate::request::bounded_model(m).to_string()),
            )),
            None => Ok(None),
        }
    }

    /// The pool's tag: one word for its set of groups, the hash tag its
    /// state in Redis shares (processes sharing a pool declare the same
    /// keys, so they agree on it).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn tag(&self) -> u64 {
        self.inner.tag
    }

    /// Chooses a key for `cost` now and, unless `send` is `None` (a
    /// newcomer behind the pool's waiters only asks), reserves it there
    /// (`Some(true)`: counted as sent).
    ///
    /// # Errors
    ///
    /// [`TooManyGroups`] when a key's group cannot be made.
    pub(crate) fn choose(
        &self,
        limiter: &Limiter,
        model: Option<&std::sync::Arc<str>>,
        cost: [u64; DIMENSIONS],
        priced: Option<Priced>,
        now: u64,
        send: Option<bool>,
    ) -> Result<Choice, TooManyGroups> {
        let inner = &*self.inner;
        let shared = limiter.shared();
        let unix = inner.clock.unix();
        let input = cost[Dimension::InputTokens.index()];
        let output = cost[Dimension::OutputTokens.index()];
        let period_cost = period_cost(input, output, priced);
        // A `Local` fallback admits up to its share of each quota.
        let share = shared.config.calendar_share;
        let quota = |m: &Member| m.quota.map(|q| q.share(share));
        let mut candidates: Vec<Candidate> = Vec::with_capacity(inner.members.len());
        let mut wait_at: Option<u64> = None;
        let mut parked = false;
        let mut reset: Option<i64> = None;
        let mut never: Option<Denied> = None;
        for (i, m) in inner.members.iter().enumerate() {
            if priced.is_none() && m.capped_in_money() {
                continue;
            }
            let (fits, used) = {
                let mut u = lock(&m.usage);
                (u.fits(quota(m).as_ref(), period_cost, unix), u.requests)
            };
            if let QuotaFit::Exhausted { reset_at } = fits {
                reset = Some(reset.map_or(reset_at, |r| r.min(reset_at)));
                continue;
            }
            let group = limiter.group(GroupKey::new(Some(m.group), model.cloned()), now)?;
            match shared.fit(&group, cost, now) {
                Fit::Now(headroom) => candidates.push(Candidate {
                    member: i,
                    group,
                    headroom,
                    used,
                }),
                Fit::At(at) => wait_at = Some(wait_at.map_or(at, |w| w.min(at))),
                Fit::Parked => parked = true,
                Fit::Never(d) => {
                    never.get_or_insert(d);
                }
            }
        }
        let Some(send) = send else {
            if !candidates.is_empty() {
                return Ok(Choice::Wait(Some(now)));
            }
            return Ok(self.no_key(wait_at, parked, reset, never, now, unix));
        };
        let by_headroom = |a: &Candidate, b: &Candidate| b.headroom.total_cmp(&a.headroom);
        let by_used = |a: &Candidate, b: &Candidate| a.used.cmp(&b.used);
        match inner.strategy {
            PoolStrategy::MostHeadroom => candidates.sort_by(|a, b| {
                by_headroom(a, b)
                    .then(by_used(a, b))
                    .then(a.member.cmp(&b.member))
            }),
            PoolStrategy::FewestUsed => candidates.sort_by(|a, b| {
                by_used(a, b)
                    .then(by_headroom(a, b))
                    .then(a.member.cmp(&b.member))
            }),
        }
        for c in candidates {
            let m = &inner.members[c.member];
            // The calendar quota first (another request may have taken the
            // last of it since), then the group's buckets.
            let period = {
                let mut u = lock(&m.usage);
                if let QuotaFit::Exhausted { reset_at } =
                    u.fits(quota(m).as_ref(), period_cost, unix)
                {
                    reset = Some(reset.map_or(reset_at, |r| r.min(reset_at)));
                    continue;
                }
                u.add(period_cost);
                u.index
            };
            let ticket = PoolTicket {
                member: c.member as u32,
                period,
                input,
                output,
                spend: period_cost.spend,
                priced,
            };
            match shared.attempt(&c.group, cost, now, false, send) {
                Attempt::Admitted(mut t) => {
                    t.pool = Some(ticket);
                    return Ok(Choice::Admitted {
                        group: c.group,
                        ticket: t,
                        member: c.member,
                    });
                }
                other => {
                    self.refund(&ticket, None);
                    match other {
                        Attempt::At { at, .. } => wait_at = Some(wait_at.map_or(at, |w| w.min(at))),
                        Attempt::Never(d) => {
                            never.get_or_insert(d);
                        }
                        _ => parked = true,
                    }
                }
            }
        }
        Ok(self.no_key(wait_at, parked, reset, never, now, unix))
    }

    /// No key can take the request now: when the first could, or why none
    /// ever can.
    fn no_key(
        &self,
        wait_at: Option<u64>,
        parked: bool,
        reset: Option<i64>,
        never: Option<Denied>,
        now: u64,
        unix: i64,
    ) -> Choice {
        let reset_ns = reset.map(|r| now.saturating_add(super::gcra::nanos(until(unix, r))));
        if wait_at.is_some() || parked {
            let at = match (wait_at, reset_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            return Choice::Wait(at);
        }
        if let Some(r) = reset {
            return Choice::Exhausted(until(unix, r));
        }
        match never {
            Some(d) => Choice::Never(d),
            None => Choice::Wait(None),
        }
    }
}

/// What one request counts against its key's calendar quota.
pub(crate) fn period_cost(input: u64, output: u64, priced: Option<Priced>) -> PeriodCost {
    PeriodCost {
        tokens: input.saturating_add(output),
        spend: priced.map_or(0, |p| p.price.estimate(input, output).nanos()),
    }
}

/// How a request is priced on a pool's keys (see [`KeyPool::pricing`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Priced {
    price: Price,
    api: Option<Api>,
}

/// What settling a calendar reservation changes, negative to give back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CalendarDelta {
    pub(crate) requests: i64,
    pub(crate) tokens: i64,
    /// Nano-units.
    pub(crate) spend: i64,
}

/// What settling `t` with `outcome` (`None`: never sent) changes.
pub(crate) fn calendar_delta(t: &PoolTicket, outcome: Option<&Settle>) -> CalendarDelta {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let reserved = t.input.saturating_add(t.output);
    match outcome {
        None | Some(Settle::Refused) => CalendarDelta {
            requests: -1,
            tokens: -signed(reserved),
            spend: -signed(t.spend),
        },
        Some(Settle::Usage { usage, complete }) => {
            let input = if usage.total_input_tokens() > 0 {
                usage.rate_limited_input_tokens()
            } else {
                t.input
            };
            // A cut stream: at least the estimate (as `Price::settled`).
            let output = if *complete {
                usage.output_tokens
            } else {
                usage.output_tokens.max(t.output)
            };
            let used = input.saturating_add(output);
            let spent = t.priced.map_or(0, |p| {
                p.price
                    .settled((t.input, t.output), usage, *complete, p.api)
                    .nanos()
            });
            CalendarDelta {
                requests: 0,
                tokens: signed(used).saturating_sub(signed(reserved)),
                spend: signed(spent).saturating_sub(signed(t.spend)),
            }
        }
        Some(Settle::Unknown) => CalendarDelta::default(),
    }
}

/// What [`KeyPool::choose`] found.
// Made once per admission and moved straight into the request's hold:
// boxing the ticket would cost an allocation for no saving.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Choice {
    /// Reserved on `member`'s group.
    Admitted {
        group: Arc<Group>,
        ticket: Ticket,
        member: usize,
    },
    /// No key now; the first fits at this time (ns since base), or when a
    /// response wakes the pool (`None`).
    Wait(Option<u64>),
    /// Every key that could ever take it is out of its calendar quota
    /// until this long from now.
    Exhausted(std::time::Duration),
    /// No key can ever take it.
    Never(Denied),
}

struct Candidate {
    member: usize,
    group: Arc<Group>,
    headroom: f64,
    used: u64,
}

/// A calendar reservation on one key, carried by the request's
/// [`Ticket`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolTicket {
    pub(crate) member: u32,
    /// The calendar period it was reserved in (Redis's, when Redis chose).
    pub(crate) period: i64,
    pub(crate) input: u64,
    pub(crate) output: u64,
    /// The spend reserved, in nano-units, and how to price the answer.
    pub(crate) spend: u64,
    pub(crate) priced: Option<Priced>,
}

impl Member {
    /// Whether its calendar quota counts spend: it takes only requests the
    /// pool can price.
    fn capped_in_money(&self) -> bool {
        self.quota.is_some_and(|q| q.spend.is_some())
    }
}

struct Member {
    label: Box<str>,
    /// The auth header's value: sensitive.
    value: HeaderValue,
    id: KeyId,
    /// The identity its group is keyed by (its organisation's first key's).
    group: KeyId,
    organization: Option<Box<str>>,
    quota: Option<CalendarQuota>,
    usage: Mutex<PeriodUsage>,
}

pub(crate) struct PoolInner {
    header: HeaderName,
    members: Box<[Member]>,
    strategy: PoolStrategy,
    clock: Clock,
    prices: PriceTable,
    /// Whether every key has a calendar quota in money (so none can take a
    /// request the prices cannot price).
    all_capped_in_money: bool,
    /// The pool's hash tag in Redis ([`KeyPool::tag`]).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    tag: u64,
    /// The pool's one key in the limiter's wait queue.
    pub(crate) queue_key: QueueKey,
    /// Requests waiting for a key (a newcomer that sees any queues behind
    /// them).
    pub(crate) queued: AtomicU32,
}
