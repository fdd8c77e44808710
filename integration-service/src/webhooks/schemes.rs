//! One module per provider scheme.

pub mod asana;
pub mod bitbucket;
pub mod discord;
pub mod github;
pub mod github_app;
pub mod gitlab;
pub mod google;
pub mod jira;
pub mod linear;
pub mod microsoft;
pub mod notion;
pub mod slack;
pub mod standard_webhooks;
