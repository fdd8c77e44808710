//! gRPC services: each RPC authenticates through `access`, calls the rules, converts to proto.

pub mod integrations;
pub mod oauth;
pub mod webhooks;
