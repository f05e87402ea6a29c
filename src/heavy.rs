//! Heavy work (queries that visit many tokens, imports, batch validation, clears, backups)
//! runs here, on tokio's blocking threads and at most `--max-heavy-queries` at once, never on
//! the few threads that serve the RPC protocol: while it runs, health checks and small calls
//! still find a protocol thread free (API.md §8). More work waits its turn, until its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Why heavy work did not run to its result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeavyError {
    /// No slot freed up before the caller's deadline.
    #[error("no heavy-work slot (--max-heavy-queries {slots}) freed up within the deadline")]
    Deadline {
        /// How many run at once.
        slots: usize,
    },
    /// The work panicked.
    #[error("heavy work failed: {0}")]
    Failed(String),
}

/// The heavy-work slots.
#[derive(Clone, Debug)]
pub struct HeavyWork {
    slots: Arc<Semaphore>,
    size: usize,
}

impl HeavyWork {
    /// At most `slots` (≥ 1) pieces of heavy work at once.
    pub fn new(slots: usize) -> HeavyWork {
        let size = slots.max(1);
        HeavyWork {
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// How many run now.
    pub fn running(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// Runs `work` on a blocking thread once a slot is free, waiting for one at most until
    /// `deadline`. The slot is held until `work` ends, also when the caller stops waiting
    /// (a cancelled call cannot stop work already started, so it must still count).
    pub async fn run<R: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HeavyError> {
        let acquire = Arc::clone(&self.slots).acquire_owned();
        let waiting = Gauge::add("neurograph_heavy_work_waiting");
        let slot = match deadline {
            Some(at) => tokio::time::timeout_at(at.into(), acquire)
                .await
                .map_err(|_| HeavyError::Deadline { slots: self.size })?,
            None => acquire.await,
        }
        .expect("the semaphore is never closed");
        drop(waiting);
        let running = Gauge::add("neurograph_heavy_work_running");
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _running = running;
            work()
        })
        .await
        .map_err(|e| HeavyError::Failed(e.to_string()))
    }

    /// Starts `work` in the background when a slot frees up (e.g. compaction after an import).
    pub fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        let heavy = self.clone();
        tokio::spawn(async move {
            let _ = heavy.run(None, work).await;
        });
    }
}

/// One unit of a gauge, given back when dropped (also when a waiting call is cancelled).
struct Gauge(&'static str);

impl Gauge {
    /// Adds one to the gauge `name`.
    fn add(name: &'static str) -> Gauge {
        metrics::gauge!(name).increment(1.0);
        Gauge(name)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// A deadline `timeout` from now, when there is one.
pub fn deadline_in(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_slot_until_the_deadline() {
        let heavy = HeavyWork::new(1);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let busy = heavy.clone();
        let running = tokio::spawn(async move {
            busy.run(None, move || {
                let _ = hold.recv();
            })
            .await
        });
        while heavy.running() == 0 {
            tokio::task::yield_now().await;
        }
        let late = heavy
            .run(deadline_in(Some(Duration::from_millis(20))), || 1)
            .await;
        assert_eq!(late, Err(HeavyError::Deadline { slots: 1 }));
        release.send(()).expect("the work waits");
        running.await.expect("joined").expect("ran");
        assert_eq!(heavy.run(None, || 2).await, Ok(2));
    }
}
