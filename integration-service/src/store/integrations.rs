//! Queries on `integrations`, one module per concern: `records` (an organization's records,
//! settings, disconnect, lookups), `connection` (what a callback saves), `refresh_lease` (one
//! refresher at a time), `webhook_secrets` (the secrets and the handshake window) and
//! `legacy_secrets` (the first schema's previous-secret column, until migration 19). The
//! reads of the user's routes are scoped to an organization: an id of another organization
//! simply is not found.

mod connection;
mod legacy_secrets;
mod records;
mod refresh_lease;
mod webhook_secrets;

pub use connection::*;
pub use legacy_secrets::*;
pub use records::*;
pub use refresh_lease::*;
pub use webhook_secrets::*;
