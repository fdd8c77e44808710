//! The README's quickstart, run as written, so the README cannot drift from the product: every
//! fenced `sh` block under `## Quickstart` runs in one bash session (variables carry over, as
//! in a terminal) in a fresh folder, against the real `integration-service` binary — the
//! sandbox provider and the service started as `./dev.sh` starts them, on free ports — and
//! each block's output must match the `text` block that follows it (`...` matches anything).
//! The gateway runs in-process (its binary is not reachable from this crate's tests). The
//! `./dev.sh` block itself is not run: its expected lines must be ones `dev.sh` prints.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

const README: &str = include_str!("../../../README.md");
const DEV_SH: &str = include_str!("../../../dev.sh");
const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");
/// The whole quickstart's budget (a consume waits up to 10 s for its event).
const TIMEOUT: Duration = Duration::from_secs(180);

/// One `sh` block of the quickstart and the `text` block after it.
#[derive(Debug)]
struct Step {
    code: String,
    expected: Option<String>,
}

/// The fenced blocks under `## Quickstart`, up to the next `## ` heading.
fn quickstart(readme: &str) -> Vec<Step> {
    let start = readme
        .find("\n## Quickstart\n")
        .expect("the README has a ## Quickstart section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let body = body.join("\n");
        match info.trim() {
            "sh" => steps.push(Step {
                code: body,
                expected: None,
            }),
            "text" => {
                let step = steps
                    .last_mut()
                    .filter(|s| s.expected.is_none())
                    .expect("a text block follows an sh block");
                step.expected = Some(body);
            }
            other => panic!("unexpected fenced block {other:?} in the quickstart"),
        }
    }
    steps
}

/// Whether `actual` matches `pattern`, where each `...` stands for any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let fragments: Vec<&str> = pattern.split("...").collect();
    let (first, last) = (fragments[0], fragments[fragments.len() - 1]);
    if fragments.len() == 1 {
        return actual == pattern;
    }
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for fragment in &fragments[1..fragments.len() - 1] {
        match rest.find(fragment) {
            Some(at) => rest = &rest[at + fragment.len()..],
            None => return false,
        }
    }
    true
}

/// Expected lines match actual lines one for one; a line that is only `...` skips any number.
fn output_matches(expected: &str, actual: &str) -> bool {
    fn go(expected: &[&str], actual: &[&str]) -> bool {
        match expected.split_first() {
            None => actual.is_empty(),
            Some((&"...", rest)) => (0..=actual.len()).any(|skip| go(rest, &actual[skip..])),
            Some((pattern, rest)) => actual
                .split_first()
                .is_some_and(|(line, more)| line_matches(pattern, line) && go(rest, more)),
        }
    }
    let expected: Vec<&str> = expected.lines().map(str::trim_end).collect();
    let actual: Vec<&str> = actual.lines().map(str::trim_end).collect();
    go(&expected, &actual)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Three consecutive free ports, for the sandbox's GitHub, Slack and Microsoft.
fn free_port_run() -> u16 {
    for _ in 0..100 {
        let first = free_port();
        let held: Vec<_> = (0..3)
            .map_while(|i| first.checked_add(i))
            .map_while(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if held.len() == 3 {
            return first;
        }
    }
    panic!("no three consecutive free ports");
}

async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {port}");
}

/// The binary in `dir` with none of the developer's environment but PATH and HOME.
fn binary(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// What `./dev.sh` starts: the sandbox, then the service pointed at it, then the gateway.
struct Stack {
    _children: Vec<Child>,
    http: String,
    grpc: String,
    sandbox: String,
}

async fn start_stack(dir: &Path) -> Stack {
    let sandbox_port = free_port_run();
    let sandbox_addr = format!("127.0.0.1:{sandbox_port}");
    let sandbox = binary(dir)
        .args(["sandbox", "serve", "--addr", &sandbox_addr])
        .spawn()
        .expect("start the sandbox");
    wait_for_port(sandbox_port + 2, "the sandbox").await;

    let (grpc_port, http_port) = (free_port(), free_port());
    let http = format!("127.0.0.1:{http_port}");
    let sandbox_env =
        sandbox::dev::env(sandbox_addr.parse().expect("an address")).expect("the sandbox env");
    let service = binary(dir)
        .arg("serve")
        .envs(sandbox_env)
        .env("GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("PUBLIC_API_URL", format!("http://{http}"))
        .env("METRICS_ADDR", "off")
        .spawn()
        .expect("start the service");
    wait_for_port(grpc_port, "the service").await;

    let config = rest_gateway::config::GatewayConfig::from_lookup(|name| match name {
        "INTEGRATION_SERVICE_URL" => Some(format!("http://127.0.0.1:{grpc_port}")),
        _ => None,
    })
    .expect("gateway config");
    let listener = tokio::net::TcpListener::bind(&http)
        .await
        .expect("bind the gateway");
    tokio::spawn(rest_gateway::server::serve(
        rest_gateway::Gateway::new(config).expect("gateway"),
        listener,
        std::future::pending(),
    ));
    Stack {
        _children: vec![sandbox, service],
        http,
        grpc: format!("127.0.0.1:{grpc_port}"),
        sandbox: sandbox_addr,
    }
}

/// The README's addresses and paths, as this run has them.
fn localize(text: &str, stack: &Stack, bin_dir: &str) -> String {
    text.replace("127.0.0.1:8080", &stack.http)
        .replace("127.0.0.1:50051", &stack.grpc)
        .replace("127.0.0.1:8070", &stack.sandbox)
        .replace("target/debug/", bin_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_runs_as_written() {
    let steps = quickstart(README);
    let (start, steps) = steps.split_first().expect("the quickstart has steps");
    assert_eq!(
        start.code.trim(),
        "./dev.sh",
        "the quickstart starts with ./dev.sh"
    );
    for line in start.expected.as_deref().unwrap_or_default().lines() {
        let line = line
            .replace("127.0.0.1:8080", "$http_addr")
            .replace("127.0.0.1:8070", "$sandbox_addr");
        assert!(
            line == "..." || DEV_SH.contains(&line),
            "the README says ./dev.sh prints {line:?}, dev.sh does not"
        );
    }
    assert!(steps.len() >= 6, "connect, deliver and consume are shown");

    let dir: PathBuf = std::env::temp_dir().join(format!(
        "readme-quickstart-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(dir.join(".out")).expect("a folder");
    let stack = start_stack(&dir).await;
    let bin_dir = format!(
        "{}/",
        Path::new(BINARY)
            .parent()
            .expect("the binary's folder")
            .display()
    );

    let out = dir.join(".out");
    let mut script = String::from("set -euo pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!(
            "echo {i} > '{o}/current'; exec > '{o}/{i}.out' 2> '{o}/{i}.err'\n{}\n",
            localize(&step.code, &stack, &bin_dir),
            o = out.display(),
        ));
    }
    script.push_str(&format!("echo done > '{}/current'\n", out.display()));
    let mut bash = Command::new("bash");
    bash.args(["--noprofile", "--norc", "-c", &script])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(TIMEOUT, bash.status())
        .await
        .unwrap_or_else(|_| panic!("the quickstart took longer than {TIMEOUT:?}"))
        .expect("bash runs (is it installed?)");

    let read = |name: String| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let current = read("current".into()).trim().to_string();
    for (i, step) in steps.iter().enumerate() {
        let (stdout, stderr) = (read(format!("{i}.out")), read(format!("{i}.err")));
        let report = || {
            format!(
                "the quickstart's sh block {} (after ./dev.sh):\n{}\n--- stdout:\n{stdout}--- stderr:\n{stderr}",
                i + 1,
                step.code
            )
        };
        if current == i.to_string() {
            panic!("failed ({status}): {}", report());
        }
        if let Some(expected) = &step.expected {
            let expected = localize(expected, &stack, &bin_dir);
            assert!(
                output_matches(&expected, &stdout),
                "output differs from the README's:\n{expected}\n{}",
                report()
            );
        }
    }
    assert!(status.success(), "bash: {status}, last step {current}");
    assert_eq!(current, "done");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_patterns() {
    assert!(line_matches("HTTP 200 {...}", "HTTP 200 {\"a\":1}"));
    assert!(!line_matches("HTTP 200 {...}", "HTTP 401 {\"a\":1}"));
    assert!(line_matches("a...b...c", "a-b-c"));
    assert!(!line_matches("a...b...c", "a-c"));
    assert!(line_matches("exact", "exact"));
    assert!(!line_matches("exact", "exactly"));
    assert!(output_matches("one\n...\nfour", "one\ntwo\nthree\nfour"));
    assert!(!output_matches("one\nfour", "one\ntwo\nfour"));
    assert!(!output_matches("one", ""));
}
