//! The dispatcher's claims and the consumers' acknowledgements: a claim is one atomic UPDATE
//! (PostgreSQL skips rows another process has locked, SQLite has a single writer), so one
//! event is leased to one consumer at a time; an acknowledgement or an error is accepted only
//! from the lease's holder.

use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, TransactionTrait,
};
use uuid::Uuid;

use super::{
    super::{
        entities::{
            integration,
            webhook_event::{self, EventStatus, Model},
        },
        set_null,
    },
    find, EventFilter, Sql, DELIVERED, PENDING,
};

/// A claimed event with the integration facts consumers filter and route on.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub event: Model,
    pub organization_id: i64,
    pub provider: String,
}

/// Leases up to `limit` due events matching `filter` to `owner` until `lease_until`: pending
/// events whose next attempt is due, and delivered events whose lease ran out, with fewer
/// than `max_attempts` attempts so far. Each claim counts one attempt (`retry_count + 1`).
pub async fn claim_due_events(
    db: &DatabaseConnection,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
    max_attempts: i32,
    filter: &EventFilter,
) -> Result<Vec<ClaimedEvent>, DbErr> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("UPDATE webhook_events SET status = ")
        .bind(DELIVERED)
        .push(", lease_owner = ")
        .bind(owner.to_string())
        .push(", lease_expires_at = ")
        .bind(lease_until)
        .push(", retry_count = retry_count + 1 WHERE id IN (SELECT e.id FROM webhook_events e JOIN integrations i ON i.id = e.integration_id WHERE ((e.status = ")
        .bind(PENDING)
        .push(" AND e.next_attempt_at <= ")
        .bind(now)
        .push(") OR (e.status = ")
        .bind(DELIVERED)
        .push(" AND e.lease_expires_at <= ")
        .bind(now)
        .push(")) AND e.retry_count < ")
        .bind(max_attempts);
    if let Some(organization_id) = filter.organization_id {
        sql.push(" AND i.organization_id = ").bind(organization_id);
    }
    if let Some(provider) = &filter.provider {
        sql.push(" AND i.provider = ").bind(provider.clone());
    }
    if !filter.event_types.is_empty() {
        sql.push(" AND e.event_type IN (");
        for (i, event_type) in filter.event_types.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(event_type.clone());
        }
        sql.push(")");
    }
    sql.push(" ORDER BY e.received_at LIMIT ")
        .bind(limit.min(i64::MAX as u64) as i64);
    if backend == DbBackend::Postgres {
        // Rows another process is claiming are skipped, not waited for: disjoint claims.
        sql.push(" FOR UPDATE OF e SKIP LOCKED");
    }
    sql.push(
        ") RETURNING id, integration_id, event_type, delivery_id, payload, headers, processed, \
         status, retry_count, last_error, next_attempt_at, lease_expires_at, lease_owner, \
         processed_at, received_at",
    );
    let rows = db.query_all_raw(sql.statement()).await?;
    let mut events = rows
        .iter()
        .map(|row| Model::from_query_result(row, ""))
        .collect::<Result<Vec<_>, _>>()?;
    events.sort_by_key(|e| e.received_at);
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // The integrations of the whole batch in one query, not one per event.
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.integration_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let integrations: std::collections::HashMap<Uuid, (i64, String)> = integration::Entity::find()
        .filter(integration::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|i| (i.id, (i.organization_id, i.provider)))
        .collect();
    Ok(events
        .into_iter()
        .filter_map(|event| {
            let (organization_id, provider) = integrations.get(&event.integration_id)?.clone();
            Some(ClaimedEvent {
                event,
                organization_id,
                provider,
            })
        })
        .collect())
}

/// Gives back claims of `owner` that never reached a consumer: due again at `now`, the
/// attempt their claim counted undone. Answers how many were released.
pub async fn release_claims(
    db: &impl ConnectionTrait,
    owner: &str,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let result = set_null(
        webhook_event::Entity::update_many(),
        &[
            webhook_event::Column::LeaseExpiresAt,
            webhook_event::Column::LeaseOwner,
        ],
    )
    .col_expr(
        webhook_event::Column::Status,
        Expr::value(EventStatus::Pending),
    )
    .col_expr(
        webhook_event::Column::RetryCount,
        sea_orm::sea_query::ExprTrait::sub(Expr::col(webhook_event::Column::RetryCount), 1),
    )
    .col_expr(webhook_event::Column::NextAttemptAt, Expr::value(now))
    .filter(webhook_event::Column::Id.is_in(ids.iter().copied()))
    .filter(webhook_event::Column::Status.eq(EventStatus::Delivered))
    .filter(webhook_event::Column::LeaseOwner.eq(owner))
    .filter(webhook_event::Column::RetryCount.gt(0))
    .exec(db)
    .await?;
    Ok(result.rows_affected)
}

/// Events whose lease ran out on their last allowed attempt become DEAD, with the reason in
/// `last_error`. Answers how many.
pub async fn dead_letter_expired(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    max_attempts: i32,
) -> Result<u64, DbErr> {
    let result = set_null(
        webhook_event::Entity::update_many(),
        &[
            webhook_event::Column::NextAttemptAt,
            webhook_event::Column::LeaseExpiresAt,
            webhook_event::Column::LeaseOwner,
        ],
    )
    .col_expr(
        webhook_event::Column::Status,
        Expr::value(EventStatus::Dead),
    )
    .col_expr(
        webhook_event::Column::LastError,
        Expr::value(format!(
            "lease expired without an acknowledgement on attempt {max_attempts} of {max_attempts}"
        )),
    )
    .filter(webhook_event::Column::Status.eq(EventStatus::Delivered))
    .filter(webhook_event::Column::LeaseExpiresAt.lte(now))
    .filter(webhook_event::Column::RetryCount.gte(max_attempts))
    .exec(db)
    .await?;
    Ok(result.rows_affected)
}

/// Acknowledges a pending or delivered event. `false` when the event is in no such state.
pub async fn mark_processed(
    db: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = set_null(
        webhook_event::Entity::update_many(),
        &[
            webhook_event::Column::NextAttemptAt,
            webhook_event::Column::LeaseExpiresAt,
            webhook_event::Column::LeaseOwner,
        ],
    )
    .col_expr(
        webhook_event::Column::Status,
        Expr::value(EventStatus::Processed),
    )
    .col_expr(webhook_event::Column::Processed, Expr::value(true))
    .col_expr(webhook_event::Column::ProcessedAt, Expr::value(now))
    .filter(webhook_event::Column::Id.eq(id))
    .filter(webhook_event::Column::Status.is_in([EventStatus::Pending, EventStatus::Delivered]))
    .exec(db)
    .await?;
    Ok(result.rows_affected > 0)
}

/// What becomes of an event after a consumer reported an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterError {
    RetryAt(DateTime<Utc>),
    Dead,
}

/// Records a consumer's error on a pending or delivered event: retried at a time or dead,
/// as `decide(attempts so far)` says. `None` when the event is in no such state.
pub async fn record_error(
    db: &DatabaseConnection,
    id: Uuid,
    error: &str,
    decide: impl FnOnce(i32) -> AfterError,
) -> Result<Option<(Model, AfterError)>, DbErr> {
    let txn = db.begin().await?;
    // Write first: on SQLite the transaction then holds the write lock from its first
    // statement (read-then-write could fail with SQLITE_BUSY_SNAPSHOT under concurrent
    // ingest); on PostgreSQL it locks the row against a concurrent claim.
    webhook_event::Entity::update_many()
        .col_expr(
            webhook_event::Column::RetryCount,
            Expr::col(webhook_event::Column::RetryCount),
        )
        .filter(webhook_event::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    let Some(event) = find(&txn, id).await? else {
        return Ok(None);
    };
    if !matches!(event.status, EventStatus::Pending | EventStatus::Delivered) {
        return Ok(None);
    }
    let after = decide(event.retry_count);
    let (status, next_attempt) = match &after {
        AfterError::RetryAt(at) => (EventStatus::Pending, Some(*at)),
        AfterError::Dead => (EventStatus::Dead, None),
    };
    let result = set_null(
        webhook_event::Entity::update_many(),
        &[
            webhook_event::Column::LeaseExpiresAt,
            webhook_event::Column::LeaseOwner,
        ],
    )
    .col_expr(webhook_event::Column::Status, Expr::value(status))
    .col_expr(
        webhook_event::Column::NextAttemptAt,
        Expr::value(next_attempt),
    )
    .col_expr(webhook_event::Column::LastError, Expr::value(error))
    .filter(webhook_event::Column::Id.eq(id))
    .filter(webhook_event::Column::Status.eq(event.status))
    .filter(webhook_event::Column::RetryCount.eq(event.retry_count))
    .exec(&txn)
    .await?;
    if result.rows_affected == 0 {
        // Claimed or acknowledged meanwhile: the caller's view is stale.
        return Ok(None);
    }
    let updated = find(&txn, id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("webhook event".into()))?;
    txn.commit().await?;
    Ok(Some((updated, after)))
}
