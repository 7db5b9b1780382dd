//! Who is asking, for every service the same way: buyers by a signed,
//! expiring token; operators and services by keys of their own.
//!
//! **Buyer tokens** are JWTs (RFC 7519) signed with HS256 under a shared
//! key, made and read by the `jsonwebtoken` crate: a standard any identity
//! service can issue, and a format a load tester can mint without linking
//! this crate. Claims: `sub` the user id, `exp` (seconds since the epoch)
//! and `aud` = [`BUYER_AUDIENCE`]. A request carries one as
//! `Authorization: Bearer <token>`. Every service verifies it itself —
//! the gateway, and seckill and the order API when reached directly — so
//! no header a client can set (`x-user-id` and the like) is ever an
//! identity, and no upstream has to trust who forwarded a request.
//!
//! **Keys** are opaque secrets of at least [`MIN_KEY_LEN`] bytes presented
//! the same way (`Authorization: Bearer <key>`): the admin key for
//! operators' routes, the broker key for the services' broker API. They are
//! compared in constant time.
//!
//! **Purchase tokens** ([`PurchaseTokens`]) are the hidden, single-use
//! purchase path: once a sale is open a buyer asks seckill for one for
//! (user, item) and presents it as `x-purchase-token` with the purchase.
//! It is a JWT under the same key with `aud` = [`PURCHASE_AUDIENCE`], the
//! item, and `n`, its issue time in µs — increasing per user and item, which
//! is what the reservation script spends (a token no newer than the last
//! one spent is reused). Checking one needs no store round trip.
//!
//! Every failure is a [`Denied`] with the status and code a route answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The `aud` claim of a buyer token.
pub const BUYER_AUDIENCE: &str = "flashsale-buyer";
/// The `aud` claim of a purchase token.
pub const PURCHASE_AUDIENCE: &str = "flashsale-purchase";
/// The header carrying a purchase token.
pub const PURCHASE_TOKEN_HEADER: &str = "x-purchase-token";
/// Shortest key or signing secret accepted (bytes): 256 bits.
pub const MIN_KEY_LEN: usize = 32;
/// Longest token read; a real one is a few hundred bytes.
const MAX_TOKEN_LEN: usize = 4096;

/// Why a request is not let through, with the answer it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// 401 (no or bad credential) or 403 (a credential that may not do this).
    pub status: StatusCode,
    /// The JSON error's `code`.
    pub code: &'static str,
    /// The JSON error's `error`.
    pub message: String,
}

impl Denied {
    fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Denied {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: message.into(),
        }
    }

    /// 403: authenticated, but not allowed this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Denied {
            status: StatusCode::FORBIDDEN,
            code,
            message: message.into(),
        }
    }

    /// The answer as `{"error","code"}` JSON.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.message, "code": self.code})
    }
}

impl axum::response::IntoResponse for Denied {
    fn into_response(self) -> axum::response::Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The claims of a buyer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BuyerClaims {
    sub: String,
    exp: u64,
    aud: String,
}

/// Makes and checks buyer tokens under one HS256 key. Cheap to clone (a
/// router's state is cloned per request).
#[derive(Clone)]
pub struct BuyerTokens {
    keys: std::sync::Arc<SigningKeys>,
}

/// One key's encoding and decoding halves and the validation rules of one
/// audience, shared by the clones of a token maker.
struct SigningKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl SigningKeys {
    fn new(key: &[u8], audience: &str) -> Result<Self, String> {
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "a token signing key needs at least {MIN_KEY_LEN} bytes, this one has {}",
                key.len()
            ));
        }
        let bad = |e: jsonwebtoken::errors::Error| format!("unusable token signing key: {e}");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        Ok(SigningKeys {
            encoding: EncodingKey::from_secret(key).map_err(bad)?,
            decoding: DecodingKey::from_secret(key).map_err(bad)?,
            validation,
        })
    }
}

impl std::fmt::Debug for BuyerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuyerTokens(<key>)")
    }
}

impl BuyerTokens {
    /// Tokens under `key` (at least [`MIN_KEY_LEN`] bytes).
    pub fn new(key: &[u8]) -> Result<Self, String> {
        Ok(BuyerTokens {
            keys: std::sync::Arc::new(SigningKeys::new(key, BUYER_AUDIENCE)?),
        })
    }

    /// A token for `user`, valid for `ttl` from now.
    pub fn mint(&self, user: &str, ttl: Duration) -> String {
        let claims = BuyerClaims {
            sub: user.to_owned(),
            exp: unix_seconds() + ttl.as_secs().max(1),
            aud: BUYER_AUDIENCE.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The user a token names, if it is whole, signed under this key, for
    /// buyers, and not expired.
    pub fn verify(&self, token: &str) -> Result<String, Denied> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Denied::unauthorized(
                "invalid_token",
                "the buyer token is empty or too long",
            ));
        }
        let data =
            jsonwebtoken::decode::<BuyerClaims>(token, &self.keys.decoding, &self.keys.validation)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature => {
                            Denied::unauthorized("expired_token", "the buyer token has expired")
                        }
                        ErrorKind::InvalidSignature => Denied::unauthorized(
                            "invalid_token",
                            "the buyer token's signature does not verify",
                        ),
                        ErrorKind::InvalidAudience => {
                            Denied::unauthorized("invalid_token", "this token is not a buyer token")
                        }
                        _ => Denied::unauthorized(
                            "invalid_token",
                            format!("the buyer token cannot be read: {e}"),
                        ),
                    }
                })?;
        Ok(data.claims.sub)
    }

    /// The buyer a request's `Authorization: Bearer` token names.
    pub fn buyer(&self, headers: &HeaderMap) -> Result<String, Denied> {
        self.verify(bearer(headers)?)
    }
}

/// The claims of a purchase token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PurchaseClaims {
    sub: String,
    item: String,
    /// Issue time, µs since the epoch.
    n: u64,
    exp: u64,
    aud: String,
}

/// A purchase token's verified content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchasePass {
    /// When it was issued (µs since the epoch): what the reservation
    /// script spends.
    pub issued_us: u64,
}

/// Makes and checks purchase tokens under one HS256 key.
#[derive(Clone)]
pub struct PurchaseTokens {
    keys: std::sync::Arc<SigningKeys>,
    /// The last issue time handed out, so this process never issues two
    /// tokens at the same µs.
    last_issued: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PurchaseTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PurchaseTokens(<redacted>)")
    }
}

impl PurchaseTokens {
    /// Tokens under `key` (at least [`MIN_KEY_LEN`] bytes).
    pub fn new(key: &[u8]) -> Result<Self, String> {
        Ok(PurchaseTokens {
            keys: std::sync::Arc::new(SigningKeys::new(key, PURCHASE_AUDIENCE)?),
            last_issued: Default::default(),
        })
    }

    /// A token for `user`'s purchase of `item`, valid for `ttl`.
    pub fn mint(&self, user: &str, item: &str, ttl: Duration) -> String {
        use std::sync::atomic::Ordering;
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let previous = self
            .last_issued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now_us.max(last + 1))
            })
            .unwrap_or(now_us);
        let claims = PurchaseClaims {
            sub: user.to_owned(),
            item: item.to_owned(),
            n: now_us.max(previous + 1),
            exp: unix_seconds() + ttl.as_secs().max(1),
            aud: PURCHASE_AUDIENCE.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The pass in `headers` for `buyer`'s purchase of `item`: 401 without
    /// one; 403 if it is forged, expired, or for another buyer or item.
    pub fn pass(
        &self,
        headers: &HeaderMap,
        buyer: &str,
        item: &str,
    ) -> Result<PurchasePass, Denied> {
        let token = headers
            .get(PURCHASE_TOKEN_HEADER)
            .ok_or_else(|| {
                Denied::unauthorized(
                    "missing_purchase_token",
                    format!(
                        "a purchase needs a purchase token in {PURCHASE_TOKEN_HEADER} \
                         (POST /api/seckill/{{item}}/token once the sale is open)"
                    ),
                )
            })?
            .to_str()
            .map_err(|_| {
                Denied::forbidden("invalid_purchase_token", "the purchase token is not text")
            })?;
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Denied::forbidden(
                "invalid_purchase_token",
                "the purchase token is empty or too long",
            ));
        }
        let claims = jsonwebtoken::decode::<PurchaseClaims>(
            token,
            &self.keys.decoding,
            &self.keys.validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Denied::forbidden(
                "expired_purchase_token",
                "the purchase token has expired; ask for a new one",
            ),
            _ => Denied::forbidden(
                "invalid_purchase_token",
                format!("the purchase token does not verify: {e}"),
            ),
        })?
        .claims;
        if claims.sub != buyer || claims.item != item {
            return Err(Denied::forbidden(
                "not_your_purchase_token",
                "this purchase token is for another buyer or item",
            ));
        }
        Ok(PurchasePass {
            issued_us: claims.n,
        })
    }
}

/// The bearer credential of a request: 401 when there is none, or the
/// header is not `Bearer <credential>`.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Denied::unauthorized(
            "missing_credentials",
            "this route needs an Authorization: Bearer credential",
        )
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            Denied::unauthorized(
                "invalid_credentials",
                "the Authorization header must be \"Bearer <credential>\"",
            )
        })
}

/// A key that opens one set of routes: the admin key, the broker key.
#[derive(Clone)]
pub struct AccessKey {
    /// What the key is for, in error messages ("admin", "broker").
    role: &'static str,
    secret: Vec<u8>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKey({}, <redacted>)", self.role)
    }
}

impl AccessKey {
    /// The `role` key `secret` (at least [`MIN_KEY_LEN`] bytes).
    pub fn new(role: &'static str, secret: &str) -> Result<Self, String> {
        if secret.len() < MIN_KEY_LEN {
            return Err(format!(
                "the {role} key needs at least {MIN_KEY_LEN} characters, this one has {}",
                secret.len()
            ));
        }
        Ok(AccessKey {
            role,
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// The secret, for a client that presents it.
    pub fn secret(&self) -> &str {
        std::str::from_utf8(&self.secret).expect("made from a str")
    }

    /// Whether `headers` present this key: 401 without a credential, 403
    /// with another one.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let presented = bearer(headers)?;
        if bool::from(presented.as_bytes().ct_eq(&self.secret)) {
            Ok(())
        } else {
            Err(Denied::forbidden(
                "forbidden",
                format!("this route needs the {} key", self.role),
            ))
        }
    }
}

/// Middleware for the routes `key` opens (the admin routes, `/metrics`):
/// `axum::middleware::from_fn_with_state(Arc::new(key), require_key)`,
/// as a route layer so nothing is read before the key is checked.
pub async fn require_key(
    axum::extract::State(key): axum::extract::State<std::sync::Arc<AccessKey>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match key.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => denied.into_response(),
    }
}

/// The variable holding the buyer-token signing key.
pub const TOKEN_KEY_VAR: &str = "FLASHSALE_TOKEN_KEY";
/// The variable holding the admin key.
pub const ADMIN_KEY_VAR: &str = "FLASHSALE_ADMIN_KEY";
/// The variable holding the broker key.
pub const BROKER_KEY_VAR: &str = "FLASHSALE_BROKER_KEY";

/// The secrets a service holds: the buyer-token signing key and the admin
/// key always, the broker key where the service uses or serves the broker.
/// Each is at least [`MIN_KEY_LEN`] characters.
#[derive(Clone)]
pub struct Keys {
    /// Signs and verifies buyer tokens (HS256).
    pub token: String,
    /// Opens the admin routes.
    pub admin: String,
    /// Opens the broker's API.
    pub broker: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Fresh random keys, every call its own: for a development stack
    /// that prints them, or a test that holds them. There is no default key.
    pub fn random() -> Keys {
        Keys {
            token: random_key(),
            admin: random_key(),
            broker: Some(random_key()),
        }
    }

    /// The keys from the environment (`FLASHSALE_TOKEN_KEY`,
    /// `FLASHSALE_ADMIN_KEY` and, when `with_broker`,
    /// `FLASHSALE_BROKER_KEY`): a deployed service refuses to start without
    /// them, naming the one missing.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        with_broker: bool,
    ) -> Result<Keys, String> {
        let read = |var: &str| -> Result<String, String> {
            let value = lookup(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!(
                    "{var} is not set: a deployed service refuses to start without it \
                     (at least {MIN_KEY_LEN} characters, e.g. `openssl rand -hex 32`)"
                )
            })?;
            if value.len() < MIN_KEY_LEN {
                return Err(format!(
                    "{var} is too short: at least {MIN_KEY_LEN} characters, it has {}",
                    value.len()
                ));
            }
            Ok(value)
        };
        Ok(Keys {
            token: read(TOKEN_KEY_VAR)?,
            admin: read(ADMIN_KEY_VAR)?,
            broker: with_broker.then(|| read(BROKER_KEY_VAR)).transpose()?,
        })
    }

    /// Buyer tokens under the signing key.
    pub fn buyer_tokens(&self) -> Result<BuyerTokens, String> {
        BuyerTokens::new(self.token.as_bytes())
    }

    /// Purchase tokens under the signing key.
    pub fn purchase_tokens(&self) -> Result<PurchaseTokens, String> {
        PurchaseTokens::new(self.token.as_bytes())
    }

    /// The admin key.
    pub fn admin_key(&self) -> Result<AccessKey, String> {
        AccessKey::new("admin", &self.admin)
    }

    /// The broker key, for a service that uses the broker.
    pub fn broker_key(&self) -> Result<&str, String> {
        self.broker
            .as_deref()
            .ok_or_else(|| format!("{BROKER_KEY_VAR} is not set"))
    }
}

/// A random key of 64 hex characters, for a development stack that prints
/// it (never a default: every run gets its own).
pub fn random_key() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const KEY: &[u8] = b"test key: 0123456789abcdef0123456789abcdef";

    fn with_bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_minted_token_names_its_buyer_and_nothing_else_passes() {
        let tokens = BuyerTokens::new(KEY).unwrap();
        let token = tokens.mint("u-1", Duration::from_secs(60));
        assert_eq!(tokens.buyer(&with_bearer(&token)).unwrap(), "u-1");

        let other = BuyerTokens::new(b"another key, 0123456789abcdef0123456789").unwrap();
        let forged = other.mint("u-1", Duration::from_secs(60));
        assert_eq!(tokens.verify(&forged).unwrap_err().code, "invalid_token");

        let mut parts: Vec<&str> = token.split('.').collect();
        let swapped = other.mint("u-2", Duration::from_secs(60));
        let swapped_claims = swapped.split('.').nth(1).unwrap().to_owned();
        parts[1] = &swapped_claims;
        assert!(tokens.verify(&parts.join(".")).is_err());

        for bad in ["", "x", "a.b.c", "...", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            let denied = tokens.verify(bad).unwrap_err();
            assert_eq!(denied.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        assert_eq!(
            bearer(&HeaderMap::new()).unwrap_err().code,
            "missing_credentials"
        );
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        assert_eq!(bearer(&basic).unwrap_err().code, "invalid_credentials");
    }

    #[test]
    fn an_expired_token_or_one_for_another_audience_is_refused() {
        let tokens = BuyerTokens::new(KEY).unwrap();
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &BuyerClaims {
                sub: "u".into(),
                exp: unix_seconds() - 5,
                aud: BUYER_AUDIENCE.into(),
            },
            &EncodingKey::from_secret(KEY).unwrap(),
        )
        .unwrap();
        assert_eq!(tokens.verify(&expired).unwrap_err().code, "expired_token");
        let elsewhere = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &BuyerClaims {
                sub: "u".into(),
                exp: unix_seconds() + 60,
                aud: "another-service".into(),
            },
            &EncodingKey::from_secret(KEY).unwrap(),
        )
        .unwrap();
        assert!(tokens.verify(&elsewhere).is_err());
        let unsigned = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            expired.split('.').nth(1).unwrap()
        );
        assert!(tokens.verify(&unsigned).is_err());
    }

    fn with_pass(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(PURCHASE_TOKEN_HEADER, HeaderValue::from_str(token).unwrap());
        headers
    }

    #[test]
    fn a_purchase_token_is_for_one_buyer_and_item_and_issued_later_each_time() {
        let tokens = PurchaseTokens::new(KEY).unwrap();
        let first = tokens.mint("u-1", "sku", Duration::from_secs(60));
        let second = tokens.mint("u-1", "sku", Duration::from_secs(60));
        let a = tokens.pass(&with_pass(&first), "u-1", "sku").unwrap();
        let b = tokens.pass(&with_pass(&second), "u-1", "sku").unwrap();
        assert!(b.issued_us > a.issued_us, "{a:?} then {b:?}");
        for (buyer, item) in [("u-2", "sku"), ("u-1", "other")] {
            let denied = tokens.pass(&with_pass(&first), buyer, item).unwrap_err();
            assert_eq!(
                (denied.status, denied.code),
                (StatusCode::FORBIDDEN, "not_your_purchase_token")
            );
        }
        let missing = tokens.pass(&HeaderMap::new(), "u-1", "sku").unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        let other_key = PurchaseTokens::new(b"another key, 0123456789abcdef0123456789").unwrap();
        let forged = other_key.mint("u-1", "sku", Duration::from_secs(60));
        assert_eq!(
            tokens
                .pass(&with_pass(&forged), "u-1", "sku")
                .unwrap_err()
                .code,
            "invalid_purchase_token"
        );
        // A buyer token is not a purchase token, nor the reverse.
        let buyer = BuyerTokens::new(KEY)
            .unwrap()
            .mint("u-1", Duration::from_secs(60));
        assert!(tokens.pass(&with_pass(&buyer), "u-1", "sku").is_err());
        assert!(BuyerTokens::new(KEY).unwrap().verify(&first).is_err());
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &PurchaseClaims {
                sub: "u-1".into(),
                item: "sku".into(),
                n: 1,
                exp: unix_seconds() - 5,
                aud: PURCHASE_AUDIENCE.into(),
            },
            &EncodingKey::from_secret(KEY).unwrap(),
        )
        .unwrap();
        assert_eq!(
            tokens
                .pass(&with_pass(&expired), "u-1", "sku")
                .unwrap_err()
                .code,
            "expired_purchase_token"
        );
    }

    #[test]
    fn a_deployed_service_needs_every_key_it_uses() {
        let long = "k".repeat(MIN_KEY_LEN);
        let all = |var: &str| {
            Some(if var == ADMIN_KEY_VAR {
                long.clone()
            } else {
                long.replace('k', "j")
            })
        };
        let keys = Keys::from_lookup(all, true).unwrap();
        assert!(keys.broker.is_some() && keys.buyer_tokens().is_ok() && keys.admin_key().is_ok());
        let error = Keys::from_lookup(|var| (var != ADMIN_KEY_VAR).then(|| long.clone()), false)
            .unwrap_err();
        assert!(error.contains(ADMIN_KEY_VAR), "{error}");
        let error = Keys::from_lookup(|var| (var != BROKER_KEY_VAR).then(|| long.clone()), true)
            .unwrap_err();
        assert!(error.contains(BROKER_KEY_VAR), "{error}");
        assert!(
            Keys::from_lookup(|var| (var != BROKER_KEY_VAR).then(|| long.clone()), false).is_ok()
        );
        let error = Keys::from_lookup(|_| Some("short".into()), false).unwrap_err();
        assert!(error.contains("too short"), "{error}");
        assert!(!format!("{:?}", Keys::random()).contains(&Keys::random().admin));
    }

    #[test]
    fn keys_are_long_and_checked_exactly() {
        assert!(AccessKey::new("admin", "short").is_err());
        assert!(BuyerTokens::new(b"short").is_err());
        let key = AccessKey::new("admin", &random_key()).unwrap();
        assert_eq!(key.check(&with_bearer(key.secret())), Ok(()));
        let wrong = key.check(&with_bearer(&random_key())).unwrap_err();
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        let missing = key.check(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_ne!(random_key(), random_key());
    }
}
