//! The one way a response shows a point in time: RFC 3339 in UTC with exactly six fractional
//! digits and `Z`, e.g. `2026-11-26T14:37:50.149054Z`.
//!
//! Six digits because PostgreSQL keeps microseconds, and a fixed width because clients that
//! compare or parse timestamps as text (or with a fixed pattern) break when the width varies
//! with the value, as `time`'s own RFC 3339 output does (it drops trailing zeros).

use serde::Serializer;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// `at` in the API's format, converted to UTC; sub-microsecond digits are cut, not rounded.
/// Only a year outside 0..=9999 fails, which no clock or database gives.
pub fn format(at: OffsetDateTime) -> Result<String, time::error::Format> {
    at.to_offset(UtcOffset::UTC).format(FORMAT)
}

/// For `#[serde(serialize_with = "timestamp::serialize")]` on a response field.
pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    let text = format(*at).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

/// For `#[serde(serialize_with = "timestamp::serialize_option")]`: `null` for `None`.
pub fn serialize_option<S: Serializer>(
    at: &Option<OffsetDateTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_timestamp_has_six_fractional_digits_and_z() {
        let cases = [
            (
                datetime!(2026-11-26 14:37:50.149054 UTC),
                "2026-11-26T14:37:50.149054Z",
            ),
            (
                datetime!(2026-11-26 14:37:50 UTC),
                "2026-11-26T14:37:50.000000Z",
            ),
            (
                datetime!(2026-11-26 14:37:50.1 UTC),
                "2026-11-26T14:37:50.100000Z",
            ),
        ];
        for (at, shown) in cases {
            assert_eq!(format(at).expect("formats"), shown);
        }
    }

    #[test]
    fn other_offsets_are_shown_in_utc_and_nanoseconds_are_cut() {
        let at = datetime!(2026-11-26 16:37:50.149054999 +02:00);
        assert_eq!(format(at).expect("formats"), "2026-11-26T14:37:50.149054Z");
    }
}
