//! maestro CLI.
fn main() {}
