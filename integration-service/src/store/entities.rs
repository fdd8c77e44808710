//! SeaORM entities, one per table.

pub mod integration;
pub mod oauth_state;
pub mod organization;
pub mod organization_member;
pub mod webhook_event;
pub mod webhook_subscription;
