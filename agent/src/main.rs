//! maestro-agent.
fn main() {}
