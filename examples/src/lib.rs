//! Shared pieces of the ion examples.
