//! Criterion benchmarks of the engine (being written).

fn main() {}
