//! A replay on the in-process stack, start to verdict: replay with the
//! live line, sample the stack every 100 ms for the report's series, wait
//! for the workers to drain, audit.

use std::sync::Arc;
use std::time::Duration;

use loadtest::audit::{AuditReport, audit};
use loadtest::replay::{ReplayConfig, ReplayResult};
use loadtest::report::SystemSample;
use loadtest::runner::{answers, replay_with_progress, spawn_sampler};
use loadtest::trace::TraceRecord;
use parking_lot::Mutex;

use crate::stack::Stack;

/// What a replay on the in-process stack found.
#[derive(Debug)]
pub struct StackRun {
    /// The replay.
    pub result: ReplayResult,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// The system, sampled every 100 ms.
    pub system: Vec<SystemSample>,
    /// The audit after the drain.
    pub audit: AuditReport,
}

/// Replays `records` against `stack` (with tokens signed by the stack's
/// key unless `config` names another), waits (at most `drain_timeout`)
/// for the workers to drain, and audits.
pub async fn run_on_stack(
    stack: &Arc<Stack>,
    records: &[TraceRecord],
    config: &ReplayConfig,
    quiet: bool,
    drain_timeout: Duration,
) -> anyhow::Result<StackRun> {
    let config = &ReplayConfig {
        token_key: (config.token_key.clone()).or_else(|| Some(stack.keys().token.clone())),
        ..config.clone()
    };
    let samples = Arc::new(Mutex::new(Vec::new()));
    let line = Arc::new(Mutex::new(None));
    let sampler = {
        let stack = Arc::clone(stack);
        spawn_sampler(
            move |start| {
                let stack = Arc::clone(&stack);
                async move { stack.sample(start).await }
            },
            Arc::clone(&samples),
            Arc::clone(&line),
        )
    };
    let (result, started_at_ms) = replay_with_progress(records, config, quiet, Some(line)).await?;
    if !quiet {
        eprintln!("replay done; waiting for the workers to drain (at most {drain_timeout:?})");
    }
    let drained = stack.drained(drain_timeout).await;
    // One more sample after the drain, for the series' last point.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.abort();
    drained?;
    let input = stack.audit_input(answers(records, &result)).await?;
    let system = samples.lock().clone();
    Ok(StackRun {
        result,
        started_at_ms,
        system,
        audit: audit(&input),
    })
}
