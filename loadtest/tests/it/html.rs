//! The HTML report in a real browser: headless Chromium opens it without
//! errors, and its screenshot shows the charts (their line colours are
//! there). Skipped, saying so, only where Chromium is absent — unless
//! `FLASHSALE_REQUIRE_SERVICES=1` (CI installs it).

use std::process::Command;

use loadtest::audit::{AuditReport, Check};
use loadtest::replay::{Outcome, ReplayResult, Sample};
use loadtest::report::{Parameters, SystemSample, build};

/// The installed Chromium's command, if any.
fn report_page() -> String {
    let samples = (0..600)
        .map(|n| Sample {
            index: n,
            planned_us: n as u64 * 5_000,
            sent_us: n as u64 * 5_000 + 100,
            done_us: n as u64 * 5_000 + 2_000,
            outcome: if n < 100 {
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
        planned_span_us: 2_995_000,
        actual_span_us: 2_995_000,
        reconnects: 0,
    };
    let system: Vec<SystemSample> = (0..4)
        .map(|s| SystemSample {
            open_transactions: 0,
            at_ms: s * 1_000 + 900,
            stock_left: 100 - (s as i64 * 40).min(100),
            backlog: 30 - (s * 10).min(30),
            orders_written: s * 30,
        })
        .collect();
    let audit = AuditReport {
        checks: vec![Check {
            name: "no oversell".into(),
            passed: true,
            detail: "100 live orders".into(),
        }],
    };
    loadtest::html::render(&build(Parameters::default(), &result, &system, Some(audit)))
}

#[test]
fn the_report_opens_in_chromium_and_shows_its_charts() {
    let Some(browser) = test_support::chromium() else {
        test_support::service_missing("Chromium", "not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let shot = dir.path().join("report.png");
    std::fs::write(&page, report_page()).unwrap();
    let url = format!("file://{}", page.display());
    let common = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1000,2400",
    ];
    let rendered = Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    let log = String::from_utf8_lossy(&rendered.stderr);
    for problem in ["CONSOLE", "Uncaught", "Failed to load", "net::ERR"] {
        assert!(
            !log.contains(problem),
            "the page logged {problem:?}:\n{log}"
        );
    }
    let dom = Command::new(browser)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom.matches("<svg").count(),
        6,
        "the browser sees six charts"
    );

    // The screenshot has the charts' line colours in it.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let count = |rgb: [u8; 3]| {
        pixels[..info.buffer_size()]
            .chunks(channels)
            .filter(|p| p[..3].iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 12))
            .count()
    };
    for (name, rgb) in [
        ("offered (blue)", [31, 119, 180]),
        ("achieved (orange)", [255, 127, 14]),
        ("written (green)", [44, 160, 44]),
    ] {
        assert!(count(rgb) > 200, "{name}: {} pixels", count(rgb));
    }
}
