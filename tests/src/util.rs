//! Binaries, temporary directories and child processes for the tests.
