//! Running a replay: live progress, sampling the system for the report's
//! series, and the answers the audit checks. Shared by the `loadtest`
//! command and the all-in-one binary's `demo` and `run`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::audit::QueuedAnswer;
use crate::progress::{LiveCounters, print_every_second};
use crate::replay::{Outcome, Progress, Quiet, ReplayConfig, ReplayResult, replay};
use crate::report::SystemSample;
use crate::trace::TraceRecord;

/// Now, in ms since the epoch.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Replays `records` with a line per second unless `quiet`; returns the
/// result and when it started (ms since the epoch).
pub async fn replay_with_progress(
    records: &[TraceRecord],
    config: &ReplayConfig,
    quiet: bool,
    system_line: Option<Arc<Mutex<Option<String>>>>,
) -> anyhow::Result<(ReplayResult, i64)> {
    let started_at_ms = unix_ms();
    let counters = Arc::new(LiveCounters::default());
    let printer = (!quiet).then(|| {
        let mut offered = Vec::new();
        for record in records {
            let second = ((record.at_us as f64 / config.speed) / 1e6) as usize;
            if offered.len() <= second {
                offered.resize(second + 1, 0);
            }
            offered[second] += 1;
        }
        print_every_second(Arc::clone(&counters), offered, system_line)
    });
    let progress: Arc<dyn Progress> = if quiet { Arc::new(Quiet) } else { counters };
    let result = replay(records, config, progress).await?;
    if let Some(printer) = printer {
        printer.abort();
    }
    Ok((result, started_at_ms))
}

/// How often the system is sampled: the report's interval.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(crate::report::INTERVAL_MS);

/// Samples the system every [`SAMPLE_EVERY`] with `sample` for the
/// report (and the live line), on a steady tick: a slow sample delays
/// the next one, never shifts every later one.
pub fn spawn_sampler<F, Fut>(
    sample: F,
    samples: Arc<Mutex<Vec<SystemSample>>>,
    line: Arc<Mutex<Option<String>>>,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Instant) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<SystemSample>> + Send,
{
    tokio::spawn(async move {
        let start = Instant::now();
        let mut warned = false;
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sampled = sample(start).await;
            if let Err(e) = &sampled
                && !warned
            {
                eprintln!("cannot sample the system (the report will lack its series): {e:#}");
                warned = true;
            }
            if let Ok(sample) = sampled {
                *line.lock() = Some(format!(
                    "stock left {} backlog {} written {}",
                    sample.stock_left, sample.backlog, sample.orders_written
                ));
                samples.lock().push(sample);
            }
        }
    })
}

/// The order ids the replay was answered (`queued` and `duplicate`), with
/// who asked for what.
pub fn answers(records: &[TraceRecord], result: &ReplayResult) -> Vec<QueuedAnswer> {
    result
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Queued | Outcome::Duplicate))
        .filter_map(|s| {
            let record = &records[s.index];
            Some(QueuedAnswer {
                order_id: s.order_id.clone()?,
                user: record.user.clone(),
                item: record.item.clone(),
            })
        })
        .collect()
}
