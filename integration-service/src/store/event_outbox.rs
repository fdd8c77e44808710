//! The event sink's outbox, `event_outbox`: a narrow row per event waiting to be forwarded
//! (written with the event by the ingest writers, so turning the sink on later forwards what
//! was stored before too), read oldest first by
//! the one forwarder holding the database's lease (`event_sink_leases`), deleted after
//! JetStream's acknowledgement; the oldest one's age is the lag gauge.
//!
//! Invariants: one replica at a time holds the lease of a stream (taking it is one atomic
//! upsert that succeeds only when the lease is free, ran out, or already the caller's), so
//! reading a batch needs no write and an event is written once, when it is marked forwarded;
//! a holder that dies simply stops renewing and another takes over when the lease runs out.
//! Forwarding an event never writes its wide `webhook_events` row. A batch is read in two
//! steps: the events without their texts (`unforwarded`, which like the lag gauge reads the
//! index `event_outbox_received_idx`), then by primary key the texts the forwarder does not
//! have already (`texts`). Retention purges an event's outbox row with it when the sink is off
//! (and keeps waiting events when it is on); an outbox row whose event is gone anyway is
//! dropped with the next batch's marks. Timestamps are
//! bound from Rust (uniform text on SQLite).

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

use super::{entities::webhook_event::EventStatus, webhook_events::Sql};

/// An event to forward, with the integration facts its subject is made of. `payload` and
/// `headers` stay the stored JSON texts (filled in by the forwarder: `unforwarded` leaves them
/// empty): the forwarder copies them into the message as they are, never parsing a payload
/// again.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub organization_id: i64,
    pub provider: String,
    pub event_type: String,
    pub delivery_id: Option<String>,
    pub status: EventStatus,
    pub retry_count: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// The payload's JSON text (validated at ingest; PostgreSQL prints its jsonb).
    pub payload_json: String,
    /// The headers' JSON text, `None` when stored without.
    pub headers_json: Option<String>,
}

/// A row of `unforwarded`.
fn outbox_row(row: &sea_orm::QueryResult) -> Result<OutboxEvent, DbErr> {
    let status: String = row.try_get("", "status")?;
    let status = EventStatus::parse(&status)
        .ok_or_else(|| DbErr::Custom(format!("unknown event status {status:?}")))?;
    Ok(OutboxEvent {
        id: row.try_get("", "id")?,
        integration_id: row.try_get("", "integration_id")?,
        organization_id: row.try_get("", "organization_id")?,
        provider: row.try_get("", "provider")?,
        event_type: row.try_get("", "event_type")?,
        delivery_id: row.try_get("", "delivery_id")?,
        status,
        retry_count: row.try_get("", "retry_count")?,
        last_error: row.try_get("", "last_error")?,
        next_attempt_at: row.try_get("", "next_attempt_at")?,
        lease_expires_at: row.try_get("", "lease_expires_at")?,
        processed_at: row.try_get("", "processed_at")?,
        received_at: row.try_get("", "received_at")?,
        payload_json: String::new(),
        headers_json: None,
    })
}

/// Takes or renews, for `owner` until `until`, the lease of `stream`: `true` when it is now
/// `owner`'s (it was free, ran out before `now`, or was `owner`'s already), `false` when
/// another holder's lease still runs.
pub async fn take_lease(
    db: &impl ConnectionTrait,
    stream: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("INSERT INTO event_sink_leases (stream, owner, lease_until) VALUES (")
        .bind(stream.to_string())
        .push(", ")
        .bind(owner.to_string())
        .push(", ")
        .bind(until)
        .push(
            ") ON CONFLICT (stream) DO UPDATE SET owner = excluded.owner, \
             lease_until = excluded.lease_until \
             WHERE event_sink_leases.owner = excluded.owner OR event_sink_leases.lease_until <= ",
        )
        .bind(now);
    Ok(db.execute_raw(sql.statement()).await?.rows_affected() == 1)
}

/// Gives up `owner`'s lease of `stream` (at shutdown), so another replica need not wait for it
/// to run out.
pub async fn release_lease(
    db: &impl ConnectionTrait,
    stream: &str,
    owner: &str,
) -> Result<u64, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM event_sink_leases WHERE stream = ")
        .bind(stream.to_string())
        .push(" AND owner = ")
        .bind(owner.to_string());
    Ok(db.execute_raw(sql.statement()).await?.rows_affected())
}

/// Up to `limit` of the oldest unforwarded events, oldest first, with their integration's
/// organization and provider, but without their texts (`payload_json` empty, `headers_json`
/// `None`): the caller has some already, and `texts` reads the others. Reads only: the caller
/// holds the lease.
pub async fn unforwarded(db: &impl ConnectionTrait, limit: u64) -> Result<Unforwarded, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT o.event_id AS waiting_id, e.id, e.integration_id, i.organization_id, \
         i.provider, e.event_type, e.delivery_id, e.status, e.retry_count, e.last_error, \
         e.next_attempt_at, e.lease_expires_at, e.processed_at, e.received_at \
         FROM event_outbox o LEFT JOIN webhook_events e ON e.id = o.event_id \
         LEFT JOIN integrations i ON i.id = e.integration_id \
         ORDER BY o.received_at, o.event_id LIMIT ",
    )
    .bind(limit.min(i64::MAX as u64) as i64);
    let mut batch = Unforwarded::default();
    for row in db.query_all_raw(sql.statement()).await? {
        match row.try_get::<Option<Uuid>>("", "id")? {
            Some(_) => batch.events.push(outbox_row(&row)?),
            None => batch.gone.push(row.try_get("", "waiting_id")?),
        }
    }
    Ok(batch)
}

/// A batch of the outbox: the events to forward, oldest first, and the outbox rows whose event
/// no longer exists (to drop with the marks).
#[derive(Debug, Default)]
pub struct Unforwarded {
    pub events: Vec<OutboxEvent>,
    pub gone: Vec<Uuid>,
}

/// The payload and headers JSON texts of those of `ids` that exist (`headers` `None` when
/// stored without).
pub async fn texts(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (String, Option<String>)>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT id, CAST(payload AS TEXT) AS payload_json, CAST(headers AS TEXT) AS headers_json \
         FROM webhook_events WHERE 1 = 1",
    );
    push_ids(&mut sql, ids);
    db.query_all_raw(sql.statement())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("", "id")?,
                (
                    row.try_get("", "payload_json")?,
                    row.try_get("", "headers_json")?,
                ),
            ))
        })
        .collect()
}

/// Marks `ids` forwarded (JetStream acknowledged them): their outbox rows go. An event marked
/// already is simply not there any more: a holder whose lease ran out may have published it
/// too, and JetStream kept one.
pub async fn mark_forwarded(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<u64, DbErr> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM event_outbox WHERE 1 = 1");
    push_ids_of(&mut sql, "event_id", ids);
    Ok(db.execute_raw(sql.statement()).await?.rows_affected())
}

fn push_ids(sql: &mut Sql, ids: &[Uuid]) {
    push_ids_of(sql, "id", ids)
}

fn push_ids_of(sql: &mut Sql, column: &str, ids: &[Uuid]) {
    sql.push(" AND ").push(column).push(" IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(*id);
    }
    sql.push(")");
}

/// When the oldest event not yet forwarded was received; `None` when every event was.
pub async fn oldest_unforwarded(db: &impl ConnectionTrait) -> Result<Option<DateTime<Utc>>, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    // ORDER BY + LIMIT 1: both databases read the index's first entry.
    sql.push("SELECT received_at FROM event_outbox ORDER BY received_at LIMIT 1");
    match db.query_one_raw(sql.statement()).await? {
        Some(row) => Ok(Some(row.try_get::<DateTime<Utc>>("", "received_at")?)),
        None => Ok(None),
    }
}

/// Whether event `id` waits in the outbox (not yet acknowledged by JetStream).
pub async fn is_waiting(db: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT event_id FROM event_outbox WHERE event_id = ")
        .bind(id);
    Ok(db.query_one_raw(sql.statement()).await?.is_some())
}
