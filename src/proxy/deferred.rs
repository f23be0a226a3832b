//! Recording after the write. On a worker thread, a settled request's recording (reading a
//! JSON body for usage, pricing, the limits, the metrics, the ledger row) is queued for the
//! worker's recorder task instead of running inside the body's last poll. The connection task
//! hands hyper the last bytes, hyper writes them, the task yields, and only then does the
//! single-threaded runtime poll the recorder, which it was woken onto without a syscall. So
//! the work stays off the client's latency, with no task or allocation per request (the
//! queue's buffers are reused). Off the workers (another runtime, tests, after shutdown) a
//! request is recorded at once, as before.
//!
//! Nothing is lost: at the end of a worker, [`Recorder`]'s drop records what is still queued
//! before the worker reports that it has stopped (and so before the ledger drains).

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use super::settle::Closing;

struct Queue {
    items: Vec<Closing>,
    waker: Option<Waker>,
}

thread_local! {
    static QUEUE: RefCell<Option<Queue>> = const { RefCell::new(None) };
}

/// Records `c` after the current task yields when this thread has a [`Recorder`], else now.
pub(super) fn run_after_write(c: Closing) {
    let mut item = Some(c);
    let waker = QUEUE.with(|q| {
        // Busy only while the recorder swaps the queue; never expected here.
        let mut q = q.try_borrow_mut().ok()?;
        let q = q.as_mut()?;
        q.items.extend(item.take());
        q.waker.take()
    });
    match item {
        Some(c) => record(c),
        None => {
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// This thread's queue of settled requests; dropping it records what is left and ends the
/// queueing (later settlements record at once).
pub struct Recorder(());

impl Recorder {
    /// Starts queueing on this thread. Spawn [`Recorder::run`] on the thread's runtime.
    pub fn install() -> Recorder {
        QUEUE.with(|q| {
            *q.borrow_mut() = Some(Queue {
                items: Vec::new(),
                waker: None,
            })
        });
        Recorder(())
    }

    /// The recorder task: records what was queued each time it is woken. Never ends while
    /// the queue is installed.
    pub async fn run() {
        let mut batch: Vec<Closing> = Vec::new();
        poll_fn(|cx| {
            let installed = QUEUE.with(|q| {
                let mut q = q.borrow_mut();
                let Some(q) = q.as_mut() else { return false };
                std::mem::swap(&mut q.items, &mut batch);
                if q.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                    q.waker = Some(cx.waker().clone());
                }
                true
            });
            for c in batch.drain(..) {
                record(c);
            }
            if installed {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let left = QUEUE.with(|q| q.borrow_mut().take());
        for c in left.into_iter().flat_map(|q| q.items) {
            record(c);
        }
    }
}

/// Records one request. A panic stays with that request: the recorder task goes on with the
/// rest (a panic in the body's poll used to end only that connection's task).
fn record(c: Closing) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.record())).is_err() {
        tracing::error!("recording a finished request panicked; its usage is not counted");
    }
}
