//! Configuration: `conf/runtime.toml`, overridden by environment variables
//! named `DOCKYARD_<SECTION>_<KEY>` (or `DOCKYARD_<KEY>` for top-level keys),
//! e.g. `DOCKYARD_DB_URI` or `DOCKYARD_DOCKYARD_PATH`.
//!
//! Every key has a default, unknown keys are errors, and every error names
//! the key it is about.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `dev` logs at debug level by default; `prod` at info.
    pub runmode: RunMode,
    /// Only `http` for now; put nginx in front for TLS.
    pub listenmode: ListenMode,
    pub log: LogConfig,
    pub db: DbConfig,
    pub dockyard: DockyardConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    #[default]
    Dev,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    #[default]
    Http,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `dockyard=debug,info`; empty
    /// means by run mode.
    pub level: String,
    /// Log file; empty means standard error.
    pub filepath: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbDriver {
    #[default]
    Sqlite,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    pub driver: DbDriver,
    /// For `sqlite`, a file path (relative to the working directory) or a
    /// `sqlite://` URI; empty means `<dockyard.path>/dockyard.db`.
    pub uri: String,
    /// Connections in the pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockyardConfig {
    /// Data directory: blobs, upload data, the embedded database.
    pub path: PathBuf,
    /// Blob storage backend.
    pub backend: Backend,
    /// Keep tag, manifest and blob-link lookups in memory. Only honoured
    /// when this process is the only writer of the metadata (SQLite).
    pub cachable: bool,
    /// Upload sessions idle for longer than this many seconds are removed.
    pub upload_expiry: u64,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runmode: RunMode::Dev,
            listenmode: ListenMode::Http,
            log: LogConfig::default(),
            db: DbConfig::default(),
            dockyard: DockyardConfig::default(),
        }
    }
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            driver: DbDriver::Sqlite,
            uri: String::new(),
            max_connections: 4,
        }
    }
}

impl Default for DockyardConfig {
    fn default() -> Self {
        DockyardConfig {
            path: PathBuf::from("data"),
            backend: Backend::Local,
            cachable: true,
            upload_expiry: 24 * 3600,
            max_manifest_size: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

const ENV_PREFIX: &str = "DOCKYARD_";

impl Config {
    /// Reads `path` (a missing file at the default path means defaults),
    /// applies environment overrides and validates the result.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Config::from_parts(path, &text, &env)
    }

    fn from_parts(
        path: &Path,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        apply_env(&mut table, env)?;
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_err(e.to_string().trim().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.dockyard.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "dockyard.path",
                message: "must not be empty".into(),
            });
        }
        if self.db.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "db.max_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.dockyard.max_manifest_size < 1024 {
            return Err(ConfigError::Invalid {
                key: "dockyard.max_manifest_size",
                message: "must be at least 1024 bytes".into(),
            });
        }
        if self.dockyard.upload_expiry < 60 {
            return Err(ConfigError::Invalid {
                key: "dockyard.upload_expiry",
                message: "must be at least 60 seconds".into(),
            });
        }
        if !self.log.level.is_empty() {
            tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
                ConfigError::Invalid {
                    key: "log.level",
                    message: e.to_string(),
                }
            })?;
        }
        Ok(())
    }

    /// The SQLite database URI the `[db]` section resolves to.
    pub fn sqlite_uri(&self) -> String {
        let uri = &self.db.uri;
        if uri.starts_with("sqlite:") {
            uri.clone()
        } else if uri.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.dockyard.path.join("dockyard.db").display()
            )
        } else {
            format!("sqlite://{uri}?mode=rwc")
        }
    }
}

/// Applies `DOCKYARD_*` variables onto the parsed file. Keys are matched
/// against the known configuration (so section and key names containing
/// underscores resolve unambiguously); values are typed like the default.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    for (var, raw) in env {
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let mut target = None;
        for (key, value) in &defaults {
            match value {
                toml::Value::Table(section) => {
                    for (sub, sub_value) in section {
                        if name == format!("{key}_{sub}") {
                            target = Some((Some(key.clone()), sub.clone(), sub_value.clone()));
                        }
                    }
                }
                other if name == *key => target = Some((None, key.clone(), other.clone())),
                _ => {}
            }
        }
        let Some((section, key, default)) = target else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "does not name a configuration key".into(),
            });
        };
        let value = match default {
            toml::Value::Boolean(_) => match raw.as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!("{raw:?} is not a boolean"),
                    });
                }
            },
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.parse().map_err(|_| ConfigError::Env {
                    var: var.clone(),
                    message: format!("{raw:?} is not an integer"),
                })?)
            }
            _ => toml::Value::String(raw.clone()),
        };
        let dest = match section {
            Some(s) => table
                .entry(s.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::Env {
                    var: var.clone(),
                    message: format!("[{s}] in the config file is not a table"),
                })?,
            None => &mut *table,
        };
        dest.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(Path::new("t.toml"), text, &env)
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../conf/runtime.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.db.driver, DbDriver::Sqlite);
        assert_eq!(c.dockyard.backend, Backend::Local);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[dockyard]\npathh = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pathh"), "{e}");
        let e = load("[db]\ndriver = \"oracle\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("driver"), "{e}");
        let e = load("[dockyard]\nupload_expiry = 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dockyard.upload_expiry"), "{e}");
        let e = load("[log]\nlevel = \"[[[\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        let c = load(
            "[dockyard]\npath = \"a\"\n",
            &[
                ("DOCKYARD_DOCKYARD_PATH", "b"),
                ("DOCKYARD_DB_MAX_CONNECTIONS", "3"),
                ("DOCKYARD_RUNMODE", "prod"),
                ("DOCKYARD_DOCKYARD_CACHABLE", "false"),
            ],
        )
        .unwrap();
        assert_eq!(c.dockyard.path, PathBuf::from("b"));
        assert_eq!(c.db.max_connections, 3);
        assert_eq!(c.runmode, RunMode::Prod);
        assert!(!c.dockyard.cachable);
        let e = load("", &[("DOCKYARD_DB_MAX_CONNECTIONS", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOCKYARD_DB_MAX_CONNECTIONS"), "{e}");
        let e = load("", &[("DOCKYARD_NOPE", "x")]).unwrap_err().to_string();
        assert!(e.contains("DOCKYARD_NOPE"), "{e}");
    }
}
