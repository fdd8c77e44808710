//! The integrations service: organizations connect third-party tools over OAuth, tokens are
//! kept encrypted, internal callers get valid access tokens, webhooks are verified and stored.
//!
//! Layers, imported one way: `grpc` (RPC ↔ rules) → `integrations`, `access` (the rules) →
//! `store` (SeaORM). `config` is read once at start; `catalog` is data; `metrics` is recorded by
//! every layer through its typed functions.

#![warn(unreachable_pub)]

mod access;
mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod context;
pub mod crypto;
pub mod dev_sandbox;
pub mod dev_token;
mod disconnect;
mod error;
mod expiring;
mod grpc;
mod integrations;
pub mod key_rotation;
mod metrics;
pub mod migrate;
pub mod oauth;
mod private_fs;
mod providers;
pub mod server;
pub mod sink;
pub mod store;
mod subscriptions;
pub mod tokens;
mod webhook_guide;
mod webhook_settings;
pub mod webhooks;
