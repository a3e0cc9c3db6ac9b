//! Publish and play authorization (placeholder; being written).

pub mod config;

pub use config::AuthConfig;
