//! Layered configuration: defaults < TOML file < `LARDER_*` environment < command line.
//!
//! Each binary owns one typed `Config` (serde, `Default`, `deny_unknown_fields`) and a
//! `validate()` that names the offending field. Environment variables map onto fields
//! with `__` between levels: `LARDER_ZOOKEEPER__CONNECT` sets `zookeeper.connect`.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A configuration error, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Something that can check itself after loading.
pub trait Validate {
    /// Returns a message naming the field and the problem.
    fn validate(&self) -> Result<(), String>;
}

/// Loads `T` from its defaults, an optional TOML file, the environment (`LARDER_` + `__`
/// nesting) and finally the command-line overrides (fields left `None` are skipped).
pub fn load<T, O>(file: Option<&Path>, overrides: &O) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
    O: Serialize,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // Only variables naming a real top-level section are taken, so an unrelated
    // `LARDER_*` variable in the environment (larderctl's `LARDER_URL`, say) is not an
    // "unknown field" for every service.
    let sections: Vec<String> = match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let env = Env::prefixed("LARDER_").split("__").filter(move |key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        sections.iter().any(|s| s.eq_ignore_ascii_case(first))
    });
    figment = figment.merge(env).merge(Serialized::defaults(overrides));
    let config: T = figment
        .extract()
        .map_err(|e| ConfigError(e.to_string().replace('\n', "; ")))?;
    config.validate().map_err(ConfigError)?;
    Ok(config)
}
