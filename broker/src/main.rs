//! maestro-broker binary (placeholder until the broker lands).
fn main() {}
