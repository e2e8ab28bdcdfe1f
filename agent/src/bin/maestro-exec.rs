//! maestro-exec.
fn main() {}
