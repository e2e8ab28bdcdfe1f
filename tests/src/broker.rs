//! Running the broker under test.
