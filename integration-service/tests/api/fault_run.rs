//! The fault-injection run (`bench::fault_run`, the `fault-run` program) at test size: ten
//! seconds of signed GitHub and Slack deliveries through two gateways, two consumers and token
//! callers against two real `integration-service` processes on a PostgreSQL cluster of the
//! run's own, while a replica is SIGKILLed, PostgreSQL restarts and keys rotate. Every check of
//! the full run must hold.
//!
//! PostgreSQL only (two replicas share one server): skipped, loudly, when `initdb` is not
//! installed; with `REQUIRE_POSTGRES=1` (CI) that is a failure instead. With `nats-server`
//! installed, the sink scenario runs too: every event forwarded to a broker of the run's own,
//! SIGKILLed and restarted half-way, and found on its stream exactly once.

use std::path::PathBuf;

use bench::fault_run::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_fault_run_breaks_no_promise() {
    let Some(postgres_bin) = fault_run::find_server_binaries() else {
        if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("REQUIRE_POSTGRES=1 but initdb is not installed (/usr/lib/postgresql/*/bin or PATH)");
        }
        eprintln!(
            "\n*** fault-run test SKIPPED: initdb not found (install PostgreSQL's server binaries) ***\n"
        );
        return;
    };
    let mut options = Options::ci(
        PathBuf::from(env!("CARGO_BIN_EXE_integration-service")),
        postgres_bin,
    );
    options.nats_server = fault_run::find_nats_server();
    if options.nats_server.is_none() {
        eprintln!("\n*** fault-run test: sink scenario SKIPPED, nats-server not found ***\n");
    }
    let report = fault_run::run(&options).await.expect("the run itself");
    println!("{report}");
    // The faults happened and there was traffic through them: the checks had something to
    // look at.
    assert!(report.faults.kills >= 1, "{report}");
    assert!(report.faults.postgres_restart.is_some(), "{report}");
    assert!(report.faults.rotate_keys.is_some(), "{report}");
    assert!(report.deliveries_answered_2xx >= 50, "{report}");
    assert!(report.leases >= report.deliveries_answered_2xx, "{report}");
    assert!(report.refreshes >= 2, "{report}");
    assert!(report.violations().is_empty(), "{report}");
    if options.nats_server.is_some() {
        let sink = report.sink.as_ref().expect("the sink scenario ran");
        assert!(report.faults.broker_restart.is_some(), "{report}");
        assert!(sink.events >= report.deliveries_answered_2xx, "{report}");
        assert!(sink.passed(), "{report}");
    }
}
