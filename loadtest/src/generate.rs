//! Trace generation from named shapes, reproducible by seed.
//!
//! A shape is an arrival rate over time, λ(t). Arrivals are drawn as a
//! non-homogeneous Poisson process by thinning (Lewis–Shedler): candidate
//! times at the shape's peak rate, each kept with probability λ(t)/peak —
//! exact for any shape, and one seeded ChaCha stream makes the same seed
//! give the same trace on every machine.
//!
//! - **spike**: a base rate, then at `at` a jump (or a linear ramp) to the
//!   peak, held, then an exponential tail back to the base — the flash sale;
//! - **poisson**: a constant rate;
//! - **stages**: k6-style — each stage moves the rate linearly to its
//!   target over its duration (starting from 0).
//!
//! Each arrival is a buyer (a user drawn from the population, an item drawn
//! from the list). Some buyers click again (`repeat`) a little later; some
//! arrivals are bots, whose one captured request is replayed as a burst.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::{ClientKind, TraceRecord};

/// An arrival rate over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The flash sale: base → jump or ramp → peak held → exponential tail.
    Spike {
        /// Rate before the jump and after the tail (requests/s).
        base_rps: f64,
        /// Peak rate.
        peak_rps: f64,
        /// When the jump starts.
        at: Duration,
        /// Linear ramp to the peak (zero: a Heaviside jump).
        ramp: Duration,
        /// How long the peak holds.
        hold: Duration,
        /// Time constant of the decay after the peak.
        tail: Duration,
        /// Length of the whole trace.
        duration: Duration,
    },
    /// A constant rate.
    Poisson {
        /// Requests/s.
        rps: f64,
        /// Length.
        duration: Duration,
    },
    /// Linear stages, each to its target rate.
    Stages(Vec<Stage>),
}

/// One k6-style stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// The rate at its end.
    pub target_rps: f64,
}

impl Shape {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), String> {
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        match self {
            Shape::Spike {
                base_rps,
                peak_rps,
                duration,
                ..
            } => {
                if !rate_ok(*base_rps) || !rate_ok(*peak_rps) || peak_rps < base_rps {
                    return Err("a spike needs 0 <= base <= peak".into());
                }
                if duration.is_zero() {
                    return Err("a spike needs a duration".into());
                }
            }
            Shape::Poisson { rps, duration } => {
                if !rate_ok(*rps) || duration.is_zero() {
                    return Err("poisson needs a rate >= 0 and a duration".into());
                }
            }
            Shape::Stages(stages) => {
                if stages.is_empty() {
                    return Err("stages need at least one stage".into());
                }
                if stages.iter().any(|s| !rate_ok(s.target_rps)) {
                    return Err("stage targets must be rates >= 0".into());
                }
            }
        }
        if self.peak_rate() <= 0.0 {
            return Err("the shape never sends anything".into());
        }
        Ok(())
    }

    /// The trace's length.
    pub fn duration(&self) -> Duration {
        match self {
            Shape::Spike { duration, .. } | Shape::Poisson { duration, .. } => *duration,
            Shape::Stages(stages) => stages.iter().map(|s| s.duration).sum(),
        }
    }

    /// λ(t), requests/s at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        match self {
            Shape::Spike {
                base_rps,
                peak_rps,
                at,
                ramp,
                hold,
                tail,
                ..
            } => {
                let start = at.as_secs_f64();
                let ramp = ramp.as_secs_f64();
                let peak_end = start + ramp + hold.as_secs_f64();
                if t < start {
                    *base_rps
                } else if t < start + ramp {
                    base_rps + (peak_rps - base_rps) * (t - start) / ramp
                } else if t < peak_end {
                    *peak_rps
                } else {
                    let tau = tail.as_secs_f64();
                    if tau <= 0.0 {
                        *base_rps
                    } else {
                        base_rps + (peak_rps - base_rps) * (-(t - peak_end) / tau).exp()
                    }
                }
            }
            Shape::Poisson { rps, .. } => *rps,
            Shape::Stages(stages) => {
                let (mut from, mut start) = (0.0, 0.0);
                for stage in stages {
                    let length = stage.duration.as_secs_f64();
                    if t < start + length {
                        let done = if length > 0.0 {
                            (t - start) / length
                        } else {
                            1.0
                        };
                        return from + (stage.target_rps - from) * done;
                    }
                    from = stage.target_rps;
                    start += length;
                }
                from
            }
        }
    }

    /// The highest rate anywhere in the shape.
    pub fn peak_rate(&self) -> f64 {
        match self {
            Shape::Spike {
                base_rps, peak_rps, ..
            } => base_rps.max(*peak_rps),
            Shape::Poisson { rps, .. } => *rps,
            Shape::Stages(stages) => stages.iter().map(|s| s.target_rps).fold(0.0, f64::max),
        }
    }

    /// Expected arrivals in `[from, to)` seconds (numerically, 1 ms steps).
    pub fn expected_between(&self, from: f64, to: f64) -> f64 {
        let step: f64 = 0.001;
        let mut t = from;
        let mut total = 0.0;
        while t < to {
            let dt = step.min(to - t);
            total += self.rate_at(t + dt / 2.0) * dt;
            t += dt;
        }
        total
    }
}

/// Who sends the requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// Distinct users (`u0` … `u{n-1}`).
    pub users: u64,
    /// Items bought, drawn uniformly.
    pub items: Vec<String>,
    /// Probability that a buyer clicks again.
    pub repeat_probability: f64,
    /// Most extra clicks of a repeating buyer.
    pub max_repeats: u32,
    /// Probability that an arrival is a bot.
    pub bot_probability: f64,
    /// Requests in one bot burst (1 ms apart).
    pub bot_burst: u32,
}

impl Default for Population {
    fn default() -> Self {
        Population {
            users: 100_000,
            items: vec!["sku-1".into()],
            repeat_probability: 0.2,
            max_repeats: 3,
            bot_probability: 0.02,
            bot_burst: 10,
        }
    }
}

/// Generates the trace of `shape` sent by `population`, from `seed`.
pub fn generate(
    shape: &Shape,
    population: &Population,
    seed: u64,
) -> Result<Vec<TraceRecord>, String> {
    shape.validate()?;
    if population.users == 0 || population.items.is_empty() {
        return Err("the population needs users and items".into());
    }
    for p in [population.repeat_probability, population.bot_probability] {
        if !(0.0..=1.0).contains(&p) {
            return Err("probabilities must be within 0..=1".into());
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let peak = shape.peak_rate();
    let end = shape.duration().as_secs_f64();
    let mut records = Vec::new();
    let mut t = 0.0;
    loop {
        // Next candidate at the peak rate: exponential gap.
        let u: f64 = rng.random::<f64>();
        t += -(1.0 - u).ln() / peak;
        if t >= end {
            break;
        }
        if rng.random::<f64>() * peak > shape.rate_at(t) {
            continue; // thinned out
        }
        let at_us = (t * 1e6) as u64;
        let item = population.items[rng.random_range(0..population.items.len())].clone();
        if rng.random::<f64>() < population.bot_probability {
            let bot = format!("bot-{}", rng.random_range(0..100u32));
            for k in 0..population.bot_burst.max(1) {
                records.push(TraceRecord {
                    at_us: at_us + u64::from(k) * 1_000,
                    user: bot.clone(),
                    item: item.clone(),
                    kind: ClientKind::Bot,
                });
            }
            continue;
        }
        let user = format!("u{}", rng.random_range(0..population.users));
        if rng.random::<f64>() < population.repeat_probability {
            let repeats = rng.random_range(1..=population.max_repeats.max(1));
            let mut at = at_us;
            for _ in 0..repeats {
                at += rng.random_range(100_000..800_000u64);
                records.push(TraceRecord {
                    at_us: at,
                    user: user.clone(),
                    item: item.clone(),
                    kind: ClientKind::Repeat,
                });
            }
        }
        records.push(TraceRecord {
            at_us,
            user,
            item,
            kind: ClientKind::Buyer,
        });
    }
    records.sort_by_key(|r| r.at_us);
    Ok(records)
}

/// Parses `1.5s`, `250ms`, `2m`, `90us` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 2s, 1m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Parses a k6-style stage `DURATION:RATE`, e.g. `10s:2000`.
pub fn parse_stage(text: &str) -> Result<Stage, String> {
    let (duration, rate) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a stage (DURATION:RATE, e.g. 10s:2000)"))?;
    Ok(Stage {
        duration: parse_duration(duration)?,
        target_rps: rate
            .trim()
            .parse()
            .map_err(|_| format!("{rate:?} is not a rate"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spike() -> Shape {
        Shape::Spike {
            base_rps: 100.0,
            peak_rps: 5_000.0,
            at: Duration::from_secs(2),
            ramp: Duration::ZERO,
            hold: Duration::from_secs(2),
            tail: Duration::from_secs(1),
            duration: Duration::from_secs(8),
        }
    }

    fn buyers_only() -> Population {
        Population {
            repeat_probability: 0.0,
            bot_probability: 0.0,
            ..Population::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let a = generate(&spike(), &Population::default(), 7).unwrap();
        let b = generate(&spike(), &Population::default(), 7).unwrap();
        let c = generate(&spike(), &Population::default(), 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }

    /// Counts per 250 ms interval stay within 5 standard deviations of the
    /// shape's expectation (a Poisson count's deviation is √mean).
    fn matches_its_shape(shape: &Shape, seed: u64) {
        let trace = generate(shape, &buyers_only(), seed).unwrap();
        let bin = 0.25;
        let bins = (shape.duration().as_secs_f64() / bin).ceil() as usize;
        let mut counts = vec![0usize; bins];
        for record in &trace {
            counts[((record.at_us as f64 / 1e6) / bin) as usize] += 1;
        }
        for (i, count) in counts.iter().enumerate() {
            let from = i as f64 * bin;
            let expected = shape.expected_between(from, from + bin);
            let tolerance = 5.0 * expected.sqrt() + 3.0;
            assert!(
                (*count as f64 - expected).abs() <= tolerance,
                "{shape:?}: bin {i} has {count}, expected {expected:.0} ± {tolerance:.0}"
            );
        }
    }

    #[test]
    fn traces_match_their_shapes() {
        matches_its_shape(&spike(), 1);
        matches_its_shape(
            &Shape::Poisson {
                rps: 800.0,
                duration: Duration::from_secs(3),
            },
            2,
        );
        matches_its_shape(
            &Shape::Stages(vec![
                parse_stage("1s:200").unwrap(),
                parse_stage("2s:3000").unwrap(),
                parse_stage("1s:0").unwrap(),
            ]),
            3,
        );
        // The spike really jumps: the peak's quarter second holds ~1250.
        let counts = generate(&spike(), &buyers_only(), 4).unwrap();
        let at_peak = counts
            .iter()
            .filter(|r| (2_000_000..2_250_000).contains(&r.at_us))
            .count();
        assert!((1_050..1_450).contains(&at_peak), "{at_peak}");
    }

    #[test]
    fn repeat_clickers_and_bots_are_mixed_in() {
        let population = Population {
            repeat_probability: 0.5,
            bot_probability: 0.1,
            ..Population::default()
        };
        let trace = generate(&spike(), &population, 5).unwrap();
        let count = |kind| trace.iter().filter(|r| r.kind == kind).count();
        let (buyers, repeats, bots) = (
            count(ClientKind::Buyer),
            count(ClientKind::Repeat),
            count(ClientKind::Bot),
        );
        assert!(repeats > buyers / 2, "{buyers} buyers, {repeats} repeats");
        assert!(bots > 0 && bots % 10 == 0, "{bots}");
        // A repeat always follows its user's first click.
        let first_buy = trace.iter().find(|r| r.kind == ClientKind::Repeat).unwrap();
        assert!(trace.iter().any(|r| r.kind == ClientKind::Buyer
            && r.user == first_buy.user
            && r.at_us < first_buy.at_us));
    }

    #[test]
    fn bad_shapes_and_durations_are_refused() {
        assert!(
            Shape::Poisson {
                rps: -1.0,
                duration: Duration::from_secs(1)
            }
            .validate()
            .is_err()
        );
        assert!(Shape::Stages(vec![]).validate().is_err());
        assert!(
            Shape::Stages(vec![parse_stage("1s:0").unwrap()])
                .validate()
                .is_err()
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_stage("10s").is_err());
    }
}
