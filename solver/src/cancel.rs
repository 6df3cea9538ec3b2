//! A cancellation signal shared by everything one build runs.
//!
//! The first failing vertex (or Ctrl-C) fires it; running operations watch it and stop
//! their work (a sandbox is killed with SIGKILL), so the build ends without leaks.

use std::sync::Arc;

use tokio::sync::watch;

/// A cloneable handle: any clone may cancel, every clone sees it.
#[derive(Clone, Debug)]
pub struct Cancel {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    /// A signal that has not fired.
    pub fn new() -> Cancel {
        let (sender, _) = watch::channel(false);
        Cancel {
            sender: Arc::new(sender),
        }
    }

    /// Fires the signal; later calls do nothing.
    pub fn cancel(&self) {
        self.sender.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_cancelled(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once the signal fires (at once if it already has).
    pub async fn cancelled(&self) {
        let mut receiver = self.sender.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot see it dropped.
        let _ = receiver.wait_for(|fired| *fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_see_the_signal() {
        let cancel = Cancel::new();
        let clone = cancel.clone();
        let waiter = tokio::spawn(async move { clone.cancelled().await });
        assert!(!cancel.is_cancelled());
        cancel.cancel();
        waiter.await.expect("waiter task");
        assert!(cancel.is_cancelled());
        cancel.cancelled().await;
    }
}
