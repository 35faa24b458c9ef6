//! Compile-time behaviour of `#[bonny::controller]`: what it accepts (`tests/ui/pass`, whose
//! `main` checks the result) and how it reports mistakes (`tests/ui/fail`, one `.stderr` each).
//!
//! After changing a message, regenerate with `TRYBUILD=overwrite cargo test -p bonny-rs --test
//! macro_ui` and read the new `.stderr` files.

#[test]
fn controller_attribute() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
