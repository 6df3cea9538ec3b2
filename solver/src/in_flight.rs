//! Vertices being solved right now, by cache key, shared by the builds of one engine:
//! BuildKit's shared solver. Two builds that reach the same key run it once — the second
//! waits for the first and then finds its result in the cache index.
//!
//! A waiter that finds no result after the wait (the first build failed or was
//! cancelled) runs the vertex itself, so one client's disconnect never fails another's
//! build; it only costs the second the time already spent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::cache_key::CacheKey;

/// The keys being solved, each with a lock its solver holds until the result is recorded.
#[derive(Debug, Default)]
pub struct InFlight {
    running: Mutex<HashMap<CacheKey, Arc<AsyncMutex<()>>>>,
}

/// The right to solve one key; dropping it lets the next waiter look the result up.
#[derive(Debug)]
pub(crate) struct Slot {
    key: CacheKey,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
    owner: Arc<InFlight>,
    /// Whether another build held the key while this one waited.
    pub(crate) waited: bool,
}

impl InFlight {
    /// An empty set, to share among the builds of one engine.
    pub fn new() -> Arc<InFlight> {
        Arc::new(InFlight::default())
    }

    /// Waits until no other build solves `key`, and takes it.
    pub(crate) async fn enter(self: &Arc<Self>, key: &CacheKey) -> Slot {
        let lock = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(running.entry(*key).or_default())
        };
        let (guard, waited) = match Arc::clone(&lock).try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => (Arc::clone(&lock).lock_owned().await, true),
        };
        Slot {
            key: *key,
            lock,
            guard: Some(guard),
            owner: Arc::clone(self),
            waited,
        }
    }

    /// How many keys are being solved or waited for (for tests).
    pub fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is being solved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.take();
        let mut running = self.owner.running.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else waits, so the entry goes.
        if Arc::strong_count(&self.lock) == 2 {
            running.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        let mut builder = crate::cache_key::KeyBuilder::new("test");
        builder.part("n", &[n]);
        builder.finish().0
    }

    #[tokio::test]
    async fn a_second_solver_of_a_key_waits_for_the_first() {
        let in_flight = InFlight::new();
        let first = in_flight.enter(&key(1)).await;
        assert!(!first.waited);
        let other = in_flight.enter(&key(2)).await;
        assert!(!other.waited, "another key does not wait");
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move { in_flight.enter(&key(1)).await.waited })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "the second waits while the first runs"
        );
        drop(first);
        assert!(waiter.await.expect("join"), "it waited");
        drop(other);
        assert!(in_flight.is_empty(), "entries go with their last slot");
    }
}
