//! Running the agent under test (filled in with the sandbox side).
