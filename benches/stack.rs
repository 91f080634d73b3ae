//! Criterion benchmarks of the portcullis stack (filled in by the benchmark work).

fn main() {}
