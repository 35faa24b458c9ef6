//! The duration grammar: a whole number followed by a unit, `ms`, `s`, `m` or `h`.
//!
//! `"500ms"`, `"30s"`, `"5m"` and `"1h"` are durations; `"1.5s"`, `"5 m"`, `" 5m"`, `"1h30m"`,
//! `"5min"` and `"5"` are not. The same grammar reads the `#[bonny::controller]` keys
//! (`requeue_after`, `backoff(base, max)`) at compile time and the `BONNY_*` environment
//! variables (`BONNY_SHUTDOWN_TIMEOUT`, `BONNY_LEASE_DURATION`, ...) at startup, so a value
//! that works in one place works in the other.
//!
//! # Zero is rejected
//!
//! `"0s"` (or `"0ms"`, `"00h"`) is an error in both places. Every duration the SDK reads as
//! text is a period, a delay or a deadline, and zero is wrong for each of them: a zero
//! `requeue_after` or backoff reconciles in a busy loop, a zero lease duration, renew deadline
//! or retry period makes leader election impossible, and a zero shutdown timeout abandons
//! reconciles in the middle of their writes. An explicit `Duration::ZERO` passed to a builder
//! in code is left to that builder's own checks; text, which is where typos and forgotten
//! units live, must say at least `"1ms"`.
//!
//! # Surrounding space is rejected
//!
//! `" 30s"` is an error too: the grammar is exact, so that what the macro accepts and what the
//! environment accepts are the same set of strings.

use std::{fmt, time::Duration};

/// The units with their length in milliseconds; `ms` before `s` so that the longer suffix wins.
pub const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// What a duration must look like, for error messages.
pub const EXPECTED: &str =
    "a whole number followed by a unit (ms, s, m or h), e.g. \"500ms\", \"30s\", \"5m\" or \"1h\"";

/// Why a string is not a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not a whole number followed by one of the [`UNITS`].
    Format,
    /// Zero: see the [module documentation](self) for why.
    Zero,
    /// More milliseconds than fit in a `u64`.
    TooLong,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Format => write!(f, "expected {EXPECTED}"),
            Self::Zero => f.write_str("the duration must be longer than zero"),
            Self::TooLong => f.write_str("the duration is too long"),
        }
    }
}

impl std::error::Error for DurationError {}

/// The milliseconds `text` stands for, e.g. 300 000 for `"5m"`.
///
/// ```
/// use bonny_rules::duration::{DurationError, parse_millis};
/// assert_eq!(parse_millis("5m"), Ok(300_000));
/// assert_eq!(parse_millis("0s"), Err(DurationError::Zero));
/// assert_eq!(parse_millis("5 minutes"), Err(DurationError::Format));
/// ```
///
/// # Errors
/// [`DurationError`] saying why `text` is not a duration.
pub fn parse_millis(text: &str) -> Result<u64, DurationError> {
    let (number, per_unit) = UNITS
        .iter()
        .find_map(|(unit, millis)| Some((text.strip_suffix(unit)?, *millis)))
        .ok_or(DurationError::Format)?;
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(DurationError::Format);
    }
    // Only digits remain, so the one way `parse` can fail is a number beyond `u64`.
    let count: u64 = number.parse().map_err(|_| DurationError::TooLong)?;
    match count.checked_mul(per_unit) {
        Some(0) => Err(DurationError::Zero),
        Some(millis) => Ok(millis),
        None => Err(DurationError::TooLong),
    }
}

/// The [`Duration`] `text` stands for.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(bonny_rules::duration::parse("1500ms"), Ok(Duration::from_millis(1500)));
/// ```
///
/// # Errors
/// As [`parse_millis`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_millis(text).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("5m"), Ok(300_000));
        assert_eq!(parse_millis("2h"), Ok(7_200_000));
        assert_eq!(parse_millis("007s"), Ok(7_000));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn rejects_what_is_not_number_and_unit() {
        for text in [
            "", "5", "m", "ms", "5 m", " 5m", "5m ", "-5m", "+5m", "1.5s", "5min", "5M", "1h30m",
            "five s", "3d", "5ms5", "٣s",
        ] {
            assert_eq!(parse_millis(text), Err(DurationError::Format), "{text:?}");
        }
    }

    #[test]
    fn rejects_zero_and_overflow() {
        for zero in ["0s", "0ms", "000h", "0m"] {
            assert_eq!(parse_millis(zero), Err(DurationError::Zero), "{zero}");
        }
        assert_eq!(
            parse_millis("99999999999999999999ms"),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            parse_millis("18446744073709551615h"),
            Err(DurationError::TooLong)
        );
        assert_eq!(parse_millis("18446744073709551615ms"), Ok(u64::MAX));
    }

    #[test]
    fn messages_name_the_expected_form() {
        assert_eq!(
            DurationError::Format.to_string(),
            "expected a whole number followed by a unit (ms, s, m or h), e.g. \"500ms\", \"30s\", \"5m\" or \"1h\""
        );
    }

    /// The canonical text of a duration: the largest unit that divides it.
    fn canonical(millis: u64) -> String {
        let (unit, per_unit) = UNITS
            .iter()
            .rev()
            .find(|(_, per_unit)| millis.is_multiple_of(*per_unit))
            .copied()
            .unwrap_or(("ms", 1));
        format!("{}{unit}", millis / per_unit)
    }

    proptest! {
        /// A number and a unit read back as their product, whenever it fits.
        #[test]
        fn number_and_unit_round_trip(count in 0u64..=u64::MAX, unit in 0usize..UNITS.len()) {
            let (name, per_unit) = UNITS[unit];
            let expected = match count.checked_mul(per_unit) {
                Some(0) => Err(DurationError::Zero),
                Some(millis) => Ok(millis),
                None => Err(DurationError::TooLong),
            };
            prop_assert_eq!(parse_millis(&format!("{count}{name}")), expected);
        }

        /// Every positive duration has a text that reads back to it.
        #[test]
        fn canonical_text_round_trips(millis in 1u64..=u64::MAX) {
            prop_assert_eq!(parse_millis(&canonical(millis)), Ok(millis));
        }

        /// Any string gets a verdict, never a panic; what is accepted is digits and a unit.
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(millis) = parse_millis(&text) {
                prop_assert!(millis > 0);
                let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
            }
        }

        /// Strings near the grammar (digits, units, signs, dots, space) get a verdict too.
        #[test]
        fn near_misses_never_panic(text in "[0-9 .+-]{0,22}(ms|s|m|h|min|d|M|S)?[0-9 ]{0,2}") {
            let _ = parse_millis(&text);
        }
    }
}
