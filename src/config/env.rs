//! Secrets read from the environment variables a file names, through a
//! lookup the caller may replace (tests need no global environment).

use std::fmt;

use super::ConfigError;

/// A value read from the environment: kept only until a layer takes it,
/// never printed.
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The lookup a build reads variables through.
pub(crate) struct Env<'a> {
    lookup: &'a mut dyn FnMut(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(lookup: &'a mut dyn FnMut(&str) -> Option<String>) -> Self {
        Env { lookup }
    }

    /// The variable `name`, named by the field at `path`: set and not
    /// empty, or an error naming the field and the variable — but a name
    /// with lower-case letters is not repeated: it may be an API key
    /// pasted in the variable's place (variables are upper case by
    /// custom), and the error then names only the field.
    pub(crate) fn secret(&mut self, path: &str, name: &str) -> Result<Secret, ConfigError> {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ConfigError::invalid(
                path,
                "an environment variable name: letters, digits and '_'",
            ));
        }
        match (self.lookup)(name) {
            Some(v) if !v.is_empty() => Ok(Secret(v)),
            _ if name.bytes().any(|b| b.is_ascii_lowercase()) => Err(ConfigError::invalid(
                path,
                "the environment variable this field names is unset or empty \
                 (a name with lower-case letters is not repeated: it may be a key)",
            )),
            Some(_) => Err(ConfigError::invalid(
                path,
                format!("the environment variable `{name}` is empty"),
            )),
            None => Err(ConfigError::missing_env(path, name)),
        }
    }
}

/// The process environment (`std::env::var`; a variable that is not
/// UTF-8 counts as unset).
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
