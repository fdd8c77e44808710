//! Bounds on the public listener that hyper does not keep by itself: a cap on open
//! connections (making room by closing the oldest idle one) and a back-off when `accept()`
//! fails, with a log line that cannot flood the disk.
//!
//! Invariant: a connection is "idle" when no request of it is being answered; only idle
//! connections are ever evicted, so an eviction never cuts a request in progress. Slow-loris
//! connections that never complete a request head are always idle, so under such an attack
//! they make room for the providers' real deliveries.

use std::{
    collections::BTreeMap,
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

/// The open connections, oldest first.
#[derive(Clone)]
pub(crate) struct ConnectionTracker {
    inner: Arc<Mutex<Registry>>,
    max: usize,
}

struct Registry {
    next_id: u64,
    open: BTreeMap<u64, Entry>,
}

struct Entry {
    in_flight: Arc<AtomicUsize>,
    evict: oneshot::Sender<()>,
}

/// One admitted connection; dropping it frees its place.
pub(crate) struct ConnectionSlot {
    id: u64,
    in_flight: Arc<AtomicUsize>,
    /// Requests ever started on this connection.
    started: Arc<AtomicUsize>,
    evicted: Option<oneshot::Receiver<()>>,
    registry: Arc<Mutex<Registry>>,
}

/// Counts a request of a connection as in flight while it lives.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl ConnectionTracker {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry {
                next_id: 0,
                open: BTreeMap::new(),
            })),
            max: max.max(1),
        }
    }

    /// Admits a new connection, closing the oldest idle one when the cap is reached; `None`
    /// when every open connection is busy.
    pub(crate) fn admit(&self) -> Option<ConnectionSlot> {
        let mut registry = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if registry.open.len() >= self.max && !registry.evict_oldest_idle() {
            return None;
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (evict, evicted) = oneshot::channel();
        registry.open.insert(
            id,
            Entry {
                in_flight: in_flight.clone(),
                evict,
            },
        );
        Some(ConnectionSlot {
            id,
            in_flight,
            started: Arc::new(AtomicUsize::new(0)),
            evicted: Some(evicted),
            registry: self.inner.clone(),
        })
    }

    /// Closes the oldest idle connection (to free a file descriptor); false when none is idle.
    pub(crate) fn evict_oldest_idle(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .evict_oldest_idle()
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .len()
    }
}

impl Registry {
    fn evict_oldest_idle(&mut self) -> bool {
        let oldest_idle = self
            .open
            .iter()
            .find(|(_, entry)| entry.in_flight.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match oldest_idle.and_then(|id| self.open.remove(&id)) {
            Some(entry) => {
                let _ = entry.evict.send(());
                true
            }
            None => false,
        }
    }
}

impl ConnectionSlot {
    /// Resolves when the tracker closes this connection to make room.
    pub(crate) async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            Some(receiver) => {
                if receiver.await.is_err() {
                    // The tracker went away (server stopped): never evicted from now on.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// Marks a request in flight until the guard is dropped.
    pub(crate) fn request_guard(&self) -> impl Fn() -> InFlight + Clone + Send + Sync + 'static {
        let counter = self.in_flight.clone();
        let started = self.started.clone();
        move || {
            started.fetch_add(1, Ordering::AcqRel);
            counter.fetch_add(1, Ordering::AcqRel);
            InFlight(counter.clone())
        }
    }

    /// Whether a whole request head has arrived yet on this connection.
    pub(crate) fn has_started_a_request(&self) -> bool {
        self.started.load(Ordering::Acquire) > 0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .remove(&self.id);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Errors of `accept()` that concern one connection (the next accept may well succeed), as
/// opposed to the process being out of descriptors or memory.
pub(crate) fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Back-off after a failed `accept()`: 100 ms doubling to 1 s, reset by a success.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    next: Option<Duration>,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    pub(crate) fn failed(&mut self) -> Duration {
        let delay = self.next.unwrap_or(BACKOFF_FIRST);
        self.next = Some((delay * 2).min(BACKOFF_MAX));
        delay
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = None;
    }
}

/// A warning logged at most once per interval, with the count of occurrences in between.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(occurrences since the last line)` when a line should be written now.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                let count = self.suppressed + 1;
                self.suppressed = 0;
                Some(count)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let tracker = ConnectionTracker::new(2);
        let mut first = tracker.admit().unwrap();
        let second = tracker.admit().unwrap();
        let busy = second.request_guard()();
        let _third = tracker.admit().expect("the idle first one is evicted");
        assert_eq!(tracker.open(), 2);
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        let evicted = std::pin::pin!(first.evicted());
        assert!(evicted.poll(&mut cx).is_ready());
        // Second is busy, third idle: the third goes next.
        let _fourth = tracker.admit().unwrap();
        drop(busy);
        assert_eq!(tracker.open(), 2);
    }

    #[test]
    fn all_busy_refuses_and_dropping_frees() {
        let tracker = ConnectionTracker::new(1);
        let only = tracker.admit().unwrap();
        let guard = only.request_guard()();
        assert!(tracker.admit().is_none());
        drop(guard);
        drop(only);
        assert_eq!(tracker.open(), 0);
        assert!(tracker.admit().is_some());
    }

    #[test]
    fn backoff_doubles_to_one_second_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), BACKOFF_FIRST);
    }

    #[test]
    fn log_lines_are_rate_limited_with_counts() {
        let mut log = RateLimitedLog::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(log.hit(start), Some(1));
        for i in 1..=1000 {
            assert_eq!(log.hit(start + Duration::from_micros(i)), None);
        }
        assert_eq!(log.hit(start + Duration::from_secs(1)), Some(1001));
    }
}
