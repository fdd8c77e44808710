//! The settings section of the integration page and its post: the form checked for types
//! first (errors in place, nothing sent), then `UpdateIntegration`.

use http::StatusCode;
use integrations_proto::v1::{Integration, UpdateIntegrationRequest};
use maud::{html, Markup};
use serde_json::{Map, Value};

use super::{get_integration, integration_page, PageState};
use crate::{
    console::{
        layout::{self, segment, Notice, Viewer},
        refusal, Request,
    },
    error::GatewayError,
    http::HttpResponse,
    upstream::forwarded,
};

/// The settings form as submitted, with its errors in place.
#[derive(Default)]
pub(super) struct SettingsForm {
    pub(super) sync_enabled: bool,
    pub(super) sync_frequency: String,
    pub(super) config: String,
    pub(super) form_error: Option<String>,
    pub(super) frequency_error: Option<String>,
    pub(super) config_error: Option<String>,
}

impl SettingsForm {
    pub(super) fn has_errors(&self) -> bool {
        self.form_error.is_some() || self.frequency_error.is_some() || self.config_error.is_some()
    }
}

pub(super) fn settings_form(
    viewer: &Viewer,
    item: &Integration,
    submitted: Option<&SettingsForm>,
) -> Markup {
    let current;
    let form = match submitted {
        Some(form) => form,
        None => {
            current = SettingsForm {
                sync_enabled: item.sync_enabled,
                sync_frequency: item
                    .sync_frequency
                    .map(|f| f.to_string())
                    .unwrap_or_default(),
                config: pretty_json(&item.config_json),
                ..SettingsForm::default()
            };
            &current
        }
    };
    html! {
        form.card method="post" action={ "/console/integrations/" (segment(&item.id)) "/settings" } aria-labelledby="settings-heading" novalidate {
            h2 id="settings-heading" { "Settings" }
            (layout::token_field(viewer))
            @if let Some(error) = &form.form_error { p.field-error role="alert" { (error) } }
            label.check for="sync-enabled" {
                input id="sync-enabled" name="syncEnabled" type="checkbox" value="true" checked[form.sync_enabled];
                "Sync enabled"
            }
            label for="sync-frequency" { "Sync frequency (seconds, empty for none)" }
            input id="sync-frequency" name="syncFrequency" type="number" min="1" step="1"
                value=(form.sync_frequency) aria-invalid=[form.frequency_error.as_ref().map(|_| "true")]
                aria-describedby=[form.frequency_error.as_ref().map(|_| "sync-frequency-error")];
            @if let Some(error) = &form.frequency_error { p.field-error id="sync-frequency-error" { (error) } }
            label for="config" { "Config (a JSON object; keys you remove are removed)" }
            textarea id="config" name="config" spellcheck="false"
                aria-invalid=[form.config_error.as_ref().map(|_| "true")]
                aria-describedby=[form.config_error.as_ref().map(|_| "config-error")] { (form.config) }
            @if let Some(error) = &form.config_error { p.field-error id="config-error" { (error) } }
            div { button type="submit" { "Save settings" } }
        }
    }
}

fn pretty_json(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_string())
}

/// `POST /console/integrations/{id}/settings`: the form checked for types first (errors in
/// place, nothing sent), then `UpdateIntegration` with the config as a merge patch that also
/// removes the keys taken out of the text.
pub(crate) async fn update_settings(
    request: &mut Request<'_>,
) -> Result<HttpResponse, GatewayError> {
    let form = request.form().await?;
    let id = request.param(0)?.to_string();
    let mut submitted = SettingsForm {
        sync_enabled: form.get("syncEnabled") == Some("true"),
        sync_frequency: form
            .get("syncFrequency")
            .unwrap_or_default()
            .trim()
            .to_string(),
        config: form.get("config").unwrap_or_default().to_string(),
        ..SettingsForm::default()
    };
    let frequency = if submitted.sync_frequency.is_empty() {
        None
    } else {
        match submitted.sync_frequency.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                submitted.frequency_error =
                    Some("Sync frequency must be a whole number of seconds.".into());
                None
            }
        }
    };
    let config = match submitted.config.trim() {
        "" => Some(Map::new()),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            Ok(_) => {
                submitted.config_error = Some("Config must be a JSON object ({ ... }).".into());
                None
            }
            Err(e) => {
                submitted.config_error = Some(format!("Config is not valid JSON: {e}."));
                None
            }
        },
    };
    let (Some(mut patch), false) = (config, submitted.has_errors()) else {
        return settings_refused(request, submitted).await;
    };
    let current = get_integration(request, &id).await?;
    if let Ok(Value::Object(old)) = serde_json::from_str::<Value>(&current.config_json) {
        for key in old.keys() {
            patch.entry(key.clone()).or_insert(Value::Null);
        }
    }
    let update = UpdateIntegrationRequest {
        id: id.clone(),
        config_patch_json: Some(Value::Object(patch).to_string()),
        sync_enabled: Some(submitted.sync_enabled),
        sync_frequency: frequency,
        clear_sync_frequency: frequency.is_none(),
    };
    match request
        .gateway
        .upstream
        .integrations()
        .update_integration(forwarded(&request.parts.headers, update))
        .await
    {
        Ok(_) => Ok(layout::see_other(&format!(
            "/console/integrations/{}?done=settings",
            segment(&id)
        ))),
        Err(status) => {
            // The service's validation, placed by the field it names.
            let (_, text) = refusal(status, &[StatusCode::BAD_REQUEST])?;
            let lower = text.to_ascii_lowercase();
            if lower.contains("frequency") {
                submitted.frequency_error = Some(text);
            } else if lower.contains("config") {
                submitted.config_error = Some(text);
            } else {
                submitted.form_error = Some(text);
            }
            settings_refused(request, submitted).await
        }
    }
}

pub(super) async fn settings_refused(
    request: &Request<'_>,
    submitted: SettingsForm,
) -> Result<HttpResponse, GatewayError> {
    let state = PageState {
        notice: Some(Notice::Error(
            "The settings were not saved: see below.".into(),
        )),
        settings: Some(submitted),
        ..PageState::default()
    };
    integration_page(request, state, StatusCode::BAD_REQUEST).await
}
