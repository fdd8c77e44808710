//! What the `bench/` programs share: fixtures on a fresh database (`fixtures`), the release
//! or debug binaries started as measured child processes (`stack`, `process`) and the load
//! loop (`load`). `webhook-bench` (`main.rs`) judges ingest speed; `attack` (`attack/`) runs
//! hostile clients against the same stack while it measures a legitimate one; `fault-run`
//! (`bin/fault-run.rs`) drives the fault-injection run (`fault_run`), which the service's
//! test suite also runs for a few seconds.

pub mod fault_run;
pub mod fixtures;
pub mod load;
pub mod machine;
pub mod process;
pub mod stack;
