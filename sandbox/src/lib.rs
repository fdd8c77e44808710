//! The local sandbox provider: what the service talks to instead of GitHub, Slack or Microsoft
//! when developing and testing.
//!
//! - `fake_provider` — a fake OAuth provider on a real socket (authorize redirect, token and
//!   refresh endpoints in the standard, GitHub and Slack dialects, error modes, a request log);
//! - `fake_provider_api` — the provider APIs the service's subscriptions call, on the same socket
//!   (`fake_jira`: Jira's dynamic webhooks);
//! - `wire` — what the fakes share (the fake app's credentials, the request log's entry, a JSON
//!   reply);
//! - `samples` — signed sample deliveries (a GitHub push, a Slack event, a Graph notification)
//!   posted to the service's own webhook URLs.
//!
//! The tests start fakes on port 0 (through `test-support`, which re-exports these modules);
//! `integration-service sandbox` serves them on fixed ports for `./dev.sh` (development only).

pub mod dev;
pub mod fake_jira;
pub mod fake_provider;
pub mod fake_provider_api;
pub mod samples;
pub mod signature;
pub mod wire;
