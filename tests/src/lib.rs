//! Shared test context for the end-to-end tests.
