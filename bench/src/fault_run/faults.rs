//! The faults of a run: replicas SIGKILLed and started again, PostgreSQL restarted, keys
//! rotated, the sink scenario's broker killed and started again.

use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    broker::Broker,
    checks::{self, Findings},
    cluster::Cluster,
    replicas::{Replica, ServiceEnv},
    FaultLog, Options,
};

/// Until `options.duration` has passed: a random replica SIGKILLed every `kill_every`
/// (±25 %), down for `down_for`, started again; PostgreSQL restarted at 40 % and keys rotated
/// at 60 % of the way. Ends with both replicas running.
pub(super) async fn inject_faults(
    replicas: &mut [Replica],
    env: &ServiceEnv,
    cluster: &Cluster,
    mut broker: Option<&mut Broker>,
    options: &Options,
    findings: &mut Findings,
) -> FaultLog {
    let started = Instant::now();
    let until = started + options.duration;
    let jittered = |every: Duration| every.mul_f64(rand::thread_rng().gen_range(0.75..1.25));
    let mut next_kill = options.kill_every.map(|every| started + jittered(every));
    let mut restart_at = options
        .restart_postgres
        .then(|| started + options.duration.mul_f64(0.4));
    let mut rotate_at = options
        .rotate_keys
        .then(|| started + options.duration.mul_f64(0.6));
    let mut broker_restart_at = broker
        .is_some()
        .then(|| started + options.duration.mul_f64(0.5));
    let mut log = FaultLog::default();
    while Instant::now() < until {
        for replica in replicas.iter_mut() {
            if let Some(status) = replica.exited() {
                log.unexpected_exits += 1;
                findings.violation(
                    checks::FAULTS,
                    format!("replica {} exited by itself ({status})", replica.index),
                );
                start_again(replica, env, findings).await;
            }
        }
        let now = Instant::now();
        if restart_at.is_some_and(|at| now >= at) {
            restart_at = None;
            match cluster.restart_fast().await {
                Ok(took) => log.postgres_restart = Some(took),
                Err(e) => findings.violation(checks::FAULTS, format!("pg_ctl restart: {e:#}")),
            }
        }
        if let (Some(at), Some(broker)) = (broker_restart_at, broker.as_deref_mut()) {
            if now >= at {
                broker_restart_at = None;
                let away = Instant::now();
                broker.kill().await;
                tokio::time::sleep(options.down_for.max(Duration::from_secs(2))).await;
                match broker.start().await {
                    Ok(()) => log.broker_restart = Some(away.elapsed()),
                    Err(e) => findings.violation(checks::FAULTS, format!("nats-server: {e:#}")),
                }
            }
        }
        if rotate_at.is_some_and(|at| now >= at) {
            rotate_at = None;
            match env.rotate_keys().await {
                Ok(report) => log.rotate_keys = Some(report),
                Err(e) => findings.violation(checks::FAULTS, format!("{e:#}")),
            }
        }
        if let (Some(at), Some(every)) = (next_kill, options.kill_every) {
            if now >= at {
                let victim = rand::thread_rng().gen_range(0..replicas.len());
                replicas[victim].kill().await;
                log.kills += 1;
                tokio::time::sleep(options.down_for).await;
                start_again(&mut replicas[victim], env, findings).await;
                next_kill = Some(Instant::now() + jittered(every));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for replica in replicas.iter_mut() {
        if !replica.is_running() {
            start_again(replica, env, findings).await;
        }
    }
    log
}

async fn start_again(replica: &mut Replica, env: &ServiceEnv, findings: &mut Findings) {
    for _ in 0..3 {
        match replica.start(env).await {
            Ok(()) => return,
            Err(_) => {
                replica.kill().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    findings.violation(
        checks::FAULTS,
        format!("replica {} did not start again", replica.index),
    );
}
