//! The entry of one delivery: the catalog's scheme name picks the scheme (`schemes::of`), whose
//! `receive` verifies the raw bytes and routes it. Kept apart from `receive` (what the schemes
//! share) so the schemes depend on `receive` and only `schemes` names them.
//!
//! Every delivery's outcome is counted here, once, by provider (`webhook_deliveries_total`):
//! a scheme added later is counted without a line of its own.

use super::{
    receive::{Answer, Delivery},
    schemes, WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{Problem, ServiceError, ServiceResult},
    metrics::DeliveryOutcome,
};

/// Verifies and stores one delivery with its provider's scheme, and counts its outcome.
pub async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let provider = ctx.catalog.get(&delivery.provider);
    // A catalog name, never the URL's text: the label stays bounded.
    let label = provider.map_or("unknown", |p| p.name.as_str());
    let runtime = runtime.for_delivery();
    let result = match provider.and_then(schemes::of_provider) {
        None => Err(ServiceError::not_found("Unknown webhook provider")
            .with_details(format!("{:?} receives no webhooks", delivery.provider))),
        Some(scheme) => match scheme.body_limit {
            // The gateway refuses these before reading them; a direct gRPC caller here.
            Some(limit) if delivery.body.len() > limit => Err(ServiceError::TooLarge(
                Problem::new("Request body too large").details(format!("at most {limit} bytes")),
            )),
            _ => {
                let delivery = Delivery {
                    kept_headers: scheme.headers.stored,
                    ..delivery
                };
                (scheme.receive)(ctx, &runtime, delivery).await
            }
        },
    };
    let outcome = match &result {
        Ok(_) => match runtime.tally().counts() {
            (0, _) => DeliveryOutcome::Handshake,
            (stored, duplicates) if duplicates == stored => DeliveryOutcome::Duplicate,
            _ => DeliveryOutcome::Accepted,
        },
        Err(err) => DeliveryOutcome::of_error(err),
    };
    ctx.metrics.webhook_delivery(label, outcome);
    result
}
