//! The ingest writers' inserts: a batch in one transaction, each row written once per
//! (integration, delivery id) — the unique key decides, never a read-then-write — and the id
//! of the stored event answered per row (the existing one for a duplicate).

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement,
    TransactionTrait,
};
use uuid::Uuid;

use super::{Sql, PENDING, PROCESSED};

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

/// Bound data per INSERT statement: a batch of large payloads becomes several statements in
/// one transaction (still one commit), so no statement grows without bound. (PostgreSQL
/// connections have TCP_NODELAY, see `store::nodelay`: large statements do not stall.)
const STATEMENT_BUDGET: usize = 256 * 1024;

/// Writes `rows` in one transaction and answers, per row, the id of the stored event: the new
/// id, or the existing one when (integration, delivery id) was already stored (a duplicate).
/// Every new event also gets its `event_outbox` row (it waits to be forwarded, whether the
/// sink is on now or turned on later) in the same transaction: on PostgreSQL in the same
/// statement, on SQLite in a second one.
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
    let backend = db.get_database_backend();
    // PostgreSQL writes the outbox rows in the INSERT's own statement (a data-modifying CTE);
    // SQLite has none, so it writes them in a second statement of the transaction.
    let outbox_in_statement = backend == DbBackend::Postgres;
    let outbox_apart = !outbox_in_statement;
    let mut statements = Vec::new();
    let mut chunk: Vec<&NewEvent> = Vec::new();
    let mut size = 0;
    for row in order {
        let row_size = row.payload.len() + row.headers.len();
        if !chunk.is_empty() && size + row_size > STATEMENT_BUDGET {
            statements.push(insert_statement(backend, &chunk, outbox_in_statement));
            chunk.clear();
            size = 0;
        }
        size += row_size;
        chunk.push(row);
    }
    statements.push(insert_statement(backend, &chunk, outbox_in_statement));

    if statements.len() == 1 && !outbox_apart {
        // One statement is one transaction (autocommit): when it returns, every row it
        // inserted is committed, and a row it skipped conflicts with a committed row —
        // PostgreSQL waits for a concurrent inserter of the same key to finish first.
        let inserted = run_inserts(db, statements).await?;
        return resolve_ids(db, rows, &inserted).await;
    }
    let txn = db.begin().await?;
    let inserted = run_inserts(&txn, statements).await?;
    if outbox_apart {
        insert_outbox(&txn, rows, &inserted).await?;
    }
    let ids = resolve_ids(&txn, rows, &inserted).await?;
    txn.commit().await?;
    Ok(ids)
}

fn insert_statement(backend: DbBackend, rows: &[&NewEvent], with_outbox: bool) -> Statement {
    let mut sql = Sql::new(backend);
    if with_outbox {
        sql.push("WITH inserted AS (");
    }
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
    if with_outbox {
        sql.push(
            ", received_at), outbox AS (INSERT INTO event_outbox (event_id, received_at) \
             SELECT id, received_at FROM inserted) SELECT id FROM inserted",
        );
    }
    sql.statement()
}

/// The outbox rows of the events a batch inserted (SQLite: in the batch's transaction).
async fn insert_outbox(
    db: &impl ConnectionTrait,
    rows: &[NewEvent],
    inserted: &[Uuid],
) -> Result<(), DbErr> {
    let new: Vec<&NewEvent> = rows
        .iter()
        .filter(|row| inserted.contains(&row.id))
        .collect();
    // 2 variables a row: well under SQLite's limit of bound variables per statement.
    for chunk in new.chunks(1000) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("INSERT INTO event_outbox (event_id, received_at) VALUES ");
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind(row.id)
                .push(", ")
                .bind(row.received_at)
                .push(")");
        }
        db.execute_raw(sql.statement()).await?;
    }
    Ok(())
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
