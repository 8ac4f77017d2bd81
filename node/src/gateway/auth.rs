//! Virtual-key and admin-token authentication, and generation of secrets and ids.
//! Secrets are only ever hashed (SHA-256); comparisons are constant-time.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_proto::VirtualKey;
use tollgate_raft::GovState;

/// Prefix of every virtual-key secret, so leaked keys are easy to scan for.
pub const SECRET_PREFIX: &str = "tg-";
/// Random bytes in a secret: 192 bits, beyond any guessing.
const SECRET_BYTES: usize = 24;
/// Characters of a secret kept in state to tell keys apart.
pub const SHOWN_PREFIX_CHARS: usize = 8;

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The credential a client sent: `x-tollgate-key`, `x-api-key` or `Authorization: Bearer`.
pub fn presented_secret(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    // `x-tollgate-key` names the virtual key explicitly, whatever else is sent.
    if let Some(key) = header("x-tollgate-key") {
        return Ok(Some(key));
    }
    let api_key = header("x-api-key");
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    });
    match (api_key, bearer) {
        // Two different virtual keys: which one spends is not for the gateway to guess.
        (Some(a), Some(b))
            if a != b && a.starts_with(SECRET_PREFIX) && b.starts_with(SECRET_PREFIX) =>
        {
            Err(AuthError::ConflictingKeys)
        }
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// Why a caller was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send the virtual key as `x-api-key`, `x-tollgate-key` or `Authorization: Bearer`")]
    MissingKey,
    #[error("invalid API key: this virtual key is unknown or was rotated")]
    UnknownKey,
    #[error("virtual key {0} is disabled; ask your gateway admin to enable it")]
    DisabledKey(String),
    #[error("two different virtual keys in `x-api-key` and `Authorization: Bearer`; send one (or name it with `x-tollgate-key`)")]
    ConflictingKeys,
}

/// The enabled virtual key the request presents.
pub fn authenticate(state: &GovState, headers: &HeaderMap) -> Result<VirtualKey, AuthError> {
    let secret = presented_secret(headers)?.ok_or(AuthError::MissingKey)?;
    key_for_secret(state, secret)
}

/// The enabled virtual key whose secret this is.
pub fn key_for_secret(state: &GovState, secret: &str) -> Result<VirtualKey, AuthError> {
    let hash = sha256(secret);
    let key = state
        .key_by_secret_hash(&hash)
        .ok_or(AuthError::UnknownKey)?;
    // The map lookup is by hash; re-check in constant time so equality never leaks timing.
    if !bool::from(key.secret_sha256.ct_eq(&hash)) {
        return Err(AuthError::UnknownKey);
    }
    if key.disabled {
        return Err(AuthError::DisabledKey(key.id.to_string()));
    }
    Ok(key.clone())
}

/// Checks an admin bearer token against the hash of the configured one.
pub fn is_admin(headers: &HeaderMap, admin_sha256: &[u8; 32]) -> bool {
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = v.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && bool::from(sha256(token.trim()).ct_eq(admin_sha256))
}

fn random_hex(n_bytes: usize) -> String {
    let mut bytes = vec![0u8; n_bytes];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG never fails on Linux once booted; refusing to mint a weak secret
        // is the only safe answer if it does.
        tracing::error!("os random source failed");
        return String::new();
    }
    hex::encode(bytes)
}

/// A new virtual-key secret (empty only if the OS RNG failed).
pub fn generate_secret() -> Option<String> {
    let r = random_hex(SECRET_BYTES);
    (!r.is_empty()).then(|| format!("{SECRET_PREFIX}{r}"))
}

/// A new id with the given prefix, e.g. `vk_3f9a1c0d2b4e6f70`.
pub fn generate_id(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(8))
}

/// The shown prefix of a secret.
pub fn shown_prefix(secret: &str) -> String {
    secret.chars().take(SHOWN_PREFIX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], expect: Option<&str>) {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("header"),
            );
        }
        assert_eq!(presented_secret(&h), Ok(expect), "{pairs:?}");
    }

    #[test]
    fn secret_from_any_header() {
        check(&[("authorization", "Bearer tg-1")], Some("tg-1"));
        check(&[("authorization", "bearer  tg-1 ")], Some("tg-1"));
        check(&[("x-api-key", "tg-2")], Some("tg-2"));
        check(
            &[("x-tollgate-key", "tg-3"), ("x-api-key", "tg-2")],
            Some("tg-3"),
        );
        check(&[("authorization", "Basic abc")], None);
        // The same key twice, or a non-virtual-key token beside one: the virtual key.
        check(
            &[("x-api-key", "tg-2"), ("authorization", "Bearer tg-2")],
            Some("tg-2"),
        );
        check(
            &[("x-api-key", "tg-2"), ("authorization", "Bearer sso-token")],
            Some("tg-2"),
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tg-2".parse().expect("header"));
        h.insert("authorization", "Bearer tg-9".parse().expect("header"));
        assert_eq!(presented_secret(&h), Err(AuthError::ConflictingKeys));
        check(&[("authorization", "Bearer ")], None);
        check(&[], None);
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let a = generate_secret().expect("rng");
        let b = generate_secret().expect("rng");
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 2 * SECRET_BYTES);
        assert_ne!(a, b);
    }
}

/// Failed admin logins per client address: when they were last recorded in the audit
/// trail, and how many failed since (`http::admin::audit::auth_failed`).
#[derive(Default)]
pub struct FailureLimiter {
    pub seen: std::sync::Mutex<std::collections::HashMap<Option<std::net::IpAddr>, (u64, u64)>>,
}
