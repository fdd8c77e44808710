//! Process plumbing both binaries share, so the gateway and the service cannot drift apart:
//! how a process stops (`shutdown`), how it logs (`telemetry`), how its allocator keeps large
//! buffers (`memory`), the conventions of their Prometheus metrics (`metrics`), and the names
//! the two sides agree on over the wire (`wire`).
//!
//! Invariant: depends on no crate of ours and holds no rules — only what both `main`s and the
//! two error mappings need to agree on.

pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod wire;
