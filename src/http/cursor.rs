//! The opaque cursor of the keyset-paged lists (`/admin/users`, `/admin/audit-events`,
//! `/auth/activity`): the last id of the previous page, as base64url (unpadded) of its decimal
//! digits. Clients must treat it as opaque; only what [`encode`] made decodes, so a made-up or
//! edited cursor is a 422 rather than a silently different page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::http::error::FieldError;
use crate::http::extract::QueryParams;

/// The cursor that continues after the row with id `last` (a positive id).
pub fn encode(last: i64) -> String {
    URL_SAFE_NO_PAD.encode(last.to_string())
}

/// The id a cursor continues after, if it is one [`encode`] made.
pub fn decode(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let digits = std::str::from_utf8(&bytes).ok()?;
    let id: i64 = digits.parse().ok().filter(|id| *id > 0)?;
    // One spelling per id: no sign, no leading zero, no trailing bits in the last character.
    (encode(id) == cursor).then_some(id)
}

/// The query's `cursor` parameter: `None` when absent or empty (the first page); records a
/// `value_error` at `["query", "cursor"]` in `errors` for one [`encode`] did not make.
pub fn param(query: &QueryParams, errors: &mut Vec<FieldError>) -> Option<i64> {
    match query.text("cursor", usize::MAX, errors) {
        None | Some("") => None,
        Some(raw) => {
            let id = decode(raw);
            if id.is_none() {
                errors.push(FieldError::query("cursor", "Invalid cursor", "value_error"));
            }
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_only_ours_decode() {
        for id in [1, 9, 10, 250, 4096, i64::MAX] {
            let cursor = encode(id);
            assert!(
                cursor
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{cursor} is URL-safe"
            );
            assert_eq!(decode(&cursor), Some(id));
        }
        let spelled = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for foreign in [
            spelled("0"),
            spelled("-5"),
            spelled("+5"),
            spelled("05"),
            spelled("5 "),
            spelled("abc"),
            spelled("99999999999999999999"),
            "MjUw=".to_owned(), // padded
            "NR".to_owned(),    // "5" is "NQ": other trailing bits
            "***".to_owned(),
            String::new(),
        ] {
            assert_eq!(decode(&foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn an_absent_or_empty_cursor_is_the_first_page_and_a_foreign_one_a_value_error() {
        let read = |query: &str| {
            let mut errors = Vec::new();
            let id = param(&QueryParams::parse(query), &mut errors);
            (id, errors)
        };
        assert_eq!(read(""), (None, vec![]));
        assert_eq!(read("cursor="), (None, vec![]));
        assert_eq!(read(&format!("cursor={}", encode(42))), (Some(42), vec![]));
        let (id, errors) = read("cursor=nope!");
        assert_eq!(id, None);
        assert_eq!(
            errors,
            [FieldError::query("cursor", "Invalid cursor", "value_error")]
        );
    }
}
