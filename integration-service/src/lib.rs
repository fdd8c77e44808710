//! The integrations service: organizations connect third-party tools over OAuth, tokens are
//! kept encrypted, internal callers get valid access tokens, webhooks are verified and stored.
//!
//! Layers, imported one way: `grpc` (RPC ↔ rules) → `integrations`, `access` (the rules) →
//! `store` (SeaORM). `config` is read once at start; `catalog` is data; `metrics` is recorded by
//! every layer through its typed functions.

pub mod access;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod context;
pub mod crypto;
pub mod dev_sandbox;
pub mod dev_token;
pub mod disconnect;
pub mod error;
pub mod expiring;
pub mod grpc;
pub mod integrations;
pub mod key_rotation;
pub mod metrics;
pub mod oauth;
pub mod private_fs;
pub mod providers;
pub mod server;
pub mod sink;
pub mod store;
pub mod subscriptions;
pub mod tokens;
pub mod webhook_guide;
pub mod webhook_settings;
pub mod webhooks;
