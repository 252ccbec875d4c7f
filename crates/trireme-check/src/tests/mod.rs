//! Tests that span checkers: a model-driven history generator, a brute-force
//! reference checker cross-checked against the search, hand-written histories.

mod brute;
mod crosscheck;
mod gen;
mod histories;
mod summary;
