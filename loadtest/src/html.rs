//! The HTML report: one self-contained file — charts as inline SVG drawn
//! by plotters, no scripts, no fonts or styles from the network — that
//! opens anywhere and can be attached to an issue.
//!
//! Charts, one point per interval (100 ms; counts drawn as rates per
//! second): offered vs achieved request rate; outcomes; latency
//! percentiles (corrected and not); stock left; broker backlog; and the
//! peak-shaving picture — orders queued (the spike in) against orders
//! written (the flat line out). Then the latency of each outcome apart
//! (the sold-out edge and the reservation path), the audit table, the
//! thresholds, the totals, the parameters and the machine.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::RunReport;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 300;

/// A named series of (seconds from the start, value) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line chart as an SVG string (an error message in its place if
/// plotters fails, which the page then shows).
fn line_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let x_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let y_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => format!(
            "<p class=\"error\">chart {:?} failed: {}</p>",
            title,
            escape(&e.to_string())
        ),
    }
}

/// A value of every interval, at its start (in seconds).
fn per_interval(
    report: &RunReport,
    value: impl Fn(&crate::report::Interval) -> Option<f64>,
) -> Vec<(f64, f64)> {
    report
        .intervals
        .iter()
        .filter_map(|i| value(i).map(|v| (i.at_ms as f64 / 1e3, v)))
        .collect()
}

/// A count of every interval as a rate per second.
fn rate(
    report: &RunReport,
    count: impl Fn(&crate::report::Interval) -> Option<u64>,
) -> Vec<(f64, f64)> {
    let per_second = 1_000.0 / report.interval_ms.max(1) as f64;
    per_interval(report, |i| count(i).map(|n| n as f64 * per_second))
}

/// The whole page.
pub fn render(report: &RunReport) -> String {
    let mut charts = Vec::new();
    charts.push(line_chart(
        "Request rate: offered vs achieved",
        "requests/s",
        &[
            Series {
                name: "offered (planned)".into(),
                points: rate(report, |i| Some(i.offered)),
                color: PALETTE[0],
            },
            Series {
                name: "achieved (sent)".into(),
                points: rate(report, |i| Some(i.sent)),
                color: PALETTE[1],
            },
        ],
    ));
    let outcome_series: Vec<Series> = report
        .totals
        .outcomes
        .iter()
        .filter(|(_, n)| **n > 0)
        .enumerate()
        .map(|(k, (name, _))| Series {
            name: name.clone(),
            points: rate(report, |i| Some(*i.outcomes.get(name).unwrap_or(&0))),
            color: PALETTE[k % PALETTE.len()],
        })
        .collect();
    charts.push(line_chart(
        "Outcomes (100 ms intervals)",
        "answers/s",
        &outcome_series,
    ));
    charts.push(line_chart(
        "Latency (100 ms intervals)",
        "ms",
        &[
            Series {
                name: "p50 (corrected)".into(),
                points: per_interval(report, |i| Some(i.p50_us as f64 / 1e3)),
                color: PALETTE[2],
            },
            Series {
                name: "p99 (corrected)".into(),
                points: per_interval(report, |i| Some(i.p99_us as f64 / 1e3)),
                color: PALETTE[3],
            },
            Series {
                name: "p99 (uncorrected)".into(),
                points: per_interval(report, |i| Some(i.uncorrected_p99_us as f64 / 1e3)),
                color: PALETTE[7],
            },
        ],
    ));
    let stock = per_interval(report, |i| i.stock_left.map(|v| v as f64));
    if !stock.is_empty() {
        charts.push(line_chart(
            "Stock left",
            "units",
            &[Series {
                name: "stock left".into(),
                points: stock,
                color: PALETTE[4],
            }],
        ));
    }
    let backlog = per_interval(report, |i| i.backlog.map(|v| v as f64));
    if !backlog.is_empty() {
        charts.push(line_chart(
            "Broker backlog",
            "orders waiting",
            &[Series {
                name: "backlog".into(),
                points: backlog,
                color: PALETTE[5],
            }],
        ));
    }
    let written = rate(report, |i| i.orders_written);
    if !written.is_empty() {
        charts.push(line_chart(
            "Peak shaving: orders in (queued) vs orders out (written)",
            "orders/s",
            &[
                Series {
                    name: "queued (in)".into(),
                    points: rate(report, |i| Some(*i.outcomes.get("queued").unwrap_or(&0))),
                    color: PALETTE[3],
                },
                Series {
                    name: "written (out)".into(),
                    points: written,
                    color: PALETTE[2],
                },
            ],
        ));
    }

    let mut page = String::new();
    let totals = &report.totals;
    let verdict = match &report.audit {
        Some(audit) if audit.passed() => "<span class=\"pass\">audit passed</span>",
        Some(_) => "<span class=\"fail\">audit FAILED</span>",
        None => "no audit",
    };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>flash-sale load test</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:960px}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         .pass{{color:#1a7f37;font-weight:bold}}.fail{{color:#cf222e;font-weight:bold}}\
         .chart{{margin:1em 0}}</style></head><body>\
         <h1>Flash-sale load test</h1><p>{} requests against <code>{}</code> from <code>{}</code> at {}× speed — {verdict}</p>",
        totals.requests,
        escape(&report.parameters.target),
        escape(&report.parameters.trace),
        report.parameters.speed,
    );
    for chart in &charts {
        let _ = write!(page, "<div class=\"chart\">{chart}</div>");
    }
    page.push_str(
        "<h2>Latency by outcome</h2><table><tr><th>outcome</th><th>answers</th>\
         <th>corrected p50 / p99 / p99.9 (µs)</th><th>uncorrected p50 / p99 / p99.9 (µs)</th></tr>",
    );
    for (name, latency) in &totals.by_outcome {
        let (c, u) = (&latency.corrected_us, &latency.uncorrected_us);
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{} / {} / {}</td></tr>",
            escape(name),
            latency.count,
            c.p50,
            c.p99,
            c.p999,
            u.p50,
            u.p99,
            u.p999
        );
    }
    page.push_str("</table>");
    if let Some(audit) = &report.audit {
        page.push_str(
            "<h2>Audit</h2><table><tr><th>invariant</th><th>verdict</th><th>detail</th></tr>",
        );
        for check in &audit.checks {
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(&check.name),
                if check.passed { "pass" } else { "fail" },
                if check.passed { "pass" } else { "FAIL" },
                escape(&check.detail)
            );
        }
        page.push_str("</table>");
    }
    if !report.thresholds.is_empty() {
        page.push_str(
            "<h2>Thresholds</h2><table><tr><th>rule</th><th>actual</th><th>verdict</th></tr>",
        );
        for t in &report.thresholds {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&t.rule),
                t.actual,
                if t.passed { "pass" } else { "fail" },
                if t.passed { "pass" } else { "FAIL" }
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Totals</h2><table>");
    for (name, count) in &totals.outcomes {
        let _ = write!(page, "<tr><td>{}</td><td>{count}</td></tr>", escape(name));
    }
    let c = &totals.corrected_us;
    let u = &totals.uncorrected_us;
    let _ = write!(
        page,
        "<tr><td>late sends</td><td>{} ({:.2} %)</td></tr><tr><td>peak offered</td><td>{:.0} requests/s</td></tr>\
         <tr><td>achieved / offered</td><td>{:.3}</td></tr>\
         <tr><td>latency, corrected (µs)</td><td>p50 {} · p90 {} · p99 {} · p99.9 {} · max {}</td></tr>\
         <tr><td>latency, uncorrected (µs)</td><td>p50 {} · p90 {} · p99 {} · p99.9 {} · max {}</td></tr></table>",
        totals.late_sends,
        totals.late_share * 100.0,
        totals.peak_offered_rps,
        totals.achieved_ratio,
        c.p50,
        c.p90,
        c.p99,
        c.p999,
        c.max,
        u.p50,
        u.p90,
        u.p99,
        u.p999,
        u.max
    );
    let m = &report.machine;
    let _ = writeln!(
        page,
        "<h2>Run</h2><table><tr><td>started (ms since epoch)</td><td>{}</td></tr>\
         <tr><td>machine</td><td>{} {} · {} CPUs</td></tr><tr><td>report schema</td><td>{}</td></tr></table></body></html>",
        report.parameters.started_at_ms,
        escape(&m.os),
        escape(&m.arch),
        m.cpus,
        escape(&report.schema)
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditReport, Check};
    use crate::replay::{Outcome, ReplayResult, Sample};
    use crate::report::{Parameters, SystemSample, build};

    #[test]
    fn the_page_is_self_contained_and_has_every_chart() {
        let samples = (0..50)
            .map(|n| Sample {
                index: n,
                planned_us: n as u64 * 60_000,
                sent_us: n as u64 * 60_000,
                done_us: n as u64 * 60_000 + 900,
                outcome: if n < 10 {
                    Outcome::Queued
                } else {
                    Outcome::SoldOut
                },
                order_id: None,
            })
            .collect();
        let result = ReplayResult {
            samples,
            late_sends: 0,
            planned_span_us: 2_940_000,
            actual_span_us: 2_940_000,
            reconnects: 0,
        };
        let system: Vec<SystemSample> = (0..4)
            .map(|s| SystemSample {
                open_transactions: 0,
                at_ms: s * 1_000 + 500,
                stock_left: 10 - (s as i64 * 3).min(10),
                backlog: 3 - s.min(3),
                orders_written: s * 3,
            })
            .collect();
        let audit = AuditReport {
            checks: vec![Check {
                name: "no <oversell>".into(),
                passed: true,
                detail: "fine".into(),
            }],
        };
        let report = build(
            Parameters {
                target: "http://x".into(),
                trace: "a&b.ndjson".into(),
                ..Parameters::default()
            },
            &result,
            &system,
            Some(audit),
        );
        let page = render(&report);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<svg").count(), 6, "six charts");
        assert!(page.contains("Latency by outcome"));
        assert!(
            page.contains("<tr><td>queued</td><td>10</td>")
                && page.contains("<tr><td>sold_out</td><td>40</td>"),
            "each outcome's latency apart"
        );
        assert!(!page.contains("<script"));
        assert!(
            !page.contains("src=") && !page.contains("<link"),
            "nothing loaded from outside"
        );
        assert!(page.contains("a&amp;b.ndjson") && page.contains("no &lt;oversell&gt;"));
        assert!(!page.contains("chart \""), "a chart failed to draw");
    }
}
