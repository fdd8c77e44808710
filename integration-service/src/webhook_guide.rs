//! What route 11 (`GET /api/integrations/{id}/webhook`) tells a person setting a provider's
//! webhook up: where the secret comes from, which provider field it goes into, the header we
//! check, the content type, the events worth subscribing to, and the steps. Each scheme
//! writes its own (`webhooks::schemes::Guide`, in the scheme's file); this module fills in the
//! provider's name and the URL, so a provider added through `PROVIDERS_FILE` gets its scheme's
//! guide.
//!
//! Invariant: a guide never carries a secret; the secret travels in `WebhookSettings.secret`.

pub(crate) use crate::webhooks::schemes::SecretSource;
use crate::{catalog::Provider, webhooks::schemes};

/// Route 11's guidance for one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookGuide {
    pub secret_source: SecretSource,
    /// The provider's field the secret is pasted into (`None`: nothing to paste there).
    pub secret_field: Option<&'static str>,
    /// The header we verify (`None`: the credential is in the body, e.g. Graph's clientState).
    pub signature_header: Option<&'static str>,
    /// The content type to choose at the provider (`None`: the provider sends no body).
    pub content_type: Option<&'static str>,
    /// Events worth subscribing to (every event is stored as it comes).
    pub events: &'static [&'static str],
    /// What to do, in order.
    pub steps: Vec<String>,
}

impl WebhookGuide {
    /// The guide of a provider that sends no webhooks: nothing to do.
    pub(crate) fn none() -> Self {
        Self {
            secret_source: SecretSource::Generated,
            secret_field: None,
            signature_header: None,
            content_type: None,
            events: &[],
            steps: Vec::new(),
        }
    }
}

/// The guide of `provider`'s scheme, its steps naming the provider and `url`.
pub(crate) fn guide(provider: &Provider, url: &str) -> WebhookGuide {
    let Some(scheme) = schemes::of_provider(provider) else {
        return WebhookGuide::none();
    };
    let text = &scheme.guide;
    WebhookGuide {
        secret_source: scheme.secret,
        secret_field: text.secret_field,
        signature_header: text.signature_header,
        content_type: text.content_type,
        events: text.events,
        // The name first: a URL is never read for placeholders.
        steps: text
            .steps
            .iter()
            .map(|step| step.replace("{name}", &provider.name).replace("{url}", url))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn every_provider_that_sends_webhooks_has_a_guide_naming_its_url() {
        let catalog = Catalog::load(None).unwrap();
        for provider in catalog.iter() {
            let Some(scheme) = schemes::of_provider(provider) else {
                assert_eq!(
                    guide(provider, "https://api.example/hook"),
                    WebhookGuide::none()
                );
                continue;
            };
            let guide = guide(provider, "https://api.example/hook");
            assert!(
                guide
                    .steps
                    .iter()
                    .any(|s| s.contains("https://api.example/hook")),
                "{}",
                provider.name
            );
            assert!(
                guide
                    .steps
                    .iter()
                    .all(|s| !s.contains("{url}") && !s.contains("{name}")),
                "{}",
                provider.name
            );
            // The header shown is the one checked, except where the first delivery is an
            // unsigned handshake, or where a second credential is accepted (Jira: the admin
            // webhook's header shown here, or a dynamic webhook's JWT): checked by the scheme,
            // not at admission.
            let jira = std::ptr::eq(scheme, &schemes::jira::SCHEME);
            if jira {
                assert_eq!(guide.signature_header, Some("X-Hub-Signature"));
            } else if scheme.secret != SecretSource::Handshake {
                assert_eq!(
                    guide
                        .signature_header
                        .map(str::to_ascii_lowercase)
                        .as_deref(),
                    scheme.headers.signature,
                    "{}",
                    provider.name
                );
            }
        }
    }

    /// The steps as route 11 has always written them, for one provider of each placeholder.
    #[test]
    fn steps_name_the_provider_and_the_url() {
        let catalog = Catalog::load(None).unwrap();
        let linear = guide(catalog.get("linear").unwrap(), "https://h/x");
        assert_eq!(
            linear.steps,
            [
                "Linear → Settings → API → Webhooks → New webhook: URL https://h/x",
                "Copy Linear's signing secret into PUT /api/integrations/linear/webhook {\"secret\": ...}"
            ]
        );
        assert_eq!(linear.secret_source, SecretSource::ProviderIssued);
    }
}
