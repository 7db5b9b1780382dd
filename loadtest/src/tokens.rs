//! Buyer tokens for the trace's users, so every purchase carries
//! `Authorization: Bearer <token>` as a real buyer's would.
//!
//! The services read an HS256 JWT whose `sub` is the user, `exp` its
//! expiry (seconds since the epoch) and `aud` [`BUYER_AUDIENCE`] (their
//! `service_kit::access`). This crate depends on no service crate, so it
//! makes the same wire format here, with the same `jsonwebtoken` crate,
//! from the signing key a deployment is given (`FLASHSALE_TOKEN_KEY`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The `aud` claim the services require of a buyer token.
pub const BUYER_AUDIENCE: &str = "flashsale-buyer";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    aud: &'a str,
}

/// Why tokens cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make buyer tokens: {0}")]
pub struct TokenError(String);

/// Mints buyer tokens under one signing key.
pub struct TokenMinter {
    key: EncodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMinter(<key>)")
    }
}

impl TokenMinter {
    /// Tokens under `key`, each valid for `ttl` from when it is made.
    pub fn new(key: &str, ttl: Duration) -> Result<Self, TokenError> {
        let key =
            EncodingKey::from_secret(key.as_bytes()).map_err(|e| TokenError(e.to_string()))?;
        Ok(TokenMinter { key, ttl })
    }

    /// A token for `user`.
    pub fn mint(&self, user: &str) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: user,
            exp: now + self.ttl.as_secs().max(1),
            aud: BUYER_AUDIENCE,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| TokenError(e.to_string()))
    }

    /// One token per distinct user of `users`, in their order: the same
    /// user gets the same token every time it appears.
    pub fn for_each<'a>(
        &self,
        users: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<std::sync::Arc<str>>, TokenError> {
        let mut made: HashMap<&str, std::sync::Arc<str>> = HashMap::new();
        users
            .map(|user| {
                if let Some(token) = made.get(user) {
                    return Ok(std::sync::Arc::clone(token));
                }
                let token: std::sync::Arc<str> = self.mint(user)?.into();
                made.insert(user, std::sync::Arc::clone(&token));
                Ok(token)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keeps_one_token_and_each_token_names_its_user() {
        let minter = TokenMinter::new(
            "test key 0123456789abcdef0123456789",
            Duration::from_secs(60),
        )
        .unwrap();
        let tokens = minter.for_each(["a", "b", "a"].into_iter()).unwrap();
        assert_eq!(tokens[0], tokens[2]);
        assert_ne!(tokens[0], tokens[1]);
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_audience(&[BUYER_AUDIENCE]);
        let key =
            jsonwebtoken::DecodingKey::from_secret(b"test key 0123456789abcdef0123456789").unwrap();
        let claims: serde_json::Value =
            jsonwebtoken::decode(tokens[1].as_bytes(), &key, &validation)
                .unwrap()
                .claims;
        assert_eq!(claims["sub"], "b");
    }
}
