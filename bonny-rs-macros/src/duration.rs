//! Duration literals such as `"30s"` or `"5m"`, checked at compile time.

use std::fmt;

/// The accepted units, with their length in milliseconds. `ms` before `s` so that the longest
/// suffix wins.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Why a duration literal was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Not an integer followed by a unit.
    Format,
    /// `0s`: a zero interval is never what is meant.
    Zero,
    /// More milliseconds than fit in a `u64`.
    TooLong,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Format => {
                "expected a whole number followed by a unit (ms, s, m or h), e.g. \"500ms\", \"30s\", \"5m\" or \"1h\""
            }
            Self::Zero => "the duration must be longer than zero",
            Self::TooLong => "the duration is too long",
        })
    }
}

/// Milliseconds in `text`, e.g. 300 000 for `"5m"`.
pub(crate) fn parse_millis(text: &str) -> Result<u64, Invalid> {
    let (number, per_unit) = UNITS
        .iter()
        .find_map(|(unit, millis)| Some((text.strip_suffix(unit)?, *millis)))
        .ok_or(Invalid::Format)?;
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Invalid::Format);
    }
    let count: u64 = number.parse().map_err(|_| Invalid::TooLong)?;
    match count.checked_mul(per_unit) {
        Some(0) => Err(Invalid::Zero),
        Some(millis) => Ok(millis),
        None => Err(Invalid::TooLong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("5m"), Ok(300_000));
        assert_eq!(parse_millis("2h"), Ok(7_200_000));
    }

    #[test]
    fn rejects_what_is_not_number_and_unit() {
        for text in [
            "", "5", "m", "5 m", "-5m", "+5m", "1.5s", "5min", "5M", "1h30m", "five s",
        ] {
            assert_eq!(parse_millis(text), Err(Invalid::Format), "{text:?}");
        }
    }

    #[test]
    fn rejects_zero_and_overflow() {
        assert_eq!(parse_millis("0s"), Err(Invalid::Zero));
        assert_eq!(
            parse_millis("99999999999999999999ms"),
            Err(Invalid::TooLong)
        );
        assert_eq!(parse_millis("18446744073709551615h"), Err(Invalid::TooLong));
    }
}
