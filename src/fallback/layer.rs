use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::FallbackInfo;
use super::chain::{DefaultTriggers, FallbackPolicy, Target};
use super::cooling::Cooling;
use super::service::Fallback;
use crate::error::InvalidConfig;
use crate::request::RequestMeta;
use crate::response::ResponseBody;

type Degraded =
    dyn Fn(Option<&RequestMeta>, &FallbackInfo) -> http::Response<ResponseBody> + Send + Sync;

pub(crate) struct Config {
    pub(crate) targets: Vec<Target>,
    pub(crate) policy: Box<dyn FallbackPolicy>,
    pub(crate) cooldown: Duration,
    pub(crate) max_cooldown: Duration,
    pub(crate) peek_limit: usize,
    pub(crate) peek_timeout: Duration,
    pub(crate) degraded: Option<Box<Degraded>>,
    /// Until when each target (by name) is skipped: bounded
    /// (`cooling.rs`).
    cooling: Cooling,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackConfig")
            .field("targets", &self.targets)
            .field("cooldown", &self.cooldown)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// No chain and no degraded response: nothing can ever be re-issued or
    /// substituted, so the layer passes requests and answers through.
    pub(crate) fn is_passthrough(&self) -> bool {
        self.targets.is_empty() && self.degraded.is_none()
    }

    pub(crate) fn is_cooling(&self, name: &str) -> bool {
        self.cooling.is_cooling(name)
    }

    pub(crate) fn cool(&self, name: &Arc<str>, d: Duration) {
        self.cooling.cool(name, d);
    }

    /// Time left in each target's cooldown (for stats and tests).
    pub(crate) fn cooling(&self) -> Vec<(Arc<str>, Duration)> {
        self.cooling.cooling()
    }
}

/// Re-issues a request to the next target of a chain when the current one
/// is exhausted, overloaded or too slow — see the [module docs](super).
#[derive(Clone, Debug)]
pub struct FallbackLayer {
    config: Arc<Config>,
}

impl FallbackLayer {
    /// A chain of these targets after the request's own model, with the
    /// default triggers and cooldowns.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Self {
        FallbackBuilder::default().targets(targets).finish()
    }

    /// A builder for every setting.
    pub fn builder() -> FallbackBuilder {
        FallbackBuilder::default()
    }

    /// Targets in a cooldown now, with the time left.
    pub fn cooling(&self) -> Vec<(Arc<str>, Duration)> {
        self.config.cooling()
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;
    fn layer(&self, inner: S) -> Fallback<S> {
        Fallback::from_config(inner, Arc::clone(&self.config))
    }
}

/// Builds a [`FallbackLayer`].
#[must_use]
pub struct FallbackBuilder {
    targets: Vec<Target>,
    policy: Box<dyn FallbackPolicy>,
    cooldown: Duration,
    max_cooldown: Duration,
    peek_limit: usize,
    peek_timeout: Duration,
    degraded: Option<Box<Degraded>>,
}

impl fmt::Debug for FallbackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Default for FallbackBuilder {
    fn default() -> Self {
        FallbackBuilder {
            targets: Vec::new(),
            policy: Box::new(DefaultTriggers),
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
            peek_limit: 64 * 1024,
            peek_timeout: super::future::DEFAULT_PEEK_TIMEOUT,
            degraded: None,
        }
    }
}

impl FallbackBuilder {
    /// Appends targets to the chain, in order.
    pub fn targets(mut self, targets: impl IntoIterator<Item = Target>) -> Self {
        self.targets.extend(targets);
        self
    }

    /// Appends one target.
    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Which failures move a request on (default [`DefaultTriggers`]).
    pub fn policy(mut self, policy: impl FallbackPolicy) -> Self {
        self.policy = Box::new(policy);
        self
    }

    /// How long a target that triggered is skipped when the failure gave
    /// no advice (default 10 s), and the longest cooldown (default 5 min,
    /// also used for an exhausted quota).
    pub fn cooldown(mut self, default: Duration, max: Duration) -> Self {
        self.cooldown = default;
        self.max_cooldown = max;
        self
    }

    /// How long the layer reads ahead in a body — an error body to classify
    /// it, a stream's start — when the request's deadline is further away,
    /// or there is none (default 30 s). An error body that stalls past it
    /// is given up (its bytes so far kept, the upstream body dropped) and
    /// judged on what was read.
    pub fn peek_timeout(mut self, timeout: Duration) -> Self {
        self.peek_timeout = timeout;
        self
    }

    /// The last resort when every target failed: a response made from the
    /// request's metadata and what happened (e.g. a polite "try later" in
    /// the provider's shape). Without it, the last failure is returned as
    /// it is.
    pub fn degraded(
        mut self,
        f: impl Fn(Option<&RequestMeta>, &FallbackInfo) -> http::Response<ResponseBody>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.degraded = Some(Box::new(f));
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for an empty chain, more than 16 targets, a
    /// cooldown over a day, or a `peek_timeout` of zero or over a day.
    pub fn build(self) -> Result<FallbackLayer, InvalidConfig> {
        if self.targets.is_empty() || self.targets.len() > 16 {
            return Err(InvalidConfig::new(
                "targets",
                "a fallback chain needs 1 to 16 targets",
            ));
        }
        let day = Duration::from_secs(86_400);
        if self.cooldown > day || self.max_cooldown > day {
            return Err(InvalidConfig::new("cooldown", "must be under a day"));
        }
        if self.peek_timeout.is_zero() || self.peek_timeout > day {
            return Err(InvalidConfig::new(
                "peek_timeout",
                "must be more than zero and under a day",
            ));
        }
        Ok(self.finish())
    }

    fn finish(self) -> FallbackLayer {
        let names = self.targets.iter().map(|t| Arc::clone(&t.name)).collect();
        FallbackLayer {
            config: Arc::new(Config {
                targets: self.targets,
                policy: self.policy,
                cooldown: self.cooldown,
                max_cooldown: self.max_cooldown,
                peek_limit: self.peek_limit,
                peek_timeout: self.peek_timeout,
                degraded: self.degraded,
                cooling: Cooling::new(names),
            }),
        }
    }
}
