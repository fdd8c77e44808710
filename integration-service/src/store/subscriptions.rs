//! Queries on `webhook_subscriptions`, one module per concern: `reads` (users' reads scoped by
//! organization, lookups, gauges), `lease` (a subscription's life under its lease) and
//! `renewal` (the renewer's queries, across organizations).
//!
//! Invariant: a provider call about a subscription happens only while its lease (owner +
//! expiry, compare-and-set, committed at once) is held; every write after the call is
//! conditional on still holding it, and gives it back.

mod lease;
mod reads;
mod renewal;

pub use lease::*;
pub use reads::*;
pub use renewal::*;
