//! Coalescing: identical concurrent misses share one upstream call.
//!
//! The first miss of a key becomes its leader and calls upstream; later
//! ones wait (async, on a [`Notify`]) until the leader's entry is committed
//! — when its body completed — and are served from it. A leader that
//! fails, is cancelled, or gets a response that cannot be cached gives up
//! its leadership, and exactly one waiter takes over (under the flight's
//! lock), so a failing key is retried one caller at a time, never by a
//! stampede.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::Status;
use super::key::CacheKey;
use super::store::CachedResponse;

/// What a finished flight hands its waiters.
pub(crate) type Served = (Arc<CachedResponse>, Status);

#[derive(Default)]
struct FlightState {
    leader: bool,
    waiters: usize,
    result: Option<Served>,
}

pub(crate) struct Flight {
    notify: Notify,
    state: Mutex<FlightState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks can panic half-way; a poisoned lock's data
    // is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every key with a request in flight.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Flight>>>,
}

/// What joining a key's flight gives.
pub(crate) enum Joined {
    /// This request calls upstream.
    Lead(Leader),
    /// Another request is calling; wait for it.
    Wait(Waiter),
}

/// What a waiter ends with.
pub(crate) enum Waited {
    /// The leader's committed entry (or the stale entry it fell back to).
    Served(Served),
    /// The leader gave up: this request leads now.
    Lead(Leader),
    /// Waited longer than the coalescing timeout: this request goes
    /// upstream on its own (without leading anyone).
    TimedOut,
}

impl Flights {
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub(crate) fn join(self: &Arc<Self>, key: &CacheKey) -> Joined {
        let mut map = lock(&self.map);
        if let Some(flight) = map.get(key) {
            let mut st = lock(&flight.state);
            if !st.leader {
                st.leader = true;
                drop(st);
                return Joined::Lead(Leader {
                    flights: Arc::clone(self),
                    key: key.clone(),
                    flight: Arc::clone(flight),
                    finished: false,
                });
            }
            st.waiters += 1;
            drop(st);
            return Joined::Wait(Waiter {
                flights: Arc::clone(self),
                key: key.clone(),
                flight: Arc::clone(flight),
                done: false,
            });
        }
        let flight = Arc::new(Flight {
            notify: Notify::new(),
            state: Mutex::new(FlightState {
                leader: true,
                ..FlightState::default()
            }),
        });
        map.insert(key.clone(), Arc::clone(&flight));
        Joined::Lead(Leader {
            flights: Arc::clone(self),
            key: key.clone(),
            flight,
            finished: false,
        })
    }

    /// Drops the flight from the map if it is still this one and nobody
    /// leads or waits.
    fn remove_if_idle(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = lock(&self.map);
        let st = lock(&flight.state);
        if !st.leader && st.waiters == 0 && map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            drop(st);
            map.remove(key);
        }
    }
}

/// The leadership of one key's flight; dropping it gives it up (one waiter
/// takes over).
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: CacheKey,
    flight: Arc<Flight>,
    finished: bool,
}

impl Leader {
    /// Hands `served` to every waiter and ends the flight.
    pub(crate) fn finish(mut self, served: Served) {
        {
            let mut map = lock(&self.flights.map);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
            let mut st = lock(&self.flight.state);
            st.result = Some(served);
            st.leader = false;
        }
        self.flight.notify.notify_waiters();
        // The flight is finished: dropping `self` must not release again.
        self.finished = true;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        {
            let mut st = lock(&self.flight.state);
            st.leader = false;
        }
        self.flights.remove_if_idle(&self.key, &self.flight);
        self.flight.notify.notify_waiters();
    }
}

/// A request waiting for its key's leader.
pub(crate) struct Waiter {
    flights: Arc<Flights>,
    key: CacheKey,
    flight: Arc<Flight>,
    done: bool,
}

impl Waiter {
    /// Waits for the leader's result, or for leadership.
    pub(crate) async fn wait(mut self) -> Waited {
        let flight = Arc::clone(&self.flight);
        loop {
            let notified = flight.notify.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no wake-up is lost.
            notified.as_mut().enable();
            {
                let mut st = lock(&flight.state);
                if let Some(served) = &st.result {
                    let served = served.clone();
                    st.waiters -= 1;
                    self.done = true;
                    return Waited::Served(served);
                }
                if !st.leader {
                    st.leader = true;
                    st.waiters -= 1;
                    self.done = true;
                    return Waited::Lead(Leader {
                        flights: Arc::clone(&self.flights),
                        key: self.key.clone(),
                        flight: Arc::clone(&flight),
                        finished: false,
                    });
                }
            }
            notified.await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Cancelled while waiting.
        if !self.done {
            lock(&self.flight.state).waiters -= 1;
            self.flights.remove_if_idle(&self.key, &self.flight);
        }
    }
}
