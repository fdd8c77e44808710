//! Queries on `webhook_events`: group-committed ingest with duplicate detection, the worker's
//! claims with leases, acknowledgements, listing and replay.
//!
//! Invariants: a row is written once per (integration, delivery id) — the unique key decides,
//! never a read-then-write; a claim is one atomic UPDATE (PostgreSQL skips rows another
//! process has locked, SQLite has a single writer), so one event is leased to one consumer at
//! a time. Timestamps are always bound from Rust, so SQLite compares them as uniform text.
//!
//! One module per consumer: `insert.rs` the ingest writers' group-committed inserts,
//! `claims.rs` the dispatcher's claims and the consumers' acknowledgements, `queries.rs` the
//! reads of the REST routes and the console, replay, retention and the backlog gauges. This
//! file holds what they share: the stored status texts and `Sql`, a statement with the
//! backend's placeholders.

mod claims;
mod insert;
mod queries;

pub use claims::*;
pub use insert::*;
pub use queries::*;

use sea_orm::{DbBackend, Statement, Value};

use super::entities::webhook_event::EventStatus;

// The stored texts, for the statements written as SQL.
pub const PENDING: &str = EventStatus::Pending.as_str();
pub const DELIVERED: &str = EventStatus::Delivered.as_str();
pub const PROCESSED: &str = EventStatus::Processed.as_str();
pub const DEAD: &str = EventStatus::Dead.as_str();
/// Every status, in the order of an event's life.
pub const ALL_STATUSES: [EventStatus; 4] = [
    EventStatus::Pending,
    EventStatus::Delivered,
    EventStatus::Processed,
    EventStatus::Dead,
];

/// SQL text with the backend's placeholders and the bound values (also for
/// `store::event_outbox`).
pub(super) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(super) fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub(super) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        if self.backend == DbBackend::Postgres {
            let n = self.values.len();
            self.text.push_str(&format!("${n}"));
        } else {
            self.text.push('?');
        }
        self
    }

    /// Appends a placeholder for a JSON text (jsonb on PostgreSQL, text on SQLite).
    fn bind_json(&mut self, json: &str) -> &mut Self {
        if self.backend == DbBackend::Postgres {
            self.push("CAST(").bind(json.to_string()).push(" AS jsonb)")
        } else {
            self.bind(json.to_string())
        }
    }

    pub(super) fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}
