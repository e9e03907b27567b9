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
/// environment, nor a value or unknown field name the parser quotes (an
/// API key pasted in the wrong place): a TOML error is reported by its
/// message and position, not by the line of the file it is on.
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

/// A parser's message without the input it quotes: serde repeats a value
/// it rejects (`invalid type: string "…"`) and a name it does not know
/// (``unknown field `…` ``), either of which may be an API key pasted in
/// the wrong place. Both become `…`; the names it expected stay.
pub(crate) fn scrub(message: &str) -> String {
    const NAMED: [&str; 2] = ["unknown field `", "unknown variant `"];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            out.push_str("\"…\"");
            rest = &rest[1..];
            let mut escaped = false;
            let end = rest.char_indices().find(|&(_, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            });
            rest = end.map_or("", |(i, _)| &rest[i + 1..]);
        } else if let Some(prefix) = NAMED.iter().find(|p| rest.starts_with(**p)) {
            out.push_str(prefix);
            out.push_str("…`");
            rest = &rest[prefix.len()..];
            rest = rest.find('`').map_or("", |i| &rest[i + 1..]);
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_drops_what_the_parser_quotes_and_keeps_what_it_expected() {
        assert_eq!(
            scrub(r#"invalid type: string "sk-a\"b", expected u64"#),
            r#"invalid type: string "…", expected u64"#
        );
        assert_eq!(
            scrub("unknown field `sk-key`, expected one of `rate`, `pool`"),
            "unknown field `…`, expected one of `rate`, `pool`"
        );
        assert_eq!(
            scrub("unknown variant `sk-key`, expected `anthropic` or `openai`"),
            "unknown variant `…`, expected `anthropic` or `openai`"
        );
        // Unterminated: the rest goes.
        assert_eq!(scrub(r#"string "sk-unterminated"#), r#"string "…""#);
        assert_eq!(scrub("missing field `label`"), "missing field `label`");
    }
}
