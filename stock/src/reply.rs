//! A script's reply, the same whichever store ran it.
//!
//! Redis turns a Lua return value into a RESP reply by fixed rules (numbers
//! become integers, truncated; strings bulk strings; tables arrays up to
//! the first nil; `true` is 1 and `false` nil). Both stores produce this
//! type, and the parity test compares it directly.

/// A script reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nil (Lua `nil` or `false`).
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(String),
    /// A status reply (`{ok = "..."}` in Lua).
    Status(String),
    /// An array.
    Array(Vec<Reply>),
}

impl Reply {
    pub(crate) fn from_redis(value: redis::Value) -> Reply {
        match value {
            redis::Value::Nil => Reply::Nil,
            redis::Value::Int(i) => Reply::Int(i),
            redis::Value::BulkString(bytes) => {
                Reply::Bulk(String::from_utf8_lossy(&bytes).into_owned())
            }
            redis::Value::SimpleString(s) => Reply::Status(s),
            redis::Value::Okay => Reply::Status("OK".into()),
            redis::Value::Array(items) | redis::Value::Set(items) => {
                Reply::Array(items.into_iter().map(Reply::from_redis).collect())
            }
            redis::Value::Boolean(b) => Reply::Int(i64::from(b)),
            redis::Value::Double(d) => Reply::Int(d as i64),
            other => Reply::Bulk(format!("{other:?}")),
        }
    }
}
