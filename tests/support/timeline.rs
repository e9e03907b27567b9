//! What reached an upstream, and when: the suites that bound load over time
//! (`limits_hold`, `herd`, `outage`) stamp every request their stub
//! upstream is sent and ask these questions of the stamps — the most in any
//! sliding window, in any fixed bucket, and whether every window keeps a
//! token bucket's bound.
//!
//! Times are offsets from the test's start, so paused tokio time and the
//! real clock read alike.

use std::time::Duration;

use tower_llm_resilience::rate::Limit;

/// Units (a request, or its tokens) at points in time, sorted by time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    points: Vec<(Duration, u64)>,
}

impl Timeline {
    /// These points, in any order.
    pub(crate) fn new(points: impl IntoIterator<Item = (Duration, u64)>) -> Self {
        let mut points: Vec<_> = points.into_iter().collect();
        points.sort_by_key(|p| p.0);
        Timeline { points }
    }

    /// One unit at each of these times.
    pub(crate) fn of_times(times: impl IntoIterator<Item = Duration>) -> Self {
        Timeline::new(times.into_iter().map(|t| (t, 1)))
    }

    /// How many points.
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// The units of every point.
    pub(crate) fn total(&self) -> u64 {
        self.points.iter().map(|p| p.1).sum()
    }

    /// The first and last point's times.
    pub(crate) fn first_last(&self) -> Option<(Duration, Duration)> {
        Some((self.points.first()?.0, self.points.last()?.0))
    }

    /// The units in the closed window `[from, from + w]`.
    pub(crate) fn units_in(&self, from: Duration, w: Duration) -> u64 {
        let lo = self.points.partition_point(|p| p.0 < from);
        let hi = self.points.partition_point(|p| p.0 <= from + w);
        self.points[lo..hi].iter().map(|p| p.1).sum()
    }

    /// The most units in any closed window `[t, t + w]`, and its start. A
    /// window holding the most can always start at a point, so only those
    /// are tried.
    pub(crate) fn max_window(&self, w: Duration) -> (u64, Duration) {
        self.points
            .iter()
            .map(|&(t, _)| (self.units_in(t, w), t))
            .fold(
                (0, Duration::ZERO),
                |best, c| if c.0 > best.0 { c } else { best },
            )
    }

    /// The most units in any closed window `[t, t + w]` that contains
    /// `boundary` (where a fixed-window counter would reset), and its start.
    pub(crate) fn max_window_across(&self, w: Duration, boundary: Duration) -> (u64, Duration) {
        let earliest = boundary.saturating_sub(w);
        // The best window containing the boundary starts at its earliest
        // start, at a point, or ends at a point.
        let starts = self
            .points
            .iter()
            .flat_map(|&(t, _)| [Some(t), t.checked_sub(w)])
            .flatten()
            .filter(|&t| t >= earliest && t <= boundary)
            .chain([earliest]);
        starts
            .map(|t| (self.units_in(t, w), t))
            .fold(
                (0, Duration::ZERO),
                |best, c| if c.0 > best.0 { c } else { best },
            )
    }

    /// The most units in one fixed bucket `[k·b, (k+1)·b)`.
    pub(crate) fn max_bucket(&self, b: Duration) -> u64 {
        let mut buckets = std::collections::HashMap::<u128, u64>::new();
        for &(t, n) in &self.points {
            *buckets.entry(t.as_nanos() / b.as_nanos()).or_default() += n;
        }
        buckets.into_values().max().unwrap_or(0)
    }

    /// Panics unless every closed window `[t, t + w]`, of any length,
    /// holds at most `burst + amount · (w + slack) / per` units — the
    /// crate's sliding bound (`rate/gcra.rs`), checked exactly in integers
    /// over every pair of points. `slack` widens each window for clocks
    /// that stamp later than the limiter decided (real time); zero for
    /// paused time.
    pub(crate) fn assert_sliding_bound(&self, limit: Limit, slack: Duration, what: &str) {
        let per = limit.per().as_nanos();
        let burst = u128::from(limit.burst());
        let amount = u128::from(limit.amount());
        for (i, &(start, _)) in self.points.iter().enumerate() {
            let mut units: u128 = 0;
            for &(at, n) in &self.points[i..] {
                units += u128::from(n);
                let w = (at - start + slack).as_nanos();
                assert!(
                    units * per <= burst * per + amount * w,
                    "{what}: {units} units in [{start:?}, {at:?}] exceed \
                     {burst} + {amount} × ({:?} + {slack:?}) / {:?}",
                    at - start,
                    limit.per(),
                );
            }
        }
    }

    /// The least slack with which [`assert_sliding_bound`] holds (to the
    /// nanosecond): how much later than the limiter's decisions the stamps
    /// would have to be to explain them. Zero when the bound holds as is.
    pub(crate) fn slack_needed(&self, limit: Limit) -> Duration {
        let per = limit.per().as_nanos();
        let burst = u128::from(limit.burst());
        let amount = u128::from(limit.amount());
        let mut need: u128 = 0;
        for (i, &(start, _)) in self.points.iter().enumerate() {
            let mut units: u128 = 0;
            for &(at, n) in &self.points[i..] {
                units += u128::from(n);
                let w = (at - start).as_nanos();
                // units · per ≤ burst · per + amount · (w + s)
                let over = (units * per).saturating_sub(burst * per + amount * w);
                need = need.max(over.div_ceil(amount));
            }
        }
        Duration::from_nanos(u64::try_from(need).unwrap_or(u64::MAX))
    }
}
