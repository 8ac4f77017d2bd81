//! Credentials: references (`env:NAME`, `file:PATH`) resolved at start into a `Secret`
//! that no `Debug` output shows.

use std::fmt;

/// A resolved credential. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A credential (`what`) from `env:NAME` or `file:PATH`, resolved now.
pub fn resolve_reference(reference: &str, what: &str) -> Result<Secret, String> {
    let value = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {path}: {e}"))?
    } else {
        return Err(format!("{what} must be `env:NAME` or `file:PATH`"));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{what} {reference} is empty"));
    }
    Ok(Secret(value.to_owned()))
}
