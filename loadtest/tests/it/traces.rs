//! The committed example traces read cleanly, and the generator still
//! writes `spike.ndjson` byte for byte from its documented command.

use std::time::Duration;

use loadtest::generate::{Population, Shape, generate};
use loadtest::trace::{read_trace, write_trace};

fn traces_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("traces")
}

#[test]
fn the_example_traces_read_cleanly() {
    for name in ["spike.ndjson", "poisson.ndjson", "stages.ndjson"] {
        let file = std::fs::File::open(traces_dir().join(name)).unwrap();
        let records = read_trace(std::io::BufReader::new(file)).unwrap();
        assert!(records.len() > 100, "{name}");
    }
}

#[test]
fn the_spike_example_is_reproducible_from_its_seed() {
    // loadtest gen spike --peak 1500 --base 20 --at 1s --hold 1s --tail 1s
    //   --duration 5s --users 20000 --seed 1
    let shape = Shape::Spike {
        base_rps: 20.0,
        peak_rps: 1_500.0,
        at: Duration::from_secs(1),
        ramp: Duration::ZERO,
        hold: Duration::from_secs(1),
        tail: Duration::from_secs(1),
        duration: Duration::from_secs(5),
    };
    let population = Population {
        users: 20_000,
        ..Population::default()
    };
    let mut written = Vec::new();
    write_trace(&generate(&shape, &population, 1).unwrap(), &mut written).unwrap();
    let committed = std::fs::read(traces_dir().join("spike.ndjson")).unwrap();
    assert!(
        written == committed,
        "the generator no longer writes spike.ndjson"
    );
}
