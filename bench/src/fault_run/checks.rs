//! The verdict of a run: what the senders, consumers and token callers recorded, against what
//! the database holds at the end and what the fake provider saw.

use std::collections::{HashMap, HashSet};

use integration_service::{
    crypto::{Keyring, SecretColumn},
    store::{
        self,
        entities::{
            integration,
            webhook_event::{self, EventStatus},
        },
    },
};
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use test_support::fake_provider::{IssuedToken, LoggedRequest};
use uuid::Uuid;

use super::{
    consumers::{Ack, Lease},
    senders::{SentDelivery, Source},
    token_callers::TokenCall,
};

/// The names of the checks, in the order they are printed.
pub const STORED_ONCE: &str = "every delivery answered 2xx is stored exactly once";
pub const NO_PHANTOM: &str = "no row whose delivery was never answered 2xx nor retried";
pub const REFUSED: &str = "no genuine delivery refused (4xx other than 429)";
pub const SETTLED: &str = "every stored event ended PROCESSED or DEAD";
pub const NO_OVERLAP: &str = "no event leased to two consumers at overlapping times";
pub const ONE_REFRESH: &str = "exactly one provider refresh per expiry";
pub const TOKENS_VALID: &str = "every token handed out was issued and unexpired";
pub const NEW_KEY: &str = "every secret opens under the new key alone";
pub const FAULTS: &str = "every fault was injected as planned";

pub const ALL: [&str; 9] = [
    STORED_ONCE,
    NO_PHANTOM,
    REFUSED,
    SETTLED,
    NO_OVERLAP,
    ONE_REFRESH,
    TOKENS_VALID,
    NEW_KEY,
    FAULTS,
];

/// One broken promise, under the check it breaks.
#[derive(Debug, Clone)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

/// Figures and violations, appended to by each check.
#[derive(Debug, Default)]
pub struct Findings {
    pub figures: Vec<(String, String)>,
    pub violations: Vec<Violation>,
}

impl Findings {
    pub fn figure(&mut self, label: &str, value: impl ToString) {
        self.figures.push((label.to_string(), value.to_string()));
    }

    pub fn violation(&mut self, check: &'static str, detail: impl Into<String>) {
        self.violations.push(Violation {
            check,
            detail: detail.into(),
        });
    }
}

/// A stored event, the columns the checks read.
struct Row {
    id: Uuid,
    integration_id: Uuid,
    delivery_id: Option<String>,
    status: EventStatus,
}

async fn rows(db: &DatabaseConnection) -> anyhow::Result<Vec<Row>> {
    let rows: Vec<(Uuid, Uuid, Option<String>, EventStatus)> = webhook_event::Entity::find()
        .select_only()
        .column(webhook_event::Column::Id)
        .column(webhook_event::Column::IntegrationId)
        .column(webhook_event::Column::DeliveryId)
        .column(webhook_event::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, integration_id, delivery_id, status)| Row {
            id,
            integration_id,
            delivery_id,
            status,
        })
        .collect())
}

/// Deliveries against rows: stored once each, the same event id in every 2xx answer, no row
/// nobody was told about, no genuine delivery refused, every event settled.
pub async fn deliveries(
    db: &DatabaseConnection,
    sent: &[SentDelivery],
    integration_of: &HashMap<Source, Uuid>,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let rows = rows(db).await?;
    let mut stored: HashMap<(Uuid, &str), Vec<&Row>> = HashMap::new();
    for row in &rows {
        if let Some(delivery) = row.delivery_id.as_deref() {
            stored
                .entry((row.integration_id, delivery))
                .or_default()
                .push(row);
        }
    }
    let attempts: usize = sent.iter().map(|d| d.attempts.len()).sum();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for attempt in sent.iter().flat_map(|d| &d.attempts) {
        let key = attempt
            .status
            .map_or_else(|| "no answer".to_string(), |s| s.to_string());
        *by_status.entry(key).or_default() += 1;
    }
    let mut statuses: Vec<_> = by_status.into_iter().collect();
    statuses.sort();
    let answered = sent.iter().filter(|d| d.answered_2xx()).count();
    findings.figure(
        "deliveries sent (GitHub + Slack)",
        format!(
            "{} ({} + {})",
            sent.len(),
            sent.iter().filter(|d| d.source == Source::Github).count(),
            sent.iter().filter(|d| d.source == Source::Slack).count()
        ),
    );
    findings.figure(
        "deliberate redeliveries of a delivery already answered 2xx",
        sent.iter().map(|d| d.redeliveries).sum::<u32>(),
    );
    findings.figure("HTTP attempts", attempts);
    findings.figure(
        "answers by status",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    findings.figure(
        "deliveries retried after a failed attempt",
        sent.iter()
            .filter(|d| d.attempts.iter().any(|a| !a.is_success()))
            .count(),
    );
    findings.figure("deliveries answered 2xx", answered);
    findings.figure(
        "2xx answers carrying an eventId (compared with the row)",
        sent.iter()
            .flat_map(|d| &d.attempts)
            .filter(|a| a.is_success() && a.event_id.is_some())
            .count(),
    );
    findings.figure(
        "deliveries never answered 2xx (sender gave up)",
        sent.len() - answered,
    );
    findings.figure("rows stored", rows.len());

    let mut known: HashSet<(Uuid, &str)> = HashSet::new();
    for delivery in sent {
        let Some(&integration_id) = integration_of.get(&delivery.source) else {
            continue;
        };
        known.insert((integration_id, delivery.id.as_str()));
        for attempt in &delivery.attempts {
            if let Some(status) = attempt.status {
                if (400..500).contains(&status) && status != 429 {
                    findings.violation(
                        REFUSED,
                        format!(
                            "{:?} delivery {} answered {status}",
                            delivery.source, delivery.id
                        ),
                    );
                }
            }
        }
        if !delivery.answered_2xx() {
            continue;
        }
        let found = stored
            .get(&(integration_id, delivery.id.as_str()))
            .map_or(&[][..], Vec::as_slice);
        if found.len() != 1 {
            findings.violation(
                STORED_ONCE,
                format!(
                    "{:?} delivery {} answered 2xx, stored {} times",
                    delivery.source,
                    delivery.id,
                    found.len()
                ),
            );
            continue;
        }
        let row_id = found[0].id.to_string();
        for answered in delivery
            .attempts
            .iter()
            .filter_map(|a| a.event_id.as_deref())
        {
            if answered != row_id {
                findings.violation(
                    STORED_ONCE,
                    format!(
                        "{:?} delivery {} answered event {answered}, stored as {row_id}",
                        delivery.source, delivery.id
                    ),
                );
            }
        }
    }
    let by_id: HashMap<(Uuid, &str), &SentDelivery> = sent
        .iter()
        .filter_map(|d| Some(((*integration_of.get(&d.source)?, d.id.as_str()), d)))
        .collect();
    let mut settled = HashMap::<String, usize>::new();
    for row in &rows {
        *settled.entry(row.status.to_string()).or_default() += 1;
        if !matches!(row.status, EventStatus::Processed | EventStatus::Dead) {
            findings.violation(SETTLED, format!("event {} is {}", row.id, row.status));
        }
        let Some(delivery_id) = row.delivery_id.as_deref() else {
            findings.violation(NO_PHANTOM, format!("event {} has no delivery id", row.id));
            continue;
        };
        let key = (row.integration_id, delivery_id);
        match by_id.get(&key) {
            None if !known.contains(&key) => findings.violation(
                NO_PHANTOM,
                format!("event {} for delivery {delivery_id} nobody sent", row.id),
            ),
            Some(d) if !d.answered_2xx() && d.attempts.len() < 2 => findings.violation(
                NO_PHANTOM,
                format!(
                    "event {} stored for delivery {delivery_id}, never answered 2xx and never retried",
                    row.id
                ),
            ),
            _ => {}
        }
    }
    let mut settled: Vec<_> = settled.into_iter().collect();
    settled.sort();
    findings.figure(
        "events by status at the end",
        settled
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    Ok(())
}

/// For each event, its leases in the order received: none may start before the previous one
/// was given back (acknowledged) or ran out.
pub fn leases(leases: &[Lease], findings: &mut Findings) {
    let mut by_event: HashMap<&str, Vec<&Lease>> = HashMap::new();
    for lease in leases {
        by_event.entry(&lease.event_id).or_default().push(lease);
    }
    let count = |ack: Ack| leases.iter().filter(|l| l.ack == ack).count();
    findings.figure(
        "leases received (processed / error / ack failed / arrived expired)",
        format!(
            "{} ({} / {} / {} / {})",
            leases.len(),
            count(Ack::Processed),
            count(Ack::Error),
            count(Ack::Failed),
            count(Ack::ArrivedExpired)
        ),
    );
    findings.figure("events leased", by_event.len());
    findings.figure(
        "events leased more than once",
        by_event.values().filter(|l| l.len() > 1).count(),
    );
    for (event, mut held) in by_event {
        held.sort_by_key(|l| l.received_at);
        for pair in held.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            let Some(until) = earlier.held_until() else {
                continue;
            };
            if later.received_at < until {
                findings.violation(
                    NO_OVERLAP,
                    format!(
                        "event {event}: consumer {} held it {} – {}, consumer {} received it at {}",
                        earlier.consumer,
                        earlier.received_at.format("%H:%M:%S%.3f"),
                        until.format("%H:%M:%S%.3f"),
                        later.consumer,
                        later.received_at.format("%H:%M:%S%.3f"),
                    ),
                );
            }
        }
    }
}

/// The refresh chain at the fake provider: every refresh token presented once, none before
/// its access token needed refreshing (tokens are issued for twice `lifetime`, which the
/// service refreshes at half their lifetime); answers how many generations were replaced.
pub fn refresh_chain(
    seed: &IssuedToken,
    issued: &[IssuedToken],
    refresh_requests: &[LoggedRequest],
    lifetime: chrono::Duration,
    findings: &mut Findings,
) -> usize {
    let generations: Vec<&IssuedToken> = std::iter::once(seed).chain(issued).collect();
    let by_refresh: HashMap<&str, &IssuedToken> = generations
        .iter()
        .filter_map(|g| Some((g.refresh_token.as_deref()?, *g)))
        .collect();
    let mut presented: HashMap<String, usize> = HashMap::new();
    for request in refresh_requests {
        let token = request
            .form()
            .get("refresh_token")
            .cloned()
            .unwrap_or_default();
        *presented.entry(token.clone()).or_default() += 1;
        match by_refresh.get(token.as_str()) {
            None => findings.violation(
                ONE_REFRESH,
                "a refresh presented a refresh token the provider never issued",
            ),
            Some(generation) => {
                // Not due before `lifetime` has passed since the provider issued it.
                let due = generation.at + lifetime - chrono::Duration::milliseconds(50);
                if request.at < due && generation.access_token != seed.access_token {
                    findings.violation(
                        ONE_REFRESH,
                        format!(
                            "{} refreshed {} ms after issue, before it needed refreshing",
                            generation.access_token,
                            (request.at - generation.at).num_milliseconds()
                        ),
                    );
                }
            }
        }
    }
    for (token, times) in &presented {
        if *times > 1 {
            let access = by_refresh
                .get(token.as_str())
                .map_or("?", |g| g.access_token.as_str());
            findings.violation(
                ONE_REFRESH,
                format!("the refresh token issued with {access} was presented {times} times"),
            );
        }
    }
    generations.len() - 1
}

/// Every token handed out is one the provider issued, unexpired when answered; the
/// integration is not in ERROR at the end.
pub async fn tokens_handed_out(
    db: &DatabaseConnection,
    integration_id: Uuid,
    seed: &IssuedToken,
    issued: &[IssuedToken],
    calls: &[TokenCall],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let ok = calls.iter().filter(|c| c.result.is_ok()).count();
    let mut errors: HashMap<String, usize> = HashMap::new();
    for call in calls {
        if let Err(code) = call.result {
            *errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    findings.figure(
        "GetAccessToken calls (ok / failed by code)",
        format!("{} ({ok} / {errors:?})", calls.len()),
    );
    let known: HashSet<&str> = std::iter::once(seed)
        .chain(issued)
        .map(|g| g.access_token.as_str())
        .collect();
    for call in calls {
        let Ok((token, expires_at)) = &call.result else {
            continue;
        };
        if !known.contains(token.as_str()) {
            findings.violation(
                TOKENS_VALID,
                "a token handed out that the provider never issued",
            );
        } else if expires_at.is_none_or(|at| at <= call.answered_at) {
            findings.violation(
                TOKENS_VALID,
                format!(
                    "{token} handed out at {} already expired ({expires_at:?})",
                    call.answered_at
                ),
            );
        }
    }
    let record = integration::Entity::find_by_id(integration_id)
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the token integration is gone"))?;
    if record.status == Some(integration::IntegrationStatus::Error) {
        findings.violation(
            ONE_REFRESH,
            format!(
                "the integration ended in ERROR: {}",
                record.last_error.unwrap_or_default()
            ),
        );
    }
    Ok(())
}

/// After `rotate-keys`, every secret of every integration opens under the new key and needs
/// no rotation.
pub async fn secrets_under(
    db: &DatabaseConnection,
    keyring: &Keyring,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut values = 0;
    for record in integration::Entity::find().all(db).await? {
        for column in SecretColumn::INTEGRATION {
            let Some(stored) = store::integrations::secret_value(&record, column) else {
                continue;
            };
            values += 1;
            let current = keyring.open(column, record.id, stored).is_ok()
                && keyring.needs_rotation(stored).is_ok_and(|needs| !needs);
            if !current {
                findings.violation(
                    NEW_KEY,
                    format!(
                        "integration {} {column:?} is not under the new key",
                        record.id
                    ),
                );
            }
        }
    }
    findings.figure("secret values checked under the new key", values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    fn lease(consumer: usize, received: i64, expires: i64, ack: Option<(Ack, i64)>) -> Lease {
        Lease {
            event_id: "e1".into(),
            consumer,
            received_at: at(received),
            lease_expires_at: Some(at(expires)),
            ack_sent_at: ack.map(|(_, sent)| at(sent)),
            ack: ack.map_or(Ack::Failed, |(ack, _)| ack),
        }
    }

    fn overlaps(leases: &[Lease]) -> usize {
        let mut findings = Findings::default();
        super::leases(leases, &mut findings);
        findings.violations.len()
    }

    fn generation(n: u32, issued_ms: i64) -> IssuedToken {
        IssuedToken {
            access_token: format!("access-{n}"),
            refresh_token: Some(format!("refresh-{n}")),
            expires_in: Some(303),
            at: at(issued_ms),
        }
    }

    fn refresh(token: &str, ms: i64) -> LoggedRequest {
        LoggedRequest {
            method: "POST".into(),
            path: "/token".into(),
            query: String::new(),
            headers: Vec::new(),
            body: format!("grant_type=refresh_token&refresh_token={token}"),
            at: at(ms),
        }
    }

    fn chain_violations(issued: &[IssuedToken], requests: &[LoggedRequest]) -> usize {
        let mut findings = Findings::default();
        refresh_chain(
            &generation(0, 0),
            issued,
            requests,
            chrono::Duration::seconds(3),
            &mut findings,
        );
        findings.violations.len()
    }

    #[test]
    fn a_refresh_token_presented_twice_or_early_breaks_the_chain() {
        let issued = [generation(1, 10), generation(2, 3100)];
        // One refresh per expiry.
        assert_eq!(
            chain_violations(
                &issued,
                &[refresh("refresh-0", 5), refresh("refresh-1", 3090)]
            ),
            0
        );
        // The same expiry refreshed twice (two replicas, or a lost commit).
        assert_eq!(
            chain_violations(
                &issued,
                &[
                    refresh("refresh-0", 5),
                    refresh("refresh-1", 3090),
                    refresh("refresh-1", 3200)
                ]
            ),
            1
        );
        // Refreshed 1 s after issue, 2 s before it was due.
        assert_eq!(
            chain_violations(
                &issued,
                &[refresh("refresh-0", 5), refresh("refresh-1", 1010)]
            ),
            1
        );
        // A token nobody issued.
        assert_eq!(chain_violations(&issued, &[refresh("forged", 5)]), 1);
    }

    #[test]
    fn a_lease_taken_before_the_previous_ended_is_an_overlap() {
        // Unacknowledged: held until its expiry at 5000.
        assert_eq!(
            overlaps(&[lease(0, 0, 5000, None), lease(1, 4000, 9000, None)]),
            1
        );
        // Acknowledged (an error) at 100, then redelivered at 1200: fine.
        assert_eq!(
            overlaps(&[
                lease(0, 0, 5000, Some((Ack::Error, 100))),
                lease(1, 1200, 6200, Some((Ack::Processed, 1300)))
            ]),
            0
        );
        // Acknowledged at 3000 but received again by another consumer at 2000.
        assert_eq!(
            overlaps(&[
                lease(1, 2000, 7000, Some((Ack::Processed, 2100))),
                lease(0, 0, 5000, Some((Ack::Error, 3000)))
            ]),
            1
        );
        // Expired at 5000, redelivered at 5000 exactly: fine.
        assert_eq!(
            overlaps(&[lease(0, 0, 5000, None), lease(1, 5000, 10000, None)]),
            0
        );
    }
}

/// The sink scenario's promise (printed on its own PASS/FAIL line, not among `ALL`).
pub const SINK: &str = "every stored event on the sink's stream exactly once";

/// What the sink scenario found: events stored, messages on the stream, what is missing or
/// there twice.
#[derive(Debug, Default)]
pub struct SinkVerdict {
    pub events: usize,
    pub messages: u64,
    pub distinct: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub strangers: usize,
}

impl SinkVerdict {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.strangers == 0
            && self.messages == self.events as u64
    }
}

/// Every stored event is on the stream exactly once (`by_id`: messages per `Nats-Msg-Id`, of
/// `messages` in total), and nothing else is.
pub async fn sink(
    db: &DatabaseConnection,
    messages: u64,
    by_id: &HashMap<String, u32>,
    findings: &mut Findings,
) -> anyhow::Result<SinkVerdict> {
    let stored: Vec<Uuid> = webhook_event::Entity::find()
        .select_only()
        .column(webhook_event::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let stored_ids: HashSet<String> = stored.iter().map(Uuid::to_string).collect();
    let mut verdict = SinkVerdict {
        events: stored.len(),
        messages,
        distinct: by_id.len(),
        ..SinkVerdict::default()
    };
    for id in &stored_ids {
        if !by_id.contains_key(id) {
            verdict.lost += 1;
            findings.violation(SINK, format!("event {id} is not on the stream"));
        }
    }
    for (id, count) in by_id {
        if *count > 1 {
            verdict.duplicated += 1;
            findings.violation(SINK, format!("event {id} is on the stream {count} times"));
        }
        if !stored_ids.contains(id) {
            verdict.strangers += 1;
            findings.violation(SINK, format!("message {id:?} is no stored event"));
        }
    }
    if messages != stored.len() as u64 && verdict.lost == 0 && verdict.duplicated == 0 {
        findings.violation(
            SINK,
            format!(
                "{messages} messages on the stream for {} events",
                stored.len()
            ),
        );
    }
    Ok(verdict)
}
