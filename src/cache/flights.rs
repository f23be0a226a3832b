//! Collapsing of concurrent identical misses: the first request for a key leads (goes
//! upstream), later ones wait on its flight, which ends when the leader stored its answer
//! or gave up. The map's lock is held for one insert or remove, never across an await.

use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::key::Key;

/// Flights in progress.
#[derive(Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<Key, watch::Receiver<()>>>>,
}

/// What a request does about a key.
pub enum Join {
    /// Go upstream; hold the flight until the answer is stored.
    Leader(Flight),
    /// Wait for the leader (`changed()` returns when its flight ends).
    Wait(watch::Receiver<()>),
}

/// A leader's flight; dropping it wakes the waiters.
pub struct Flight {
    map: Arc<Mutex<HashMap<Key, watch::Receiver<()>>>>,
    key: Key,
    tx: watch::Sender<()>,
}

impl Flights {
    /// Leads `key`'s flight, or joins the one in progress.
    pub fn join(&self, key: Key) -> Join {
        let mut map = self.map.lock();
        if let Some(rx) = map.get(&key) {
            if rx.has_changed().is_ok() {
                let mut rx = rx.clone();
                rx.mark_unchanged();
                return Join::Wait(rx);
            }
        }
        let (tx, rx) = watch::channel(());
        map.insert(key, rx);
        Join::Leader(Flight {
            map: self.map.clone(),
            key,
            tx,
        })
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
        // The sender drops after this: every waiter's `changed()` returns.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_leader_ends() {
        let f = Flights::default();
        let Join::Leader(lead) = f.join([1; 32]) else {
            panic!("first is the leader")
        };
        let Join::Wait(mut rx) = f.join([1; 32]) else {
            panic!("second waits")
        };
        assert!(
            matches!(f.join([2; 32]), Join::Leader(_)),
            "another key leads its own"
        );
        let waiter = tokio::spawn(async move { rx.changed().await.is_err() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(lead);
        assert!(waiter.await.expect("joins"), "woken by the flight's end");
        assert!(
            matches!(f.join([1; 32]), Join::Leader(_)),
            "a new flight after the end"
        );
    }
}
