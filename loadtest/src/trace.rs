//! Traces: a spike written down, one request per line (NDJSON), so a run
//! can be replayed exactly — on another machine, after a fix, at another
//! speed.
//!
//! ```text
//! {"at_us":0,"user":"u17","item":"sku-1","kind":"buyer"}
//! {"at_us":1250,"user":"u17","item":"sku-1","kind":"repeat"}
//! {"at_us":1300,"user":"bot-3","item":"sku-1","kind":"bot"}
//! ```
//!
//! - `at_us`: when to send, in microseconds from the start of the run
//!   (non-decreasing down the file);
//! - `user`, `item`: who buys what (the ids seckill accepts);
//! - `kind`: `buyer` (a first click), `repeat` (the same user clicking
//!   again), `bot` (a captured request replayed as fast as possible).
//!
//! Reading checks every line and says which one is wrong and why.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// What sort of client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A first click.
    Buyer,
    /// The same user clicking again.
    Repeat,
    /// A replayed request from a script.
    Bot,
}

/// One planned request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    /// Send time, µs from the start.
    pub at_us: u64,
    /// Buyer.
    pub user: String,
    /// Item.
    pub item: String,
    /// Client kind.
    pub kind: ClientKind,
}

/// A trace that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read or written.
    #[error("trace I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a valid record.
    #[error("trace line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The trace has no records.
    #[error("the trace is empty")]
    Empty,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads a trace; blank lines are skipped.
pub fn read_trace(input: impl BufRead) -> Result<Vec<TraceRecord>, TraceError> {
    let mut records: Vec<TraceRecord> = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line_no = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TraceError::BadLine {
            line: line_no,
            reason,
        };
        let record: TraceRecord = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if !valid_id(&record.user) || !valid_id(&record.item) {
            return Err(bad(
                "user and item must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        if let Some(last) = records.last()
            && record.at_us < last.at_us
        {
            return Err(bad(format!(
                "at_us {} goes back in time (previous line: {})",
                record.at_us, last.at_us
            )));
        }
        records.push(record);
    }
    if records.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(records)
}

/// Writes a trace.
pub fn write_trace(records: &[TraceRecord], mut output: impl Write) -> Result<(), TraceError> {
    for record in records {
        serde_json::to_writer(&mut output, record).map_err(std::io::Error::other)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_round_trips_and_bad_lines_are_named() {
        let records = vec![
            TraceRecord {
                at_us: 0,
                user: "u1".into(),
                item: "sku".into(),
                kind: ClientKind::Buyer,
            },
            TraceRecord {
                at_us: 5,
                user: "u1".into(),
                item: "sku".into(),
                kind: ClientKind::Repeat,
            },
        ];
        let mut text = Vec::new();
        write_trace(&records, &mut text).unwrap();
        assert_eq!(read_trace(&text[..]).unwrap(), records);

        for (bad, line, what) in [
            ("", 0, "empty"),
            ("{\"at_us\":1}\n", 1, "missing field"),
            (
                "{\"at_us\":9,\"user\":\"a\",\"item\":\"b\",\"kind\":\"buyer\"}\n{\"at_us\":3,\"user\":\"a\",\"item\":\"b\",\"kind\":\"buyer\"}",
                2,
                "back in time",
            ),
            (
                "{\"at_us\":1,\"user\":\"a b\",\"item\":\"b\",\"kind\":\"buyer\"}",
                1,
                "characters",
            ),
            (
                "{\"at_us\":1,\"user\":\"a\",\"item\":\"b\",\"kind\":\"robot\"}",
                1,
                "unknown variant",
            ),
            (
                "{\"at_us\":1,\"user\":\"a\",\"item\":\"b\",\"kind\":\"bot\",\"x\":1}",
                1,
                "unknown field",
            ),
        ] {
            let error = read_trace(bad.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(what), "{error}");
            if line > 0 {
                assert!(error.contains(&format!("line {line}")), "{error}");
            }
        }
    }
}
