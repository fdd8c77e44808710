//! The one integration-test binary of `integration-service`: one module per capability, so the whole
//! service is linked once (see ARCHITECTURE.md, Testing).

mod binary;
mod clients;
mod fault_run;
mod faults;
mod grpc;
mod hostile_input;
mod ingest_batches;
mod legacy_secrets;
mod readme_quickstart;
mod retention;
mod sandbox_samples;
mod sink;
mod tokens;
mod webhook_durability;
mod webhook_events;
