//! The optional quiz (答题) in front of a purchase token: a question the
//! server makes and checks, per activity, off by default. It keeps the
//! earliest bots out and spreads a sale's first second over several — a
//! buyer cannot answer before [`MIN_THINK`] has passed since asking.
//!
//! Stateless, like the tokens: the question travels with a signed
//! challenge (a JWT under the token key, `aud` = `flashsale-quiz`) naming
//! the buyer, the item, when it was asked, a nonce, and an HMAC of the
//! nonce with the right answer — so the answer is checked by recomputing
//! that HMAC, and the challenge reveals nothing of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use service_kit::access::Denied;

/// The `aud` claim of a challenge.
const QUIZ_AUDIENCE: &str = "flashsale-quiz";
/// Earliest an answer is taken after the question was asked.
pub const MIN_THINK: Duration = Duration::from_secs(1);
/// How long a challenge can be answered.
const CHALLENGE_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
struct ChallengeClaims {
    sub: String,
    item: String,
    /// Asked at, ms since the epoch.
    t: u64,
    nonce: String,
    /// HMAC of `nonce:answer`.
    h: String,
    exp: u64,
    aud: String,
}

/// A question and the challenge to send back with its answer.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    /// The question, for a person.
    pub question: String,
    /// Send back with the answer.
    pub challenge: String,
    /// Answers are taken from this long after asking.
    pub answer_after_ms: u64,
}

/// Makes and checks questions under one key. Cheap to clone.
#[derive(Clone)]
pub struct Quiz {
    keys: std::sync::Arc<QuizKeys>,
}

struct QuizKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Quiz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Quiz(<redacted>)")
    }
}

impl Quiz {
    /// Questions under `key`.
    pub fn new(key: &[u8]) -> Result<Self, String> {
        let bad = |e: jsonwebtoken::errors::Error| format!("unusable quiz key: {e}");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[QUIZ_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        Ok(Quiz {
            keys: std::sync::Arc::new(QuizKeys {
                encoding: EncodingKey::from_secret(key).map_err(bad)?,
                decoding: DecodingKey::from_secret(key).map_err(bad)?,
                validation,
            }),
        })
    }

    fn seal(&self, nonce: &str, answer: i64) -> String {
        jsonwebtoken::crypto::sign(
            format!("{nonce}:{answer}").as_bytes(),
            &self.keys.encoding,
            Algorithm::HS256,
        )
        .expect("HMAC signing cannot fail")
    }

    /// A new question for `user` about `item`.
    pub fn ask(&self, user: &str, item: &str) -> Question {
        let mut rng = rand::rng();
        let (a, b): (i64, i64) = (rng.random_range(10..100), rng.random_range(10..100));
        let nonce = format!("{:016x}", rng.random::<u64>());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = ChallengeClaims {
            sub: user.to_owned(),
            item: item.to_owned(),
            t: now.as_millis() as u64,
            h: self.seal(&nonce, a + b),
            nonce,
            exp: (now + CHALLENGE_TTL).as_secs(),
            aud: QUIZ_AUDIENCE.to_owned(),
        };
        Question {
            question: format!("What is {a} + {b}?"),
            challenge: jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &self.keys.encoding,
            )
            .expect("HS256 signing of plain claims cannot fail"),
            answer_after_ms: MIN_THINK.as_millis() as u64,
        }
    }

    /// Whether `answer` answers `challenge`, asked by `user` about `item`
    /// at least [`MIN_THINK`] ago: 403 with why otherwise.
    pub fn check(
        &self,
        user: &str,
        item: &str,
        challenge: &str,
        answer: i64,
    ) -> Result<(), Denied> {
        let claims = jsonwebtoken::decode::<ChallengeClaims>(
            challenge,
            &self.keys.decoding,
            &self.keys.validation,
        )
        .map_err(|e| {
            Denied::forbidden(
                "invalid_challenge",
                format!("the challenge does not verify: {e}"),
            )
        })?
        .claims;
        if claims.sub != user || claims.item != item {
            return Err(Denied::forbidden(
                "invalid_challenge",
                "this challenge is for another buyer or item",
            ));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now_ms < claims.t + MIN_THINK.as_millis() as u64 {
            return Err(Denied::forbidden(
                "answered_too_soon",
                format!(
                    "answers are taken {} ms after asking",
                    MIN_THINK.as_millis()
                ),
            ));
        }
        if self.seal(&claims.nonce, answer) != claims.h {
            return Err(Denied::forbidden("wrong_answer", "that is not the answer"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"quiz tests only: 0123456789abcdef0123456789";

    fn answer_of(question: &Question) -> i64 {
        let sum = question
            .question
            .trim_start_matches("What is ")
            .trim_end_matches('?');
        let (a, b) = sum.split_once(" + ").unwrap();
        a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap()
    }

    #[test]
    fn only_the_right_answer_by_the_asker_after_a_moment_passes() {
        let quiz = Quiz::new(KEY).unwrap();
        let question = quiz.ask("u-1", "sku");
        let right = answer_of(&question);
        let early = quiz
            .check("u-1", "sku", &question.challenge, right)
            .unwrap_err();
        assert_eq!(early.code, "answered_too_soon");
        std::thread::sleep(MIN_THINK + Duration::from_millis(20));
        assert_eq!(quiz.check("u-1", "sku", &question.challenge, right), Ok(()));
        assert_eq!(
            quiz.check("u-1", "sku", &question.challenge, right + 1)
                .unwrap_err()
                .code,
            "wrong_answer"
        );
        assert_eq!(
            quiz.check("u-2", "sku", &question.challenge, right)
                .unwrap_err()
                .code,
            "invalid_challenge"
        );
        assert_eq!(
            quiz.check("u-1", "other", &question.challenge, right)
                .unwrap_err()
                .code,
            "invalid_challenge"
        );
        let other = Quiz::new(b"another quiz key 0123456789abcdef0123456789").unwrap();
        assert_eq!(
            other
                .check("u-1", "sku", &question.challenge, right)
                .unwrap_err()
                .code,
            "invalid_challenge"
        );
    }
}
