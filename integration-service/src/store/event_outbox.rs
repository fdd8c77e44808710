//! The event sink's outbox on `webhook_events`: unforwarded events (`forwarded_at IS NULL`)
//! claimed in batches by one forwarder at a time, marked forwarded after JetStream's
//! acknowledgement, and the age of the oldest one for the lag gauge.
//!
//! Invariants: a claim is one atomic UPDATE of the oldest unforwarded events whose claim is
//! free or ran out, so two replicas never hold one event at once. On PostgreSQL the rows are
//! locked `FOR UPDATE` without `SKIP LOCKED`: a row the dispatcher or another forwarder is
//! updating at that instant is waited for (a few milliseconds) rather than skipped, because a
//! skipped row would be forwarded after younger ones; once the other claim commits, its rows
//! no longer match and the claim takes the next ones. Every query here reads the partial index
//! `webhook_events_unforwarded_idx`. Timestamps are bound from Rust (uniform text on SQLite).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
};
use uuid::Uuid;

use super::{
    entities::{integration, webhook_event::EventStatus},
    webhook_events::Sql,
};

/// An event to forward, with the integration facts its subject is made of. `payload` and
/// `headers` stay the stored JSON texts: the forwarder copies them into the message as they
/// are, never parsing a payload again.
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

/// A row of the claim's RETURNING; its integration's facts are filled in afterwards.
fn claimed_row(row: &sea_orm::QueryResult) -> Result<OutboxEvent, DbErr> {
    let status: String = row.try_get("", "status")?;
    let status = EventStatus::parse(&status)
        .ok_or_else(|| DbErr::Custom(format!("unknown event status {status:?}")))?;
    Ok(OutboxEvent {
        id: row.try_get("", "id")?,
        integration_id: row.try_get("", "integration_id")?,
        organization_id: 0,
        provider: String::new(),
        event_type: row.try_get("", "event_type")?,
        delivery_id: row.try_get("", "delivery_id")?,
        status,
        retry_count: row.try_get("", "retry_count")?,
        last_error: row.try_get("", "last_error")?,
        next_attempt_at: row.try_get("", "next_attempt_at")?,
        lease_expires_at: row.try_get("", "lease_expires_at")?,
        processed_at: row.try_get("", "processed_at")?,
        received_at: row.try_get("", "received_at")?,
        payload_json: row.try_get("", "payload_json")?,
        headers_json: row.try_get("", "headers_json")?,
    })
}

/// Claims for `owner`, until `lease_until`, up to `limit` of the oldest unforwarded events
/// nobody holds (never claimed, released, or whose claim ran out before `now`). Answers them
/// oldest first; an event whose integration is gone is released, not answered.
pub async fn claim_unforwarded(
    db: &DatabaseConnection,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<OutboxEvent>, DbErr> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("UPDATE webhook_events SET forward_owner = ")
        .bind(owner.to_string())
        .push(", forward_lease_until = ")
        .bind(lease_until)
        .push(
            " WHERE id IN (SELECT id FROM webhook_events WHERE forwarded_at IS NULL \
             AND (forward_lease_until IS NULL OR forward_lease_until <= ",
        )
        .bind(now)
        .push(") ORDER BY received_at, id LIMIT ")
        .bind(limit.min(i64::MAX as u64) as i64);
    if backend == DbBackend::Postgres {
        sql.push(" FOR UPDATE");
    }
    sql.push(
        ") RETURNING id, integration_id, event_type, delivery_id, status, retry_count, \
         last_error, next_attempt_at, lease_expires_at, processed_at, received_at, \
         CAST(payload AS TEXT) AS payload_json, CAST(headers AS TEXT) AS headers_json",
    );
    let rows = db.query_all_raw(sql.statement()).await?;
    let mut events = rows
        .iter()
        .map(claimed_row)
        .collect::<Result<Vec<_>, _>>()?;
    events.sort_by_key(|e| (e.received_at, e.id));

    let mut integration_ids: Vec<Uuid> = events.iter().map(|e| e.integration_id).collect();
    integration_ids.sort_unstable();
    integration_ids.dedup();
    let integrations: HashMap<Uuid, (i64, String)> = integration::Entity::find()
        .filter(integration::Column::Id.is_in(integration_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|i| (i.id, (i.organization_id, i.provider)))
        .collect();
    let mut claimed = Vec::with_capacity(events.len());
    let mut orphans = Vec::new();
    for mut event in events {
        match integrations.get(&event.integration_id) {
            Some((organization_id, provider)) => {
                event.organization_id = *organization_id;
                event.provider.clone_from(provider);
                claimed.push(event);
            }
            None => orphans.push(event.id),
        }
    }
    release(db, owner, &orphans).await?;
    Ok(claimed)
}

/// Marks `ids` forwarded at `now` (JetStream acknowledged them), whoever holds their claim:
/// a replica whose claim ran out may have published them too, and JetStream kept one.
pub async fn mark_forwarded(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE webhook_events SET forwarded_at = ")
        .bind(now)
        .push(", forward_owner = NULL, forward_lease_until = NULL WHERE forwarded_at IS NULL");
    push_ids(&mut sql, ids);
    Ok(db.execute_raw(sql.statement()).await?.rows_affected())
}

/// Gives back `owner`'s claims of `ids` that were not forwarded: claimable again at once.
pub async fn release(db: &impl ConnectionTrait, owner: &str, ids: &[Uuid]) -> Result<u64, DbErr> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "UPDATE webhook_events SET forward_owner = NULL, forward_lease_until = NULL \
         WHERE forwarded_at IS NULL AND forward_owner = ",
    )
    .bind(owner.to_string());
    push_ids(&mut sql, ids);
    Ok(db.execute_raw(sql.statement()).await?.rows_affected())
}

fn push_ids(sql: &mut Sql, ids: &[Uuid]) {
    sql.push(" AND id IN (");
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
    // ORDER BY + LIMIT 1: both databases read the partial index's first entry.
    sql.push(
        "SELECT received_at FROM webhook_events WHERE forwarded_at IS NULL \
         ORDER BY received_at LIMIT 1",
    );
    match db.query_one_raw(sql.statement()).await? {
        Some(row) => Ok(Some(row.try_get::<DateTime<Utc>>("", "received_at")?)),
        None => Ok(None),
    }
}

/// When `id` was forwarded; `None` while it waits (or when there is no such event).
pub async fn forwarded_at(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT forwarded_at FROM webhook_events WHERE id = ")
        .bind(id);
    match db.query_one_raw(sql.statement()).await? {
        Some(row) => row.try_get::<Option<DateTime<Utc>>>("", "forwarded_at"),
        None => Ok(None),
    }
}
