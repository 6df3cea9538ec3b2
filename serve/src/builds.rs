//! The builds running in this server: counted so shutdown can wait for them, and
//! cancellable all at once when `--shutdown-timeout` runs out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_solver::cancel::Cancel;
use tokio::sync::watch;

/// The running builds.
pub(crate) struct Builds {
    next: AtomicU64,
    active: Mutex<HashMap<u64, Cancel>>,
    count: watch::Sender<usize>,
}

/// Held while a build runs; dropping it takes the build off the list.
pub(crate) struct Running<'a> {
    builds: &'a Builds,
    id: u64,
}

impl Builds {
    pub(crate) fn new() -> Builds {
        Builds {
            next: AtomicU64::new(1),
            active: Mutex::new(HashMap::new()),
            count: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cancel>> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a build that `cancel` stops.
    pub(crate) fn start(&self, cancel: Cancel) -> Running<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut active = self.lock();
        active.insert(id, cancel);
        self.count.send_replace(active.len());
        Running { builds: self, id }
    }

    /// How many builds run now.
    pub(crate) fn running(&self) -> usize {
        self.lock().len()
    }

    /// Cancels every running build.
    pub(crate) fn cancel_all(&self) {
        for cancel in self.lock().values() {
            cancel.cancel();
        }
    }

    /// Resolves when no build runs.
    pub(crate) async fn idle(&self) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut active = self.builds.lock();
        active.remove(&self.id);
        self.builds.count.send_replace(active.len());
    }
}
