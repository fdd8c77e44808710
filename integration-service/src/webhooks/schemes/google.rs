//! Google push notification channels (Drive, Calendar): `X-Goog-Channel-Token` must equal the
//! integration's generated secret (pass it as the channel's `token` when creating the watch),
//! compared in constant time. A channel starts with a `sync` message, acknowledged with a 200
//! and not stored; every later message is stored with the notification headers as its
//! payload (Google sends no body), deduplicated by channel id + `X-Goog-Message-Number` — or,
//! while a subscription's old and new channels overlap (`overlap_key`, read from the stored
//! subscription), by what the message says, so a change notified on both is stored once.
//!
//! Invariant: the token is checked before anything is read or stored.

use serde_json::json;

use super::{Guide, Headers, Scheme, SecretSource};
use crate::context::AppContext;
use crate::webhooks::{
    receive::{store_one, verified_integration, Answer, Answered, Delivery, Item},
    signature::token_matches,
    WebhookRuntime,
};

/// Google push notification channels (Drive, Calendar).
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    guide: Guide {
        events: &["sync", "add", "update", "remove", "trash", "change"],
        steps: &[
            "Open a channel (files.watch, changes.watch or events.watch): type web_hook, address {url}, token: the secret shown here",
        ],
        secret_field: Some("token"),
        signature_header: Some("X-Goog-Channel-Token"),
        content_type: None,
    },
    headers: Headers {
        stored: &[
            "x-goog-channel-id",
            "x-goog-message-number",
            "x-goog-resource-id",
            "x-goog-resource-state",
            "x-goog-resource-uri",
            "x-goog-changed",
            "x-goog-channel-expiration",
        ],
        signature: Some("x-goog-channel-token"),
        ..Headers::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let token = delivery.credential("x-goog-channel-token", "X-Goog-Channel-Token")?;
    let channel = delivery.required("x-goog-channel-id", "X-Goog-Channel-ID", 200)?;
    let number = delivery.required("x-goog-message-number", "X-Goog-Message-Number", 20)?;
    let state = delivery.required("x-goog-resource-state", "X-Goog-Resource-State", 50)?;
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "X-Goog-Channel-Token",
        move |secret, _body| token_matches(secret, &token),
    )
    .await?;
    if state == "sync" {
        // The channel is open: Google only needs a 2xx.
        return Ok(Answer::ok(json!({ "success": true })));
    }
    let header = |name: &str| delivery.header(name).map(str::to_string);
    let payload = json!({
        "channelId": channel,
        "messageNumber": number,
        "resourceState": state,
        "resourceId": header("x-goog-resource-id"),
        "resourceUri": header("x-goog-resource-uri"),
        "changed": header("x-goog-changed"),
        "channelExpiration": header("x-goog-channel-expiration"),
    });
    let key = overlap_key(
        ctx,
        integration_id,
        &channel,
        &state,
        &header("x-goog-resource-id").unwrap_or_default(),
        &header("x-goog-changed").unwrap_or_default(),
    )
    .await?
    .unwrap_or_else(|| dedupe_key(&channel, &number));
    let item = Item::new(state, key, payload.to_string());
    store_one(runtime, integration_id, &delivery, item).await
}

/// Google: the dedupe key of a message that arrives during the overlap of an old and a new
/// channel of one subscription — the same for both channels, so a change notified on both is
/// stored once (`None` outside an overlap: then channel id + message number identify it).
/// Within the overlap (from the new channel's opening until a minute after the old one was
/// stopped) identical messages collapse into one: Google's messages say only "this resource
/// changed", so one of them carries everything the others would.
async fn overlap_key(
    ctx: &AppContext,
    integration_id: uuid::Uuid,
    channel: &str,
    state: &str,
    resource_id: &str,
    changed: &str,
) -> crate::error::ServiceResult<Option<String>> {
    let found = crate::store::subscriptions::in_channel_overlap(
        &ctx.db,
        integration_id,
        channel,
        chrono::Utc::now(),
    )
    .await?;
    Ok(found.map(|subscription| {
        format!(
            "overlap:{}:{state}:{resource_id}:{changed}",
            subscription.channel_id.unwrap_or_default()
        )
    }))
}

/// A message is identified by its channel and its number within the channel.
fn dedupe_key(channel: &str, number: &str) -> String {
    format!("{channel}:{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example notification of Google's "Push notifications" guide (Drive API):
    /// `X-Goog-Channel-ID: 4ba78bf0-6a47-11e2-bcfd-0800200c9a66`,
    /// `X-Goog-Channel-Token: 398348u3tu83ut8uu38`, `X-Goog-Message-Number: 10`.
    /// https://developers.google.com/drive/api/guides/push
    #[test]
    fn documented_example_headers() {
        assert!(token_matches(b"398348u3tu83ut8uu38", "398348u3tu83ut8uu38"));
        assert!(!token_matches(
            b"398348u3tu83ut8uu38",
            "398348u3tu83ut8uu39"
        ));
        assert_eq!(
            dedupe_key("4ba78bf0-6a47-11e2-bcfd-0800200c9a66", "10"),
            "4ba78bf0-6a47-11e2-bcfd-0800200c9a66:10"
        );
    }
}
