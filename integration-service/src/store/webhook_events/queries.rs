//! The reads of the REST routes and the console (filters, keyset pages, payloads of a page,
//! counts), one event by id, replay, the retention purge and the backlog gauges.

use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::Expr, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::{
    super::{
        entities::webhook_event::{self, EventStatus, Model},
        set_null,
    },
    Sql, DEAD, DELIVERED, PENDING, PROCESSED,
};

/// Which events a consumer wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub organization_id: Option<i64>,
    pub provider: Option<String>,
    pub event_types: Vec<String>,
}

/// One page of an integration's events, newest first (keyset: strictly older than `before`).
#[derive(Debug, Clone, Default)]
pub struct EventQuery<'a> {
    pub status: Option<EventStatus>,
    pub event_type: Option<&'a str>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// The (received_at, id) of the last event of the previous page.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u64,
}

pub async fn find(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Model>, DbErr> {
    webhook_event::Entity::find_by_id(id).one(db).await
}

/// One page of an integration's events, newest first, as summaries: every column but
/// `payload` and `headers` (left `Null`/`None`), with each payload's size in bytes. A page is
/// bounded by its row count whatever the payloads weigh.
pub async fn list_for_integration(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    query: &EventQuery<'_>,
) -> Result<Vec<(Model, i64)>, DbErr> {
    use webhook_event::Column as C;
    let mut select = webhook_event::Entity::find().filter(C::IntegrationId.eq(integration_id));
    if let Some(status) = query.status {
        select = select.filter(C::Status.eq(status));
    }
    if let Some(event_type) = query.event_type {
        select = select.filter(C::EventType.eq(event_type));
    }
    if let Some(since) = query.since {
        select = select.filter(C::ReceivedAt.gte(since));
    }
    if let Some((received_at, id)) = query.before {
        select = select.filter(
            Condition::any().add(C::ReceivedAt.lt(received_at)).add(
                Condition::all()
                    .add(C::ReceivedAt.eq(received_at))
                    .add(C::Id.lt(id)),
            ),
        );
    }
    let size = match db.get_database_backend() {
        DbBackend::Postgres => "CAST(octet_length(payload::text) AS BIGINT)",
        _ => "CAST(length(CAST(payload AS BLOB)) AS BIGINT)",
    };
    let rows = select
        .select_only()
        .columns([
            C::Id,
            C::IntegrationId,
            C::EventType,
            C::DeliveryId,
            C::Processed,
            C::Status,
            C::RetryCount,
            C::LastError,
            C::NextAttemptAt,
            C::LeaseExpiresAt,
            C::LeaseOwner,
            C::ProcessedAt,
            C::ReceivedAt,
        ])
        .column_as(Expr::cust(size), "payload_size")
        .order_by_desc(C::ReceivedAt)
        .order_by_desc(C::Id)
        .limit(query.limit)
        .into_model::<SummaryRow>()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(SummaryRow::into_summary).collect())
}

/// An event row without its payload and headers.
#[derive(Debug, FromQueryResult)]
struct SummaryRow {
    id: Uuid,
    integration_id: Uuid,
    event_type: String,
    delivery_id: Option<String>,
    processed: bool,
    status: EventStatus,
    retry_count: i32,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    lease_owner: Option<String>,
    processed_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    payload_size: Option<i64>,
}

impl SummaryRow {
    fn into_summary(self) -> (Model, i64) {
        let model = Model {
            id: self.id,
            integration_id: self.integration_id,
            event_type: self.event_type,
            delivery_id: self.delivery_id,
            payload: serde_json::Value::Null,
            headers: None,
            processed: self.processed,
            status: self.status,
            retry_count: self.retry_count,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            lease_expires_at: self.lease_expires_at,
            lease_owner: self.lease_owner,
            processed_at: self.processed_at,
            received_at: self.received_at,
        };
        (model, self.payload_size.unwrap_or(0))
    }
}

/// The payload and headers of each of `ids` (a page's events chosen to carry theirs).
pub async fn payloads_of(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, serde_json::Value, Option<serde_json::Value>)>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = webhook_event::Entity::find()
        .filter(webhook_event::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|event| (event.id, event.payload, event.headers))
        .collect())
}

/// Number of events of an integration (tests and diagnostics).
pub async fn count_for_integration(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
) -> Result<u64, DbErr> {
    webhook_event::Entity::find()
        .filter(webhook_event::Column::IntegrationId.eq(integration_id))
        .count(db)
        .await
}

/// Makes an event due again now, as a new series of attempts — only a PROCESSED or DEAD one,
/// or a DELIVERED one whose lease has run out (one conditional UPDATE: a consumer's lease is
/// never taken away). `None` when the event was not in such a state.
pub async fn replay(
    db: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Model>, DbErr> {
    let replayed = set_null(
        webhook_event::Entity::update_many(),
        &[
            webhook_event::Column::LastError,
            webhook_event::Column::LeaseExpiresAt,
            webhook_event::Column::LeaseOwner,
            webhook_event::Column::ProcessedAt,
        ],
    )
    .col_expr(
        webhook_event::Column::Status,
        Expr::value(EventStatus::Pending),
    )
    .col_expr(webhook_event::Column::Processed, Expr::value(false))
    .col_expr(webhook_event::Column::RetryCount, Expr::value(0))
    .col_expr(webhook_event::Column::NextAttemptAt, Expr::value(now))
    .filter(webhook_event::Column::Id.eq(id))
    .filter(
        Condition::any()
            .add(webhook_event::Column::Status.is_in([EventStatus::Processed, EventStatus::Dead]))
            .add(
                Condition::all()
                    .add(webhook_event::Column::Status.eq(EventStatus::Delivered))
                    .add(webhook_event::Column::LeaseExpiresAt.lt(now)),
            ),
    )
    .exec(db)
    .await?;
    if replayed.rows_affected == 0 {
        return Ok(None);
    }
    find(db, id).await
}

/// Deletes at most `limit` PROCESSED or DEAD events received before `cutoff`, oldest first
/// (with `keep_unforwarded`, only those no longer waiting in the event sink's outbox; without
/// it, their outbox rows go with them): short statements, so no lock is held for long.
/// Answers how many events went.
pub async fn purge_finished_before(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    limit: u64,
    keep_unforwarded: bool,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let finished = |sql: &mut Sql| {
        sql.push("SELECT id FROM webhook_events WHERE status IN (")
            .bind(PROCESSED)
            .push(", ")
            .bind(DEAD)
            .push(") AND received_at < ")
            .bind(cutoff);
        if keep_unforwarded {
            sql.push(" AND id NOT IN (SELECT event_id FROM event_outbox)");
        }
        sql.push(" ORDER BY received_at LIMIT ")
            .bind(limit.min(i64::MAX as u64) as i64);
    };
    let mut events = Sql::new(backend);
    events.push("DELETE FROM webhook_events WHERE id IN (");
    finished(&mut events);
    events.push(")");
    if keep_unforwarded {
        return Ok(db.execute_raw(events.statement()).await?.rows_affected());
    }
    let mut outbox = Sql::new(backend);
    outbox.push("DELETE FROM event_outbox WHERE event_id IN (");
    finished(&mut outbox);
    outbox.push(")");
    let txn = db.begin().await?;
    txn.execute_raw(outbox.statement()).await?;
    let deleted = txn.execute_raw(events.statement()).await?.rows_affected();
    txn.commit().await?;
    Ok(deleted)
}

/// The event backlog for the metrics: events by status, and when the oldest event still
/// waiting for a consumer (PENDING, or DELIVERED and not acknowledged) was received.
pub struct Backlog {
    pub by_status: Vec<(EventStatus, u64)>,
    pub oldest_unprocessed: Option<DateTime<Utc>>,
}

/// Two statements for the metrics timer, both answered from the index on (status,
/// received_at): the counts scan the index alone (`COUNT(*)`: the rows are not read), the
/// oldest waiting event is the first entry of each waiting status's range — so the timer's cost
/// does not grow with a backlog of waiting events (it did: a walk over them every 15 s).
pub async fn backlog(db: &DatabaseConnection) -> Result<Backlog, DbErr> {
    let backend = db.get_database_backend();
    let mut counts = Sql::new(backend);
    counts.push("SELECT status, COUNT(*) AS count FROM webhook_events GROUP BY status");
    let mut by_status = Vec::new();
    for row in db.query_all_raw(counts.statement()).await? {
        let status: String = row.try_get("", "status")?;
        let count: i64 = row.try_get("", "count")?;
        if let Some(status) = EventStatus::parse(&status) {
            by_status.push((status, u64::try_from(count).unwrap_or(0)));
        }
    }
    // One MIN per status (an IN list would make PostgreSQL read the whole ranges).
    let mut oldest = Sql::new(backend);
    oldest
        .push("SELECT MIN(oldest) AS oldest FROM (SELECT MIN(received_at) AS oldest FROM webhook_events WHERE status = ")
        .bind(PENDING)
        .push(" UNION ALL SELECT MIN(received_at) AS oldest FROM webhook_events WHERE status = ")
        .bind(DELIVERED)
        .push(") AS waiting");
    let oldest_unprocessed = match db.query_one_raw(oldest.statement()).await? {
        Some(row) => row.try_get::<Option<DateTime<Utc>>>("", "oldest")?,
        None => None,
    };
    Ok(Backlog {
        by_status,
        oldest_unprocessed,
    })
}
