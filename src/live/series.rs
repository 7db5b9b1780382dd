//! The live page's rolling window: a sample of the stack every
//! [`SAMPLE_INTERVAL`], turned into per-second rates against the one
//! before, the last [`WINDOW`] of them kept — so a page opened in the
//! middle of a spike draws the minute behind it at once, and the server's
//! memory stays at [`CAPACITY`] points whoever watches.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::answers::{AnswerTotals, answer_totals};
use super::{LiveState, state_of};
use crate::stack::Stack;

/// How often the stack is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How far back the window reaches.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Points kept: one window's worth.
pub const CAPACITY: usize = (WINDOW.as_millis() / SAMPLE_INTERVAL.as_millis()) as usize;

/// Answers per second by outcome, over one sampling interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AnswerRates {
    /// Queued purchases per second.
    pub queued: f64,
    /// Sold-out answers per second.
    pub sold_out: f64,
    /// Duplicate answers per second.
    pub duplicate: f64,
    /// Rate-limited or shed answers per second.
    pub limited: f64,
    /// Failures per second.
    pub error: f64,
    /// Other answers per second.
    pub other: f64,
}

impl AnswerRates {
    fn between(before: &AnswerTotals, after: &AnswerTotals, seconds: f64) -> AnswerRates {
        let rate = |b: u64, a: u64| a.saturating_sub(b) as f64 / seconds;
        AnswerRates {
            queued: rate(before.queued, after.queued),
            sold_out: rate(before.sold_out, after.sold_out),
            duplicate: rate(before.duplicate, after.duplicate),
            limited: rate(before.limited, after.limited),
            error: rate(before.error, after.error),
            other: rate(before.other, after.other),
        }
    }
}

/// One point of the charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// When it was sampled (ms since the epoch).
    pub at_ms: i64,
    /// Answers per second by outcome since the point before (`None` when
    /// answers are not counted in this process).
    pub answers_per_s: Option<AnswerRates>,
    /// Orders written per second since the point before.
    pub orders_per_s: f64,
    /// Orders waiting in the broker (and open transactions).
    pub backlog: u64,
    /// Units left in the store, over every item.
    pub stock_left: i64,
}

/// What the sampler last saw, cumulative, to rate the next sample by.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    orders_written: u64,
    answers: Option<AnswerTotals>,
}

/// The latest state, with the answers so far.
#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    /// The stack's state at the last sample.
    #[serde(flatten)]
    pub state: LiveState,
    /// Answers by outcome so far (the process's).
    pub answers: Option<AnswerTotals>,
}

/// The window, shared by the sampler and the page's routes.
#[derive(Debug, Default)]
pub struct Series {
    points: VecDeque<Point>,
    latest: Option<Latest>,
    mark: Option<Mark>,
    /// Why the last sample failed, until one succeeds.
    last_error: Option<String>,
    /// Why answers are not counted, if they are not.
    answers_missing: Option<String>,
}

/// What `/live/series` answers.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    /// The sampling interval (ms).
    pub interval_ms: u64,
    /// How far back the window reaches (ms).
    pub window_ms: u64,
    /// The points after the `since` asked for, oldest first.
    pub points: Vec<Point>,
    /// The latest sample, if any yet.
    pub latest: Option<Latest>,
    /// Why the last sample failed, if it did.
    pub sample_error: Option<String>,
    /// Why answers are not counted, if they are not.
    pub answers_missing: Option<String>,
}

impl Series {
    /// Adds a sample of the stack taken `at`; the first only sets the
    /// mark the next is rated against.
    fn record(&mut self, at: Instant, state: LiveState, answers: Result<AnswerTotals, String>) {
        let (answers, missing) = match answers {
            Ok(totals) => (Some(totals), None),
            Err(why) => (None, Some(why)),
        };
        if let Some(mark) = self.mark {
            let seconds = at.duration_since(mark.at).as_secs_f64().max(1e-3);
            let point = Point {
                at_ms: state.at_ms,
                answers_per_s: mark
                    .answers
                    .zip(answers)
                    .map(|(before, after)| AnswerRates::between(&before, &after, seconds)),
                orders_per_s: state.orders_written.saturating_sub(mark.orders_written) as f64
                    / seconds,
                backlog: state.backlog,
                stock_left: state.items.iter().map(|i| i.stock_left.max(0)).sum(),
            };
            if self.points.len() == CAPACITY {
                self.points.pop_front();
            }
            self.points.push_back(point);
        }
        self.mark = Some(Mark {
            at,
            orders_written: state.orders_written,
            answers,
        });
        self.latest = Some(Latest { state, answers });
        self.last_error = None;
        self.answers_missing = missing;
    }

    /// The window's points sampled after `since_ms` (all without it).
    pub fn view(&self, since_ms: Option<i64>) -> SeriesView {
        let since = since_ms.unwrap_or(i64::MIN);
        SeriesView {
            interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            window_ms: WINDOW.as_millis() as u64,
            points: self
                .points
                .iter()
                .filter(|p| p.at_ms > since)
                .cloned()
                .collect(),
            latest: self.latest.clone(),
            sample_error: self.last_error.clone(),
            answers_missing: self.answers_missing.clone(),
        }
    }

    /// How many points are kept.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point is kept yet.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Samples `stack` into `series` every [`SAMPLE_INTERVAL`] until the stack
/// stops (or is gone: it is held only weakly between samples).
pub fn spawn_sampler(stack: Weak<Stack>, series: Arc<Mutex<Series>>) {
    let Some(stop) = stack.upgrade().map(|s| s.shutdown_token()) else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(stack) = stack.upgrade() else { return };
            let at = Instant::now();
            let sampled = state_of(&stack).await;
            drop(stack);
            match sampled {
                Ok(state) => series.lock().record(at, state, answer_totals()),
                Err(e) => series.lock().last_error = Some(format!("{e:#}")),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::ItemState;

    fn state(at_ms: i64, orders_written: u64, stock_left: i64) -> LiveState {
        LiveState {
            at_ms,
            backlog: 3,
            orders_written,
            items: vec![ItemState {
                item: "a".into(),
                stock: 10,
                stock_left,
                sold: 10 - stock_left,
                sold_out: stock_left == 0,
            }],
        }
    }

    #[test]
    fn rates_come_from_consecutive_samples() {
        let mut series = Series::default();
        let start = Instant::now();
        let before = AnswerTotals {
            queued: 10,
            ..AnswerTotals::default()
        };
        let after = AnswerTotals {
            queued: 15,
            sold_out: 50,
            ..AnswerTotals::default()
        };
        series.record(start, state(1_000, 0, 10), Ok(before));
        assert!(series.is_empty(), "the first sample only sets the mark");
        series.record(
            start + Duration::from_millis(500),
            state(1_500, 4, 5),
            Ok(after),
        );
        let view = series.view(None);
        assert_eq!(view.points.len(), 1);
        let point = &view.points[0];
        assert_eq!(point.orders_per_s, 8.0);
        assert_eq!(point.stock_left, 5);
        let answers = point.answers_per_s.unwrap();
        assert_eq!((answers.queued, answers.sold_out), (10.0, 100.0));
        assert_eq!(view.latest.unwrap().answers, Some(after));
        assert!(series.view(Some(1_500)).points.is_empty());
    }

    #[test]
    fn the_window_keeps_its_capacity_and_says_why_answers_are_missing() {
        let mut series = Series::default();
        let start = Instant::now();
        for i in 0..CAPACITY as u64 * 2 {
            let at = start + SAMPLE_INTERVAL * i as u32;
            series.record(at, state(i as i64, i, 1), Err("not counted".into()));
        }
        assert_eq!(series.len(), CAPACITY);
        let view = series.view(None);
        assert_eq!(view.points[0].at_ms, CAPACITY as i64);
        assert_eq!(view.points[0].answers_per_s, None);
        assert_eq!(view.answers_missing.as_deref(), Some("not counted"));
    }
}
