//! Queries on `webhook_events`: group-committed ingest with duplicate detection, the worker's
//! claims with leases, acknowledgements, listing and replay.
//!
//! Invariants: a row is written once per (integration, delivery id) — the unique key decides,
//! never a read-then-write; a claim is one atomic UPDATE (PostgreSQL skips rows another
//! process has locked, SQLite has a single writer), so one event is leased to one consumer at
//! a time. Timestamps are always bound from Rust, so SQLite compares them as uniform text.

use super::set_null;
use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::Expr, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait, Value,
};
use uuid::Uuid;

use super::entities::webhook_event::{self, EventStatus, Model};

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

/// A verified delivery to store. `payload` and `headers` are JSON texts, already validated.
#[derive(Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub event_type: String,
    pub delivery_id: Option<String>,
    pub payload: String,
    pub headers: String,
    /// Events no consumer needs (`ping`) are stored already processed.
    pub processed: bool,
    pub received_at: DateTime<Utc>,
}

/// A delivery is provider-written data (it may hold tokens, personal data): `Debug` shows its
/// identity and sizes, never its content.
impl std::fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("integration_id", &self.integration_id)
            .field("event_type", &self.event_type)
            .field("delivery_id", &self.delivery_id)
            .field("payload_len", &self.payload.len())
            .field("headers_len", &self.headers.len())
            .field("processed", &self.processed)
            .field("received_at", &self.received_at)
            .finish()
    }
}

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

/// Bound data per INSERT statement: a batch of large payloads becomes several statements in
/// one transaction (still one commit), so no statement grows without bound. (PostgreSQL
/// connections have TCP_NODELAY, see `store::nodelay`: large statements do not stall.)
const STATEMENT_BUDGET: usize = 256 * 1024;

/// Writes `rows` in one transaction and answers, per row, the id of the stored event: the new
/// id, or the existing one when (integration, delivery id) was already stored (a duplicate).
pub async fn insert_batch(db: &DatabaseConnection, rows: &[NewEvent]) -> Result<Vec<Uuid>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // One key order in every batch: two processes inserting the same deliveries lock them in
    // the same order, so their transactions never deadlock.
    let mut order: Vec<&NewEvent> = rows.iter().collect();
    order.sort_by(|a, b| {
        (a.integration_id, &a.delivery_id).cmp(&(b.integration_id, &b.delivery_id))
    });
    let mut statements = Vec::new();
    let mut chunk: Vec<&NewEvent> = Vec::new();
    let mut size = 0;
    for row in order {
        let row_size = row.payload.len() + row.headers.len();
        if !chunk.is_empty() && size + row_size > STATEMENT_BUDGET {
            statements.push(insert_statement(db.get_database_backend(), &chunk));
            chunk.clear();
            size = 0;
        }
        size += row_size;
        chunk.push(row);
    }
    statements.push(insert_statement(db.get_database_backend(), &chunk));

    if statements.len() == 1 {
        // One statement is one transaction (autocommit): when it returns, every row it
        // inserted is committed, and a row it skipped conflicts with a committed row —
        // PostgreSQL waits for a concurrent inserter of the same key to finish first.
        let inserted = run_inserts(db, statements).await?;
        return resolve_ids(db, rows, &inserted).await;
    }
    let txn = db.begin().await?;
    let inserted = run_inserts(&txn, statements).await?;
    let ids = resolve_ids(&txn, rows, &inserted).await?;
    txn.commit().await?;
    Ok(ids)
}

fn insert_statement(backend: DbBackend, rows: &[&NewEvent]) -> Statement {
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO webhook_events (id, integration_id, event_type, delivery_id, payload, \
         headers, processed, status, retry_count, next_attempt_at, processed_at, received_at) \
         VALUES ",
    );
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        let (status, next_attempt, processed_at) = if row.processed {
            (PROCESSED, None, Some(row.received_at))
        } else {
            (PENDING, Some(row.received_at), None)
        };
        sql.push("(")
            .bind(row.id)
            .push(", ")
            .bind(row.integration_id)
            .push(", ")
            .bind(row.event_type.clone())
            .push(", ")
            .bind(row.delivery_id.clone())
            .push(", ")
            .bind_json(&row.payload)
            .push(", ")
            .bind_json(&row.headers)
            .push(", ")
            .bind(row.processed)
            .push(", ")
            .bind(status)
            .push(", 0, ")
            .bind(next_attempt)
            .push(", ")
            .bind(processed_at)
            .push(", ")
            .bind(row.received_at)
            .push(")");
    }
    sql.push(" ON CONFLICT (integration_id, delivery_id) DO NOTHING RETURNING id");
    sql.statement()
}

/// Runs the INSERTs; answers the ids they inserted.
async fn run_inserts(
    db: &impl ConnectionTrait,
    statements: Vec<Statement>,
) -> Result<Vec<Uuid>, DbErr> {
    let mut inserted = Vec::new();
    for statement in statements {
        for row in db.query_all_raw(statement).await? {
            inserted.push(row.try_get::<Uuid>("", "id")?);
        }
    }
    Ok(inserted)
}

/// Each row's stored id: its own when inserted, else the id stored for its delivery — found
/// for all skipped rows of the batch by one query, so a redelivery storm costs one lookup per
/// batch, not one per delivery.
async fn resolve_ids(
    db: &impl ConnectionTrait,
    rows: &[NewEvent],
    inserted: &[Uuid],
) -> Result<Vec<Uuid>, DbErr> {
    let skipped: Vec<&NewEvent> = rows
        .iter()
        .filter(|row| !inserted.contains(&row.id))
        .collect();
    let stored = if skipped.is_empty() {
        Vec::new()
    } else {
        find_by_deliveries(db, &skipped).await?
    };
    rows.iter()
        .map(|row| {
            if inserted.contains(&row.id) {
                return Ok(row.id);
            }
            // Not inserted: the unique key found the delivery already stored (maybe by this batch).
            stored
                .iter()
                .find(|found| {
                    found.integration_id == row.integration_id
                        && Some(&found.delivery_id) == row.delivery_id.as_ref()
                })
                .map(|found| found.id)
                .ok_or_else(|| {
                    DbErr::RecordNotFound("webhook event neither inserted nor found".into())
                })
        })
        .collect()
}

#[derive(FromQueryResult)]
struct StoredDelivery {
    id: Uuid,
    integration_id: Uuid,
    delivery_id: String,
}

/// The stored events of these (integration, delivery id) keys, in one query.
async fn find_by_deliveries(
    db: &impl ConnectionTrait,
    rows: &[&NewEvent],
) -> Result<Vec<StoredDelivery>, DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT id, integration_id, delivery_id FROM webhook_events WHERE ");
    let mut keys = 0;
    for row in rows {
        let Some(delivery) = &row.delivery_id else {
            continue;
        };
        if keys > 0 {
            sql.push(" OR ");
        }
        sql.push("(integration_id = ")
            .bind(row.integration_id)
            .push(" AND delivery_id = ")
            .bind(delivery.clone())
            .push(")");
        keys += 1;
    }
    if keys == 0 {
        return Ok(Vec::new());
    }
    StoredDelivery::find_by_statement(sql.statement())
        .all(db)
        .await
}

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
    let mut claimed = Vec::with_capacity(events.len());
    for event in events {
        let integration = super::entities::integration::Entity::find_by_id(event.integration_id)
            .one(db)
            .await?;
        if let Some(integration) = integration {
            claimed.push(ClaimedEvent {
                event,
                organization_id: integration.organization_id,
                provider: integration.provider,
            });
        }
    }
    Ok(claimed)
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

pub async fn find(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Model>, DbErr> {
    webhook_event::Entity::find_by_id(id).one(db).await
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
/// (with `keep_unforwarded`, only those the event sink forwarded already): one short
/// statement, so no lock is held for long. Answers how many went.
pub async fn purge_finished_before(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    limit: u64,
    keep_unforwarded: bool,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events WHERE status IN (",
    )
    .bind(PROCESSED)
    .push(", ")
    .bind(DEAD)
    .push(") AND received_at < ")
    .bind(cutoff);
    if keep_unforwarded {
        sql.push(" AND forwarded_at IS NOT NULL");
    }
    sql.push(" ORDER BY received_at LIMIT ")
        .bind(limit.min(i64::MAX as u64) as i64)
        .push(")");
    Ok(db.execute_raw(sql.statement()).await?.rows_affected())
}

/// The event backlog for the metrics: events by status, and when the oldest event still
/// waiting for a consumer (PENDING, or DELIVERED and not acknowledged) was received.
pub struct Backlog {
    pub by_status: Vec<(EventStatus, u64)>,
    pub oldest_unprocessed: Option<DateTime<Utc>>,
}

/// Two aggregate statements, for the metrics timer (retention keeps the table bounded).
pub async fn backlog(db: &DatabaseConnection) -> Result<Backlog, DbErr> {
    let counts: Vec<(EventStatus, i64)> = webhook_event::Entity::find()
        .select_only()
        .column(webhook_event::Column::Status)
        .column_as(webhook_event::Column::Id.count(), "count")
        .group_by(webhook_event::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let oldest_unprocessed: Option<Option<DateTime<Utc>>> = webhook_event::Entity::find()
        .select_only()
        .column_as(webhook_event::Column::ReceivedAt.min(), "oldest")
        .filter(webhook_event::Column::Status.is_in([EventStatus::Pending, EventStatus::Delivered]))
        .into_tuple()
        .one(db)
        .await?;
    Ok(Backlog {
        by_status: counts
            .into_iter()
            .map(|(status, count)| (status, u64::try_from(count).unwrap_or(0)))
            .collect(),
        oldest_unprocessed: oldest_unprocessed.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_new_event_shows_no_payload() {
        let event = NewEvent {
            id: Uuid::nil(),
            integration_id: Uuid::nil(),
            event_type: "push".into(),
            delivery_id: Some("d1".into()),
            payload: r#"{"token":"ghp_secretvalue"}"#.into(),
            headers: r#"{"x-github-event":"push"}"#.into(),
            processed: false,
            received_at: Utc::now(),
        };
        let shown = format!("{event:?}");
        assert!(!shown.contains("ghp_secretvalue"), "{shown}");
        assert!(shown.contains("payload_len: 27"), "{shown}");
    }
}
