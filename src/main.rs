//! The all-in-one binary: every part of the stack in one process on embedded
//! defaults. Until the stack is wired together it only says what exists.

fn main() -> anyhow::Result<()> {
    println!(
        "flashsale {}: the all-in-one stack is not wired yet; the broker library \
         and its benchmark live in broker/ (cargo run --release -p broker --bin broker-bench)",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}
