//! `GET /admin/users`: keyset pages that stay correct while accounts sign up, the `q` filter,
//! and the validation of `q`, `limit` and `cursor`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::admin_helpers::{id_of, query_errors, spawn_admin_app};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp};

/// Signs up `<prefix><n>` for every `n` in `range`, over `workers` concurrent clients; the ids.
async fn sign_up_many(
    app: &TestApp,
    prefix: &str,
    range: std::ops::Range<usize>,
    workers: usize,
) -> Vec<i64> {
    let mut tasks = tokio::task::JoinSet::new();
    let names: Vec<String> = range.map(|n| format!("{prefix}{n}")).collect();
    for chunk in names.chunks(names.len().div_ceil(workers).max(1)) {
        let (client, url) = (app.client.clone(), app.url("/auth/signup"));
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for name in chunk {
                let body = json!({ "email": format!("{name}@example.com"), "username": name, "password": GOOD_PASSWORD });
                let response = client.post(&url).json(&body).send().await.expect("request");
                assert_eq!(response.status(), 201, "sign-up of {name}");
                ids.push(id_of(&response.json().await.expect("json")));
            }
            ids
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

/// `/admin/users` with the query `pairs`, percent-encoded.
fn list_url<V: AsRef<str>>(app: &TestApp, pairs: &[(&str, V)]) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&app.url("/admin/users")).expect("URL");
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_ref())));
    url
}

/// Walks every page of `/admin/users?limit=…&q=…` from the first; the items in order and the
/// number of pages. With `sign_up_between`, an account `<prefix><page>` signs up after each
/// page is read and before the next is asked for, so the walk surely runs while users sign up.
async fn walk(
    app: &TestApp,
    token: &str,
    limit: u32,
    q: &str,
    sign_up_between: Option<&str>,
) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", limit.to_string()), ("q", q.to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let response = app
            .client
            .get(list_url(app, &query))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "page {pages}");
        let page: Value = response.json().await.expect("json");
        let page_items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("items: {page}"));
        pages += 1;
        assert!(pages < 1000, "the walk ends");
        assert!(
            page_items.len() <= limit as usize,
            "page {pages}: at most {limit}"
        );
        items.extend(page_items.iter().cloned());
        if let Some(prefix) = sign_up_between {
            let name = format!("{prefix}{pages}");
            let response = app
                .signup(&format!("{name}@example.com"), &name, GOOD_PASSWORD)
                .await;
            assert_eq!(response.status(), 201, "sign-up of {name} during the walk");
        }
        match &page["next_cursor"] {
            Value::Null => break,
            Value::String(next) => {
                assert_eq!(
                    page_items.len(),
                    limit as usize,
                    "page {pages} with a next page is full"
                );
                cursor = Some(next.clone());
            }
            other => panic!("next_cursor {other}"),
        }
    }
    (items, pages)
}

/// Asserts that `items` are newest (highest id) first with no repeat; their ids.
fn newest_first(items: &[Value], what: &str) -> Vec<i64> {
    let ids: Vec<i64> = items.iter().map(id_of).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "{what}: strictly decreasing ids {ids:?}"
    );
    ids
}

db_tests! {
    /// 250 accounts, listed in pages of 100 and of 7 while 60 more sign up: every account that
    /// existed before the walk appears once, newest first; a later walk sees the newcomers too.
    async fn pages_stay_correct_while_users_sign_up(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let mut existing: BTreeSet<i64> = sign_up_many(&app, "early", 0..250, 4).await.into_iter().collect();
        existing.insert(id_of(&app.me_json(&admin).await));
        assert_eq!(existing.len(), 251);

        let first: Value = app.admin_get("/admin/users", &admin).await;
        assert_eq!(first["items"].as_array().expect("items").len(), 50, "default limit");

        let latecomers = {
            let app_client = (app.client.clone(), app.address.clone());
            let (client, address) = app_client;
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..60 {
                    let name = format!("late{n}");
                    let body = json!({ "email": format!("{name}@example.com"), "username": name, "password": GOOD_PASSWORD });
                    let response = client.post(format!("{address}/auth/signup")).json(&body).send().await.expect("request");
                    assert_eq!(response.status(), 201);
                    ids.push(id_of(&response.json().await.expect("json")));
                }
                ids
            })
        };
        for limit in [100, 7] {
            let between = format!("during{limit}-");
            let (items, pages) = walk(&app, &admin, limit, "", Some(&between)).await;
            let ids = newest_first(&items, &format!("limit {limit}"));
            let seen: BTreeSet<i64> = ids.iter().copied().collect();
            let missing: Vec<&i64> = existing.difference(&seen).collect();
            assert!(missing.is_empty(), "limit {limit}: missing {missing:?}");
            assert!(pages >= 251usize.div_ceil(limit as usize), "limit {limit}: {pages} pages");
        }
        let late = latecomers.await.expect("sign-ups");

        let (items, _) = walk(&app, &admin, 100, "", None).await;
        let ids = newest_first(&items, "after the sign-ups");
        let expected: BTreeSet<i64> = existing.iter().copied().chain(late).collect();
        let seen: BTreeSet<i64> = ids.into_iter().collect();
        assert!(expected.is_subset(&seen), "every account, the latecomers too");
        let total = app.db.scalar("SELECT COUNT(*) FROM users").await;
        assert_eq!(seen.len() as i64, total, "and those that signed up during the walks");
    }

    /// `q` matches a case-insensitive substring of the e-mail address or the username, pages
    /// included; blank means every account.
    async fn q_matches_email_or_username_case_insensitively(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let grace = app.signup("Grace.Hopper@Example.com", "AmazingGrace", GOOD_PASSWORD).await;
        assert_eq!(grace.status(), 201);
        let grace = id_of(&grace.json().await.expect("json"));
        let anas: Vec<i64> = sign_up_many(&app, "ana", 0..3, 1).await;
        app.create_user("bob").await;
        let ids = |items: &[Value]| items.iter().map(id_of).collect::<Vec<i64>>();

        for q in ["HOPPER", "hopper", "amazinggrace", "GRACE.hop", "zingG"] {
            let (items, pages) = walk(&app, &admin, 50, q, None).await;
            assert_eq!(ids(&items), [grace], "q={q}");
            assert_eq!(pages, 1);
        }
        let (items, pages) = walk(&app, &admin, 2, "ANA", None).await;
        assert_eq!(ids(&items), anas.iter().rev().copied().collect::<Vec<_>>(), "newest first");
        assert!(pages >= 2);
        let (items, _) = walk(&app, &admin, 50, "nobody-by-that-name", None).await;
        assert!(items.is_empty());
        let (items, _) = walk(&app, &admin, 50, "   ", None).await;
        assert_eq!(items.len(), 6, "blank q: every account, the admin included");
    }

    /// Bad `limit`, `cursor` and `q` values are 422s at `["query", name]` with pydantic's types.
    async fn bad_list_queries_are_422(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let list = |query: Vec<(&'static str, String)>| {
            let request = app.client.get(list_url(&app, &query)).bearer_auth(&admin);
            async move { request.send().await.expect("request") }
        };
        let cases = [
            ("limit", "0".to_owned(), "greater_than_equal", "Input should be greater than or equal to 1"),
            ("limit", "101".to_owned(), "less_than_equal", "Input should be less than or equal to 100"),
            ("limit", "ten".to_owned(), "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
            ("cursor", "not a cursor!".to_owned(), "value_error", "Invalid cursor"),
            ("cursor", "YWJj".to_owned(), "value_error", "Invalid cursor"),
            ("q", "x".repeat(255), "string_too_long", ""),
        ];
        for (name, value, kind, message) in cases {
            let errors = query_errors(list(vec![(name, value.clone())]).await, name).await;
            assert_eq!(errors.len(), 1, "{name}={value}: {errors:?}");
            assert_eq!(errors[0].0, kind, "{name}={value}");
            assert!(errors[0].1.contains(message), "{name}={value}: {:?}", errors[0].1);
        }
        for (name, value) in [("limit", "1"), ("limit", "100"), ("q", "")] {
            assert_eq!(list(vec![(name, value.to_owned())]).await.status(), 200, "{name}={value}");
        }
        let q = "x".repeat(254);
        assert_eq!(list(vec![("q", q)]).await.status(), 200, "254 characters");
    }
}
