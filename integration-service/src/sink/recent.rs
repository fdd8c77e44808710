//! The events this replica's writers just committed, kept for the forwarder so it need not
//! read their payloads back from the database (on PostgreSQL, printing a `jsonb` payload as
//! text is most of what a forwarded event costs the database).
//!
//! The ingest writers hand over every event they committed as new (`CommitListener`), but
//! only while this replica's forwarder holds the lease: a replica standing by keeps nothing.
//! The forwarder takes an event's texts out when it publishes it; an event it does not find
//! here (stored by another replica, before a restart, or pushed out) it reads from the
//! database as before.
//!
//! Invariants: at most `MAX_BYTES` of texts are kept (the oldest go first); an entry is the
//! committed row's own payload and headers texts, so a message built from it says what a
//! message read back would (on PostgreSQL the read-back text is `jsonb`'s rendering of the
//! same JSON); nothing here decides what is forwarded — the database's `event_outbox` does.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use uuid::Uuid;

use crate::{store::webhook_events::NewEvent, webhooks::ingest::CommitListener};

/// The most payload and header bytes kept at once.
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// An event's stored JSON texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    pub payload: String,
    pub headers: String,
}

#[derive(Default)]
struct Kept {
    texts: HashMap<Uuid, Texts>,
    /// Ids in the order they were committed (some may have been taken already).
    order: VecDeque<Uuid>,
    bytes: usize,
}

/// The recently committed events' texts (see the module's documentation).
#[derive(Default)]
pub struct RecentEvents {
    /// Whether this replica's forwarder holds the lease (set by the forwarder).
    forwarding: AtomicBool,
    kept: Mutex<Kept>,
}

impl RecentEvents {
    /// The forwarder says whether it holds the lease; losing it forgets everything kept.
    pub fn set_forwarding(&self, forwarding: bool) {
        let was = self.forwarding.swap(forwarding, Ordering::AcqRel);
        if was && !forwarding {
            if let Ok(mut kept) = self.kept.lock() {
                *kept = Kept::default();
            }
        }
    }

    /// Takes out the texts of `id`, when kept.
    pub fn take(&self, id: Uuid) -> Option<Texts> {
        let mut kept = self.kept.lock().ok()?;
        let texts = kept.texts.remove(&id)?;
        kept.bytes -= texts.payload.len() + texts.headers.len();
        Some(texts)
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.kept.lock().map_or(0, |kept| kept.texts.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn keep(&self, events: Vec<NewEvent>) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        for event in events {
            let size = event.payload.len() + event.headers.len();
            if size > MAX_BYTES {
                continue;
            }
            while kept.bytes + size > MAX_BYTES {
                let Some(oldest) = kept.order.pop_front() else {
                    break;
                };
                if let Some(texts) = kept.texts.remove(&oldest) {
                    kept.bytes -= texts.payload.len() + texts.headers.len();
                }
            }
            kept.bytes += size;
            kept.order.push_back(event.id);
            kept.texts.insert(
                event.id,
                Texts {
                    payload: event.payload,
                    headers: event.headers,
                },
            );
        }
        // Ids already taken stay in `order` until they reach its front: drop them there so
        // the queue does not grow with them.
        while let Some(front) = kept.order.front() {
            if kept.texts.contains_key(front) {
                break;
            }
            kept.order.pop_front();
        }
        if kept.order.len() > 4 * kept.texts.len() + 1024 {
            let Kept { texts, order, .. } = &mut *kept;
            order.retain(|id| texts.contains_key(id));
        }
    }
}

impl CommitListener for RecentEvents {
    fn wants_commits(&self) -> bool {
        self.forwarding.load(Ordering::Acquire)
    }

    fn committed(&self, events: Vec<NewEvent>) {
        if self.wants_commits() {
            self.keep(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event(payload_len: usize) -> NewEvent {
        NewEvent {
            id: Uuid::new_v4(),
            integration_id: Uuid::new_v4(),
            event_type: "push".into(),
            delivery_id: None,
            payload: "x".repeat(payload_len),
            headers: "{}".into(),
            processed: false,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn keeps_only_while_forwarding_and_forgets_when_the_lease_is_lost() {
        let recent = RecentEvents::default();
        let first = event(10);
        let id = first.id;
        recent.committed(vec![first]);
        assert!(recent.is_empty(), "a replica standing by keeps nothing");
        recent.set_forwarding(true);
        let second = event(10);
        let id2 = second.id;
        recent.committed(vec![second]);
        assert_eq!(recent.take(id), None);
        assert_eq!(recent.take(id2).map(|t| t.payload.len()), Some(10));
        assert_eq!(recent.take(id2), None, "taken once");
        recent.committed(vec![event(10)]);
        recent.set_forwarding(false);
        assert!(recent.is_empty());
    }

    #[test]
    fn the_oldest_go_first_beyond_the_byte_budget() {
        let recent = RecentEvents::default();
        recent.set_forwarding(true);
        let big = MAX_BYTES / 4;
        let events: Vec<NewEvent> = (0..6).map(|_| event(big)).collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        recent.committed(events);
        assert_eq!(
            recent.len(),
            3,
            "three of a quarter each, with the headers, fit"
        );
        assert!(recent.take(ids[0]).is_none() && recent.take(ids[2]).is_none());
        assert!(recent.take(ids[5]).is_some());
        recent.committed(vec![event(MAX_BYTES + 1)]);
        assert_eq!(
            recent.len(),
            2,
            "an event over the whole budget is not kept"
        );
    }
}
