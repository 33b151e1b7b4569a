//! The account list's query and cursor.

use super::*;

fn parse(query: &str) -> Result<ListQuery, Vec<FieldError>> {
    ListQuery::parse(&QueryParams::parse(query))
}

fn kinds(errors: &[FieldError]) -> Vec<(String, &str)> {
    errors
        .iter()
        .map(|e| (e.loc.join("."), e.kind.as_str()))
        .collect()
}

#[test]
fn an_empty_query_asks_for_the_first_page_of_fifty() {
    assert_eq!(
        parse(""),
        Ok(ListQuery {
            search: None,
            limit: 50,
            before: None,
        })
    );
}

#[test]
fn search_is_trimmed_and_blank_means_none() {
    assert_eq!(
        parse("q=%20Ada%20").expect("valid").search.as_deref(),
        Some("Ada")
    );
    assert_eq!(parse("q=++").expect("valid").search, None);
    assert_eq!(parse("q=").expect("valid").search, None);
    let long = "é".repeat(254);
    assert!(
        parse(&format!("q={long}")).is_ok(),
        "254 characters, more bytes"
    );
    let errors = parse(&format!("q={long}x")).expect_err("255 characters");
    assert_eq!(kinds(&errors), [("query.q".to_owned(), "string_too_long")]);
}

#[test]
fn limit_is_an_integer_from_1_to_100_and_the_last_one_given_counts() {
    assert_eq!(parse("limit=1").expect("valid").limit, 1);
    assert_eq!(parse("limit=100").expect("valid").limit, 100);
    assert_eq!(parse("limit=7&limit=9").expect("valid").limit, 9);
    for (query, kind) in [
        ("limit=0", "greater_than_equal"),
        ("limit=-3", "greater_than_equal"),
        ("limit=101", "less_than_equal"),
        ("limit=ten", "int_parsing"),
        ("limit=", "int_parsing"),
        ("limit=1.5", "int_parsing"),
    ] {
        let errors = parse(query).expect_err(query);
        assert_eq!(
            kinds(&errors),
            [("query.limit".to_owned(), kind)],
            "{query}"
        );
    }
}

#[test]
fn a_cursor_continues_below_its_id_and_a_foreign_one_is_a_value_error() {
    let cursor = cursor::encode(42);
    assert_eq!(
        parse(&format!("cursor={cursor}")).expect("valid").before,
        Some(UserId::new(42))
    );
    assert_eq!(parse("cursor=").expect("valid").before, None);
    let errors = parse("cursor=nope!").expect_err("not ours");
    assert_eq!(kinds(&errors), [("query.cursor".to_owned(), "value_error")]);
    assert_eq!(errors[0].msg, "Invalid cursor");
}

#[test]
fn every_bad_parameter_is_listed_at_once() {
    let errors = parse("limit=0&cursor=x&q=").expect_err("two");
    assert_eq!(
        kinds(&errors),
        [
            ("query.limit".to_owned(), "greater_than_equal"),
            ("query.cursor".to_owned(), "value_error"),
        ]
    );
}
