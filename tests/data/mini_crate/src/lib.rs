//! A small crate used by the end-to-end tests of rcm_dask.

pub mod config;
pub mod net;

/// Parse a TOML configuration file into a [`config::Config`].
pub fn parse_toml_config(text: &str) -> Result<config::Config, String> {
    config::Config::from_toml(text)
}
