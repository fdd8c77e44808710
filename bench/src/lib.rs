//! What the bench programs share: fixtures (payload, databases, ports), `/proc` readings of
//! child processes, and the fault-injection run (`fault_run`), which the `fault-run` binary
//! drives for minutes and the service's test suite for a few seconds.

pub mod fault_run;
pub mod fixtures;
pub mod process;
