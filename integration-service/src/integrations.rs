//! The rules of integration management: flexible ids, catalog-driven "available" items,
//! RFC 7396 merge of `config`, validation of sync settings. (Disconnecting is `disconnect.rs`.)

use uuid::Uuid;

use crate::{
    access::Access,
    catalog::{Catalog, Provider},
    context::AppContext,
    error::{integration_not_found, ServiceError, ServiceResult},
    store::{self, entities::integration, integrations::SettingsChange},
};

/// Bounds of `sync_frequency`, in seconds: one minute to thirty days.
const SYNC_FREQUENCY_RANGE: std::ops::RangeInclusive<i64> = 60..=2_592_000;
/// Largest stored `config`, serialized.
const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// What `{id}` in a route names; parsed once, at the edge (the RPC layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntegrationRef {
    Id(Uuid),
    Provider(String),
}

impl IntegrationRef {
    /// A string shaped `8-4-4-4-12` hex digits (any case) is a UUID; anything else a provider.
    pub fn parse(value: &str) -> Self {
        let bytes = value.as_bytes();
        let shaped = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        match shaped.then(|| Uuid::parse_str(value).ok()).flatten() {
            Some(id) => Self::Id(id),
            None => Self::Provider(value.to_string()),
        }
    }
}

/// A catalog provider with the organization's record for it, if any.
#[derive(Debug, Clone)]
pub(crate) struct IntegrationView {
    pub provider: Provider,
    pub organization_id: i64,
    pub record: Option<integration::Model>,
}

/// A validated change of settings.
#[derive(Debug, Default, Clone)]
pub(crate) struct SettingsUpdate {
    /// An RFC 7396 merge patch; must be a JSON object.
    pub config_patch: Option<serde_json::Value>,
    pub sync_enabled: Option<bool>,
    /// `Some(None)` clears the frequency.
    pub sync_frequency: Option<Option<i64>>,
}

/// Every catalog provider, with the organization's record where one exists; records of
/// providers no longer in the catalog are listed too rather than hidden. The records are
/// read with the caller's access (`access::manager_with_integrations`: one query).
pub(crate) fn list(
    ctx: &AppContext,
    access: &Access,
    mut records: Vec<integration::Model>,
) -> Vec<IntegrationView> {
    let mut views: Vec<IntegrationView> = ctx
        .catalog
        .iter()
        .map(|provider| {
            let record = records
                .iter()
                .position(|r| r.provider == provider.name)
                .map(|i| records.swap_remove(i));
            IntegrationView {
                provider: provider.clone(),
                organization_id: access.organization_id,
                record,
            }
        })
        .collect();
    views.extend(records.into_iter().map(|record| IntegrationView {
        provider: uncatalogued(&record.provider),
        organization_id: access.organization_id,
        record: Some(record),
    }));
    views
}

/// One integration by UUID or provider name (an available item when there is no record).
/// The one resolution of `{id}` every rule uses: a provider name is looked up in the catalog
/// (404 naming the known providers), a UUID within the caller's organization.
pub(crate) async fn get(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<IntegrationView> {
    let view = match id {
        IntegrationRef::Id(uuid) => {
            let record = store::integrations::find_by_id(&ctx.db, access.organization_id, *uuid)
                .await?
                .ok_or_else(integration_not_found)?;
            view_of(&ctx.catalog, access, record)
        }
        IntegrationRef::Provider(name) => {
            let provider = known_provider(&ctx.catalog, name)?;
            let record = store::integrations::find_by_provider(
                &ctx.db,
                access.organization_id,
                &provider.name,
            )
            .await?;
            IntegrationView {
                provider: provider.clone(),
                organization_id: access.organization_id,
                record,
            }
        }
    };
    if let Some(record) = &view.record {
        note_integration(record.id);
    }
    Ok(view)
}

/// The organization's record for `id`: 404 when the provider was never connected.
pub(crate) async fn get_record(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<integration::Model> {
    get(ctx, access, id)
        .await?
        .record
        .ok_or_else(integration_not_found)
}

/// Names the integration on the current span (the RPC's), so every later line carries it.
fn note_integration(id: Uuid) {
    tracing::Span::current().record("integration_id", tracing::field::display(id));
}

/// Merge-patches the config and sets sync settings; a provider with no record gets one.
pub(crate) async fn update(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    update: SettingsUpdate,
) -> ServiceResult<IntegrationView> {
    validate_update(&update)?;
    let record = get_or_create(ctx, access, id).await?;
    let updated = store::integrations::update_settings(
        &ctx.db,
        access.organization_id,
        record.id,
        |current| settings_change(&current.config, &update),
    )
    .await??;
    Ok(view_of(&ctx.catalog, access, updated))
}

/// The record for `id`, created for a known provider when absent.
pub(crate) async fn get_or_create(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<integration::Model> {
    let record = match id {
        IntegrationRef::Id(uuid) => {
            store::integrations::find_by_id(&ctx.db, access.organization_id, *uuid)
                .await?
                .ok_or_else(integration_not_found)?
        }
        IntegrationRef::Provider(name) => {
            let provider = known_provider(&ctx.catalog, name)?;
            store::integrations::get_or_create(&ctx.db, access.organization_id, &provider.name)
                .await?
        }
    };
    note_integration(record.id);
    Ok(record)
}

fn view_of(catalog: &Catalog, access: &Access, record: integration::Model) -> IntegrationView {
    IntegrationView {
        provider: catalog
            .get(&record.provider)
            .cloned()
            .unwrap_or_else(|| uncatalogued(&record.provider)),
        organization_id: access.organization_id,
        record: Some(record),
    }
}

fn known_provider<'c>(catalog: &'c Catalog, name: &str) -> ServiceResult<&'c Provider> {
    catalog.get(name).ok_or_else(|| {
        integration_not_found().with_details(format!(
            "unknown provider {:?}; known providers: {}",
            truncate(name, 64),
            catalog
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// A stand-in catalog entry for a record whose provider was removed from the catalog.
fn uncatalogued(name: &str) -> Provider {
    Provider {
        name: name.to_string(),
        display_name: name.to_string(),
        authorize_url: String::new(),
        token_url: String::new(),
        revoke_url: None,
        revoke_style: Default::default(),
        scopes: Vec::new(),
        scope_separator: " ".into(),
        pkce: false,
        token_style: Default::default(),
        client_auth: Default::default(),
        callback_path: None,
        webhook: Default::default(),
        authorize_params: Vec::new(),
    }
}

fn truncate(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

/// Type and range checks that do not need the stored row.
fn validate_update(update: &SettingsUpdate) -> ServiceResult<()> {
    if let Some(patch) = &update.config_patch {
        if !patch.is_object() {
            return Err(ServiceError::invalid_field(
                "config",
                "must be a JSON object",
            ));
        }
    }
    if let Some(Some(frequency)) = update.sync_frequency {
        if !SYNC_FREQUENCY_RANGE.contains(&frequency) {
            return Err(ServiceError::invalid_field(
                "syncFrequency",
                format!(
                    "must be between {} and {} seconds",
                    SYNC_FREQUENCY_RANGE.start(),
                    SYNC_FREQUENCY_RANGE.end()
                ),
            ));
        }
    }
    Ok(())
}

/// The new settings: `config` merged per RFC 7396 and bounded in size.
fn settings_change(
    current_config: &serde_json::Value,
    update: &SettingsUpdate,
) -> ServiceResult<SettingsChange> {
    let config = match &update.config_patch {
        None => None,
        Some(patch) => {
            let mut merged = if current_config.is_object() {
                current_config.clone()
            } else {
                serde_json::json!({})
            };
            json_patch::merge(&mut merged, patch);
            let size = serde_json::to_vec(&merged)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_CONFIG_BYTES {
                return Err(ServiceError::invalid_field(
                    "config",
                    format!(
                        "the merged config is {size} bytes; at most {MAX_CONFIG_BYTES} are kept"
                    ),
                ));
            }
            Some(merged)
        }
    };
    Ok(SettingsChange {
        config,
        sync_enabled: update.sync_enabled,
        sync_frequency: update.sync_frequency,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn uuid_shapes_and_provider_names() {
        let id = "0B7E3E4A-1C2D-4E5F-8A9B-0C1D2E3F4A5B";
        assert!(matches!(IntegrationRef::parse(id), IntegrationRef::Id(_)));
        assert!(matches!(
            IntegrationRef::parse(&id.to_lowercase()),
            IntegrationRef::Id(_)
        ));
        for name in [
            "github",
            "0b7e3e4a1c2d4e5f8a9b0c1d2e3f4a5b",
            "{0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b}",
        ] {
            assert_eq!(
                IntegrationRef::parse(name),
                IntegrationRef::Provider(name.into())
            );
        }
    }

    #[test]
    fn merge_patch_adds_replaces_and_removes_keys() {
        let update = SettingsUpdate {
            config_patch: Some(json!({"a": null, "b": {"c": 2, "d": null}, "e": [1]})),
            ..Default::default()
        };
        let change = settings_change(
            &json!({"a": 1, "b": {"c": 1, "d": 1, "f": 1}, "g": true}),
            &update,
        )
        .unwrap();
        assert_eq!(
            change.config.unwrap(),
            json!({"b": {"c": 2, "f": 1}, "e": [1], "g": true})
        );
    }

    #[test]
    fn validation_names_the_field() {
        let err = validate_update(&SettingsUpdate {
            sync_frequency: Some(Some(5)),
            ..Default::default()
        })
        .unwrap_err();
        let ServiceError::InvalidArgument(problem) = err else {
            panic!("wrong error")
        };
        assert!(problem.details.unwrap().starts_with("syncFrequency:"));
        assert!(validate_update(&SettingsUpdate {
            config_patch: Some(json!([1])),
            ..Default::default()
        })
        .is_err());
        assert!(validate_update(&SettingsUpdate {
            sync_frequency: Some(None),
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn oversized_config_is_refused() {
        let update = SettingsUpdate {
            config_patch: Some(json!({"big": "x".repeat(MAX_CONFIG_BYTES)})),
            ..Default::default()
        };
        assert!(settings_change(&json!({}), &update).is_err());
    }

    /// Arbitrary JSON, a few levels deep (keys from a small alphabet so patches hit them).
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-e]", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        proptest::collection::btree_map("[a-e]", json_value(), 0..6)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    }

    proptest::proptest! {
        /// RFC 7396 over any stored config and any object patch: a null removes its key, any
        /// other value replaces or merges into it, untouched keys stay, applying the same
        /// patch twice changes nothing more, and nothing panics.
        #[test]
        fn merge_patches_follow_rfc_7396(current in json_value(), patch in json_object()) {
            let update = SettingsUpdate {
                config_patch: Some(patch.clone()),
                ..Default::default()
            };
            let merged = settings_change(&current, &update).unwrap().config.unwrap();
            let merged_map = merged.as_object().expect("the config stays an object");
            let patch_map = patch.as_object().unwrap();
            for (key, value) in patch_map {
                match value {
                    serde_json::Value::Null => proptest::prop_assert!(!merged_map.contains_key(key)),
                    serde_json::Value::Object(_) => {
                        proptest::prop_assert!(merged_map[key].is_object())
                    }
                    other => proptest::prop_assert_eq!(&merged_map[key], other),
                }
            }
            if let Some(before) = current.as_object() {
                for (key, value) in before {
                    if !patch_map.contains_key(key) {
                        proptest::prop_assert_eq!(&merged_map[key], value);
                    }
                }
            }
            let again = settings_change(&merged, &update).unwrap().config.unwrap();
            proptest::prop_assert_eq!(again, merged);
        }

        /// A patch whose result is over the bound is a clean field error, never a panic.
        #[test]
        fn oversized_merges_are_refused_by_size(len in 0usize..(2 * MAX_CONFIG_BYTES)) {
            let update = SettingsUpdate {
                config_patch: Some(json!({ "big": "x".repeat(len) })),
                ..Default::default()
            };
            match settings_change(&json!({}), &update) {
                Ok(change) => proptest::prop_assert!(
                    serde_json::to_vec(&change.config.unwrap()).unwrap().len() <= MAX_CONFIG_BYTES
                ),
                Err(err) => proptest::prop_assert!(matches!(err, ServiceError::InvalidArgument(_))),
            }
        }
    }
}
