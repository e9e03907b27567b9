//! The one error of the configuration: where, and why.

use std::borrow::Cow;
use std::fmt;

use crate::error::InvalidConfig;

/// What kind of fault a [`ConfigError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The text is not valid TOML or JSON, or does not have the shape of a
    /// [`Config`](super::Config): a wrong type, an unknown or missing field.
    Syntax,
    /// A value has the right shape but is not allowed (a zero limit, an
    /// unknown preset, a cap below its base…).
    Invalid,
    /// The environment variable a field names is not set (or not UTF-8).
    /// It carries the variable's name — never a value.
    MissingEnv(String),
    /// The file could not be read.
    Io,
    /// The section needs a cargo feature this build does not have.
    Feature(&'static str),
}

/// A configuration that cannot be parsed or built, naming the field at
/// fault by its path in the file
/// (`rate.models.claude-haiku-4-5.input_tokens_per_minute`,
/// `pool.keys[1].api_key_env`).
///
/// Neither `reason` nor `Display` repeats a value read from the
/// environment, and a TOML error is reported by its message and position,
/// not by the line of the file it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The field's path from the top of the file (`.` for the whole file).
    pub path: String,
    /// What is wrong with it.
    pub reason: Cow<'static, str>,
    /// What kind of fault it is.
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    /// An invalid value at `path`.
    pub fn invalid(path: impl Into<String>, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
            kind: ConfigErrorKind::Invalid,
        }
    }

    pub(crate) fn syntax(path: impl Into<String>, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
            kind: ConfigErrorKind::Syntax,
        }
    }

    pub(crate) fn missing_env(path: impl Into<String>, variable: &str) -> Self {
        ConfigError {
            path: path.into(),
            reason: format!("the environment variable `{variable}` is not set").into(),
            kind: ConfigErrorKind::MissingEnv(variable.to_owned()),
        }
    }

    pub(crate) fn feature(path: impl Into<String>, feature: &'static str) -> Self {
        ConfigError {
            path: path.into(),
            reason: format!("needs the `{feature}` feature of tower-llm-resilience").into(),
            kind: ConfigErrorKind::Feature(feature),
        }
    }

    /// A builder's [`InvalidConfig`], its field placed under `section`
    /// (a builder names its setting, the file its place).
    pub(crate) fn from_builder(section: &str, e: InvalidConfig) -> Self {
        let path = if section.is_empty() {
            e.field.to_owned()
        } else {
            format!("{section}.{}", e.field)
        };
        ConfigError::invalid(path, e.reason)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration at `{}`: {}",
            self.path, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
