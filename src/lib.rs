//! Gatehouse: a credential gateway for AI agents.
//!
//! Agents hold scoped, revocable `sg_` tokens; Gatehouse checks them, injects the real
//! credential of the target and forwards to the upstream. See `ARCHITECTURE.md` for the map.
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod api_error;
pub mod app;
pub mod audit;
pub mod change_feed;
pub mod cli;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod crypto;
pub mod domain;
pub mod egress;
pub mod guard;
pub mod manage;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod rate_limit;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod webhooks;
