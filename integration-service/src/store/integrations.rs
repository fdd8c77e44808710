//! Queries on `integrations`, one module per concern: `records` (an organization's records,
//! settings, disconnect, lookups), `connection` (what a callback saves), `refresh_lease` (one
//! refresher at a time) and `webhook_secrets` (the secrets and the handshake window). The
//! reads of the user's routes are scoped to an organization: an id of another organization
//! simply is not found.

mod connection;
mod records;
mod refresh_lease;
mod webhook_secrets;

pub use connection::*;
pub use records::*;
pub use refresh_lease::*;
pub use webhook_secrets::*;
