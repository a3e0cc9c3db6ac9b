//! A shard's task registry: every task a shard runs (connections, sink and upstream I/O,
//! its own services) is spawned here, so a shutdown has one path: begin it, wait until
//! the counted tasks are done or the grace period is over, then let the runtime drop the
//! rest.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct TaskRegistry {
    live: Cell<usize>,
    all_done: Notify,
    stopping: Cell<bool>,
    stop: Notify,
}

/// Decrements the live count when its task ends, however it ends (finished, aborted).
struct Live(Rc<TaskRegistry>);

impl Drop for Live {
    fn drop(&mut self) {
        let n = self.0.live.get() - 1;
        self.0.live.set(n);
        if n == 0 {
            self.0.all_done.notify_waiters();
        }
    }
}

/// A task's future with its live-count guard. Not an `async move { fut.await }` block:
/// that would store the future twice (the captured one and the one being awaited), which
/// for a connection's future is ~2.5 KiB more per player.
struct Counted<F> {
    fut: F,
    _live: Live,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned: nothing moves it out of a pinned `Counted`
        // (no method takes it, and `Counted` has no Drop impl that could).
        unsafe { self.map_unchecked_mut(|c| &mut c.fut) }.poll(cx)
    }
}

impl TaskRegistry {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// A task the shutdown waits for (a connection, a push session, an origin pull).
    pub fn spawn<T: 'static>(
        self: &Rc<Self>,
        fut: impl Future<Output = T> + 'static,
    ) -> JoinHandle<T> {
        self.live.set(self.live.get() + 1);
        tokio_uring::spawn(Counted {
            fut,
            _live: Live(self.clone()),
        })
    }

    /// A task that runs until the shard stops and is not waited for (timers, the inbox).
    pub fn spawn_service(&self, fut: impl Future<Output = ()> + 'static) {
        tokio_uring::spawn(fut);
    }

    /// Tasks the shutdown waits for that are still running.
    pub fn live(&self) -> usize {
        self.live.get()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Starts the shutdown: everything waiting in [`stopped`](Self::stopped) wakes.
    pub fn begin_shutdown(&self) {
        self.stopping.set(true);
        self.stop.notify_waiters();
    }

    /// Resolves once the shutdown has begun.
    pub async fn stopped(&self) {
        while !self.stopping.get() {
            let wait = self.stop.notified();
            if self.stopping.get() {
                return;
            }
            wait.await;
        }
    }

    /// Waits until every counted task is done; false if `deadline` came first.
    pub async fn drained(&self, deadline: Instant) -> bool {
        loop {
            let wait = self.all_done.notified();
            if self.live.get() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), wait)
                .await
                .is_err()
            {
                return self.live.get() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shutdown_waits_for_counted_tasks_only() {
        tokio_uring::start(async {
            let reg = TaskRegistry::new();
            let r = reg.clone();
            reg.spawn(async move {
                r.stopped().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
            reg.spawn_service(std::future::pending());
            assert_eq!(reg.live(), 1);
            assert!(
                !reg.drained(Instant::now() + Duration::from_millis(30))
                    .await
            );
            reg.begin_shutdown();
            assert!(reg.is_stopping());
            assert!(reg.drained(Instant::now() + Duration::from_secs(5)).await);
            assert_eq!(reg.live(), 0);
            // A task that never ends: the deadline wins.
            reg.spawn(std::future::pending::<()>());
            assert!(
                !reg.drained(Instant::now() + Duration::from_millis(20))
                    .await
            );
        });
    }
}
