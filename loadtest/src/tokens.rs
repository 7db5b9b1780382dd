//! Buyer tokens for the trace's users, so every purchase carries
//! `Authorization: Bearer <token>` as a real buyer's would, and a purchase
//! token for each purchase (`x-purchase-token`).
//!
//! The services read an HS256 JWT whose `sub` is the user, `exp` its
//! expiry (seconds since the epoch) and `aud` [`BUYER_AUDIENCE`] (their
//! `service_kit::access`). This crate depends on no service crate, so it
//! makes the same wire format here, with the same `jsonwebtoken` crate,
//! from the signing key a deployment is given (`FLASHSALE_TOKEN_KEY`).
//!
//! A purchase token is the same kind of JWT with `aud` =
//! [`PURCHASE_AUDIENCE`], the `item` and `n`, its issue time in µs. A real
//! client asks seckill for one per attempt; the replayer, which holds the
//! signing key, makes them itself — one per request, issued at increasing
//! times in trace order, as a client asking before each click would get —
//! so a replay measures the purchase, not a second request before it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The `aud` claim the services require of a buyer token.
pub const BUYER_AUDIENCE: &str = "flashsale-buyer";
/// The `aud` claim the services require of a purchase token.
pub const PURCHASE_AUDIENCE: &str = "flashsale-purchase";

#[derive(Serialize)]
struct PurchaseClaims<'a> {
    sub: &'a str,
    item: &'a str,
    n: u64,
    exp: u64,
    aud: &'a str,
}

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

    /// A purchase token for `user`'s purchase of `item`, issued at
    /// `issued_us` (µs since the epoch).
    pub fn purchase(&self, user: &str, item: &str, issued_us: u64) -> Result<String, TokenError> {
        let claims = PurchaseClaims {
            sub: user,
            item,
            n: issued_us,
            exp: issued_us / 1_000_000 + self.ttl.as_secs().max(1),
            aud: PURCHASE_AUDIENCE,
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
    fn a_purchase_token_names_its_user_item_and_issue_time() {
        let minter = TokenMinter::new(
            "test key 0123456789abcdef0123456789",
            Duration::from_secs(60),
        )
        .unwrap();
        let token = minter.purchase("u", "sku", 1_700_000_000_000_000).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_audience(&[PURCHASE_AUDIENCE]);
        validation.validate_exp = false;
        let key =
            jsonwebtoken::DecodingKey::from_secret(b"test key 0123456789abcdef0123456789").unwrap();
        let claims: serde_json::Value = jsonwebtoken::decode(token.as_bytes(), &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(
            (claims["sub"].as_str(), claims["item"].as_str()),
            (Some("u"), Some("sku"))
        );
        assert_eq!(claims["n"], 1_700_000_000_000_000u64);
    }

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
