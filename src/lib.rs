//! NeuroGraph: a spatial token store served over gRPC.
//!
//! Data flows one way: wire → `api` (translate, validate) → `store` (state and invariants) →
//! `model` (pure rules). Nothing below `api` knows gRPC exists.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod config;
pub mod healthcheck;
pub mod heavy;
pub mod metrics;
pub mod model;
pub mod overload;
pub mod server;
pub mod store;
pub mod telemetry;
