//! The token parsers on any text: a buyer token, a purchase token and the
//! `Authorization` header are accepted only when signed under the key, and
//! anything else is a 401/403 refusal — never a panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use service_kit::access::{BuyerTokens, PurchaseTokens, bearer};

const KEY: &[u8] = b"fuzzing key only: 0123456789abcdef0123";

fn tokens() -> &'static (BuyerTokens, PurchaseTokens) {
    static TOKENS: OnceLock<(BuyerTokens, PurchaseTokens)> = OnceLock::new();
    TOKENS.get_or_init(|| {
        (
            BuyerTokens::new(KEY).unwrap(),
            PurchaseTokens::new(KEY).unwrap(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (buyers, purchases) = tokens();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(user) = buyers.verify(text) {
        // Only a token signed under the key names a buyer: random bytes
        // cannot forge one.
        panic!("an unsigned input verified as buyer {user:?}");
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(text) {
        headers.insert(http::header::AUTHORIZATION, value.clone());
        headers.insert("x-purchase-token", value);
        let _ = bearer(&headers);
        assert!(buyers.buyer(&headers).is_err());
        assert!(purchases.pass(&headers, "u", "sku").is_err());
    }
});
