//! Tests of the wire contract: every request and response type survives a
//! round trip through its wire message (property tests), and no bytes a
//! client or worker sends can make a conversion panic (fuzzing that runs in
//! CI for seconds, seeded by the corpus in `tests/fixtures/fuzz/`).

mod fuzz;
mod roundtrip;
mod strategies;
