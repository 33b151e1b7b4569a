//! Sessions: refresh-token rotation, replay within the grace window, reuse detection, logout,
//! expiry, the session list, and their races.
//!
//! Expiry, idle timeout and the grace window are tested by moving the app's clock
//! (`spawn_app_with_clock`), never by sleeping: each test checks both sides of its boundary.

use std::time::Duration;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::{
    Backend, GOOD_PASSWORD, TestApp, assert_api_timestamp, assert_detail, spawn_app,
    spawn_app_with, spawn_app_with_clock, validation_errors,
};

use crate::me::{EXPIRED, SESSION_ENDED, assert_rejected_with};

async fn pair(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "bearer");
    assert!(body["refresh_expires_in"].as_u64().is_some_and(|s| s > 0));
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    (field("access_token"), field("refresh_token"))
}

async fn assert_refresh_refused(app: &TestApp, refresh: &str, why: &str) {
    let response = app.refresh(refresh).await;
    assert_eq!(response.status(), 401, "{why}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "detail": "Invalid refresh token" }), "{why}");
}

async fn me_status(app: &TestApp, access: &str) -> u16 {
    app.me(access).await.status().as_u16()
}

async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let response = app
        .client
        .get(app.url("/auth/sessions"))
        .bearer_auth(access)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn delete_session(app: &TestApp, access: &str, id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/auth/sessions/{id}")))
        .bearer_auth(access)
        .send()
        .await
        .expect("request")
}

db_tests! {
    async fn refresh_rotates_the_pair_and_the_new_pair_works(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (access, refresh) = app.login_pair("ada").await;
        assert!(refresh.starts_with("crg_rt_") && refresh.len() == 50, "{refresh}");

        let (new_access, new_refresh) = pair(app.refresh(&refresh).await).await;

        assert_ne!(new_refresh, refresh);
        assert_ne!(new_access, access);
        assert_eq!(me_status(&app, &new_access).await, 200);
        let (_, third) = pair(app.refresh(&new_refresh).await).await;
        assert_ne!(third, new_refresh);
    }

    async fn a_replay_within_the_grace_window_returns_the_same_pair(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (_, refresh) = app.login_pair("ada").await;

        let first = pair(app.refresh(&refresh).await).await;
        let again = pair(app.refresh(&refresh).await).await;

        assert_eq!(first, again);
        assert_eq!(me_status(&app, &again.0).await, 200);
    }

    async fn a_replay_after_the_grace_window_revokes_only_that_session(backend: Backend) {
        // The test settings' grace window is 10 s.
        let app = spawn_app_with_clock(backend, |_| {}).await;
        app.create_user("ada").await;
        let (_, stolen) = app.login_pair("ada").await;
        let (other_access, other_refresh) = app.login_pair("ada").await;
        let (access, successor) = pair(app.refresh(&stolen).await).await;
        app.advance_clock(Duration::from_secs(9));
        assert_eq!(
            pair(app.refresh(&stolen).await).await,
            (access.clone(), successor.clone()),
            "still within the grace window"
        );
        app.advance_clock(Duration::from_secs(2));

        assert_refresh_refused(&app, &stolen, "reuse after the grace window").await;

        assert_refresh_refused(&app, &successor, "the family is revoked").await;
        assert_rejected_with(&app, &access, SESSION_ENDED, "its access tokens stop at once").await;
        assert_eq!(me_status(&app, &other_access).await, 200, "the other session lives");
        pair(app.refresh(&other_refresh).await).await;
    }

    async fn with_no_grace_window_any_replay_is_reuse(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.sessions.refresh_grace = Duration::ZERO).await;
        app.create_user("ada").await;
        let (_, refresh) = app.login_pair("ada").await;
        let (access, _) = pair(app.refresh(&refresh).await).await;

        assert_refresh_refused(&app, &refresh, "immediate replay").await;
        assert_eq!(me_status(&app, &access).await, 401);
    }

    async fn fifty_concurrent_refreshes_of_one_token_yield_one_successor(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (_, refresh) = app.login_pair("ada").await;

        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (client, url) = (app.client.clone(), app.url("/auth/refresh"));
            let body = json!({ "refresh_token": refresh });
            tasks.spawn(async move {
                let response = client.post(url).json(&body).send().await.expect("request");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("json"))
            });
        }
        let results = tasks.join_all().await;

        assert!(results.iter().all(|(status, _)| *status == 200), "{results:?}");
        let pairs: std::collections::BTreeSet<(String, String)> = results
            .iter()
            .map(|(_, b)| (b["access_token"].to_string(), b["refresh_token"].to_string()))
            .collect();
        assert_eq!(pairs.len(), 1, "every 200 carries the same pair");
        assert_eq!(app.db.scalar("SELECT count(*) FROM refresh_tokens").await, 2, "one successor stored");
    }

    async fn a_revoke_racing_a_refresh_leaves_nothing_usable(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        for _ in 0..5 {
            let (access, refresh) = app.login_pair("ada").await;
            let (client, url) = (app.client.clone(), app.url("/auth/refresh"));
            let refreshing = tokio::spawn(async move {
                let response = client.post(url).json(&json!({ "refresh_token": refresh })).send().await.expect("request");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("json"))
            });
            let logout = app.post_authed("/auth/logout", &access).await;
            let (status, body) = refreshing.await.expect("task");

            assert!(matches!(logout.status().as_u16(), 204 | 401), "{}", logout.status());
            assert!(matches!(status, 200 | 401), "{status}");
            assert_eq!(me_status(&app, &access).await, 401);
            if status == 200 {
                let new_access = body["access_token"].as_str().expect("access");
                let new_refresh = body["refresh_token"].as_str().expect("refresh");
                assert_eq!(me_status(&app, new_access).await, 401, "the refreshed access token is dead");
                assert_refresh_refused(&app, new_refresh, "the refreshed refresh token is dead").await;
            }
        }
    }

    async fn logout_ends_the_session_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (access, refresh) = app.login_pair("ada").await;
        let (other, _) = app.login_pair("ada").await;

        let response = app.post_authed("/auth/logout", &access).await;

        assert_eq!(response.status(), 204);
        assert_eq!(me_status(&app, &access).await, 401);
        assert_refresh_refused(&app, &refresh, "logged out").await;
        assert_eq!(me_status(&app, &other).await, 200, "other sessions stay");
        assert_eq!(app.post_authed("/auth/logout", &access).await.status(), 401);
    }

    async fn logout_all_ends_every_session_of_the_user(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        app.create_user("bob").await;
        let (first, first_refresh) = app.login_pair("ada").await;
        let (second, _) = app.login_pair("ada").await;
        let (bobs, _) = app.login_pair("bob").await;

        assert_eq!(app.post_authed("/auth/logout-all", &second).await.status(), 204);

        assert_eq!(me_status(&app, &first).await, 401);
        assert_eq!(me_status(&app, &second).await, 401);
        assert_refresh_refused(&app, &first_refresh, "logged out everywhere").await;
        assert_eq!(me_status(&app, &bobs).await, 200, "other users are untouched");
    }

    async fn sessions_end_at_their_absolute_lifetime(backend: Backend) {
        // Shorter than the access token's 30 minutes, so the session ends first.
        let lifetime = Duration::from_secs(10 * 60);
        let app = spawn_app_with_clock(backend, |s| s.sessions.lifetime = lifetime).await;
        app.create_user("ada").await;
        let (access, refresh) = app.login_pair("ada").await;
        app.advance_clock(lifetime - Duration::from_secs(1));
        let (_, refresh) = pair(app.refresh(&refresh).await).await;
        assert_eq!(me_status(&app, &access).await, 200, "a second before the end");
        app.advance_clock(Duration::from_secs(1));

        assert_refresh_refused(&app, &refresh, "past the absolute lifetime").await;
        assert_rejected_with(&app, &access, SESSION_ENDED, "past the absolute lifetime").await;
    }

    async fn sessions_end_when_idle_too_long_and_refresh_keeps_them_alive(backend: Backend) {
        let idle = Duration::from_secs(3600);
        let app = spawn_app_with_clock(backend, |s| s.sessions.idle_timeout = idle).await;
        app.create_user("ada").await;
        let (_, refresh) = app.login_pair("ada").await;
        app.advance_clock(Duration::from_secs(40 * 60));
        let (_, refresh) = pair(app.refresh(&refresh).await).await;
        app.advance_clock(Duration::from_secs(40 * 60));
        // 80 minutes after login: alive only because the refresh counted as use.
        let (_, refresh) = pair(app.refresh(&refresh).await).await;
        let (_, other) = app.login_pair("ada").await;
        app.advance_clock(idle - Duration::from_secs(1));
        let (_, other) = pair(app.refresh(&other).await).await;
        app.advance_clock(Duration::from_secs(1));

        assert_refresh_refused(&app, &refresh, "idle too long").await;
        pair(app.refresh(&other).await).await;
    }

    async fn an_expired_access_token_says_so_and_a_refresh_recovers(backend: Backend) {
        let app = spawn_app_with_clock(backend, |_| {}).await;
        app.create_user("ada").await;
        let (access, refresh) = app.login_pair("ada").await;
        // 30 minutes to live, and 30 s of leeway for clock skew.
        app.advance_clock(Duration::from_secs(30 * 60 + 30));
        assert_eq!(me_status(&app, &access).await, 200, "within the leeway");
        app.advance_clock(Duration::from_secs(1));

        assert_rejected_with(&app, &access, EXPIRED, "past exp").await;

        let (fresh, _) = pair(app.refresh(&refresh).await).await;
        assert_eq!(me_status(&app, &fresh).await, 200);
    }

    async fn the_session_list_shows_mine_and_deletes_one(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        app.create_user("bob").await;
        let login_with = |agent: &'static str| {
            let (client, url) = (app.client.clone(), app.url("/auth/login"));
            async move {
                let response = client
                    .post(url)
                    .header("user-agent", agent)
                    .json(&json!({ "username": "ada", "password": GOOD_PASSWORD }))
                    .send()
                    .await
                    .expect("request");
                pair(response).await
            }
        };
        let (laptop, _) = login_with("Laptop/1.0").await;
        let (phone, phone_refresh) = login_with("Phone/2.0").await;
        let (bob, _) = app.login_pair("bob").await;

        let list = sessions(&app, &laptop).await;
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["user_agent"], "Laptop/1.0");
        assert_eq!(list[0]["current"], true);
        assert_eq!(list[1]["user_agent"], "Phone/2.0");
        assert_eq!(list[1]["current"], false);
        assert_eq!(list[0]["ip"], "127.0.0.1");
        for key in ["id", "created_at", "last_used_at"] {
            assert!(!list[0][key].is_null(), "{key}");
        }
        let phone_id = list[1]["id"].to_string();
        let bobs_id = sessions(&app, &bob).await[0]["id"].to_string();

        assert_detail(delete_session(&app, &laptop, &bobs_id).await, 404, "Session not found").await;
        assert_eq!(me_status(&app, &bob).await, 200, "bob's session is untouched");
        let bad = validation_errors(delete_session(&app, &laptop, "phone").await).await;
        assert_eq!(bad, [("id".to_owned(), "int_parsing".to_owned())]);
        assert_eq!(delete_session(&app, &laptop, &phone_id).await.status(), 204);
        assert_eq!(me_status(&app, &phone).await, 401);
        assert_refresh_refused(&app, &phone_refresh, "deleted session").await;
        assert_eq!(sessions(&app, &laptop).await.len(), 1);
        assert_detail(delete_session(&app, &laptop, &phone_id).await, 404, "Session not found").await;
    }

    async fn tokens_are_not_interchangeable(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (access, refresh) = app.login_pair("ada").await;

        assert_eq!(me_status(&app, &refresh).await, 401, "a refresh token is no access token");
        assert_refresh_refused(&app, &access, "an access token is no refresh token").await;
        assert_refresh_refused(&app, "crg_rt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "unknown").await;
        let missing = validation_errors(app.post_json("/auth/refresh", &json!({})).await).await;
        assert_eq!(missing, [("refresh_token".to_owned(), "missing".to_owned())]);
        pair(app.refresh(&refresh).await).await;
    }

    async fn ended_sessions_are_purged(backend: Backend) {
        // Shorter than the access token's 30 minutes, so the session ends first.
        let lifetime = Duration::from_secs(10 * 60);
        let app = spawn_app_with_clock(backend, |s| {
            s.sessions.lifetime = lifetime;
            s.sessions.purge_interval = Duration::from_secs(1);
        })
        .await;
        app.create_user("ada").await;
        app.login_pair("ada").await;
        let (access, _) = app.login_pair("ada").await;
        // A purge runs (one interval after start-up) while the sessions are alive: it keeps them.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert_eq!(app.db.scalar("SELECT count(*) FROM sessions").await, 2, "live sessions stay");

        app.advance_clock(lifetime);
        // Waiting for the purge task's next tick (real time), not for the sessions to expire.
        let mut left = 2;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = app.db.scalar("SELECT count(*) FROM sessions").await;
            if left == 0 {
                break;
            }
        }

        assert_eq!(left, 0, "expired sessions were deleted");
        assert_eq!(app.db.scalar("SELECT count(*) FROM refresh_tokens").await, 0);
        assert_rejected_with(&app, &access, SESSION_ENDED, "purged").await;
    }
}

db_tests! {
    async fn refresh_accepts_the_oauth2_refresh_token_grant_form(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (_, refresh) = app.login_pair("ada").await;
        let post_form = |form: Vec<(&'static str, String)>| {
            app.client.post(app.url("/auth/refresh")).form(&form).send()
        };

        let with_grant = post_form(vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.clone()),
        ])
        .await
        .expect("request");
        let (access, next) = pair(with_grant).await;
        assert_eq!(me_status(&app, &access).await, 200);
        let without_grant = post_form(vec![("refresh_token", next.clone())]).await.expect("request");
        let (_, last) = pair(without_grant).await;

        let wrong_grant = post_form(vec![
            ("grant_type", "password".to_owned()),
            ("refresh_token", last.clone()),
        ])
        .await
        .expect("request");
        assert_eq!(
            validation_errors(wrong_grant).await,
            [("grant_type".to_owned(), "string_pattern_mismatch".to_owned())]
        );
        let empty = post_form(vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", String::new())])
            .await
            .expect("request");
        assert_eq!(
            validation_errors(empty).await,
            [("refresh_token".to_owned(), "string_too_short".to_owned())]
        );
        let missing = post_form(vec![("grant_type", "refresh_token".to_owned())]).await.expect("request");
        assert_eq!(
            validation_errors(missing).await,
            [("refresh_token".to_owned(), "missing".to_owned())]
        );
        // The refused requests used nothing up: the last token still works.
        pair(app.refresh(&last).await).await;
    }

    async fn an_empty_or_mistyped_refresh_token_is_a_422_not_a_401(backend: Backend) {
        let app = spawn_app(backend).await;
        app.create_user("ada").await;
        let (_, refresh) = app.login_pair("ada").await;
        for (body, kind) in [
            (json!({ "refresh_token": "" }), "string_too_short"),
            (json!({ "refresh_token": 5 }), "string_type"),
            (json!({ "refresh_token": {} }), "string_type"),
        ] {
            let response = app.post_json("/auth/refresh", &body).await;
            assert_eq!(
                validation_errors(response).await,
                [("refresh_token".to_owned(), kind.to_owned())],
                "{body}"
            );
        }
        let mistyped_grant = app
            .post_json("/auth/refresh", &json!({ "refresh_token": refresh, "grant_type": [] }))
            .await;
        assert_eq!(
            validation_errors(mistyped_grant).await,
            [("grant_type".to_owned(), "string_type".to_owned())]
        );
        // Unknown extra fields stay ignored, as in FastAPI.
        let extra = app
            .post_json("/auth/refresh", &json!({ "refresh_token": refresh, "client_id": {} }))
            .await;
        pair(extra).await;
    }

    async fn every_timestamp_has_six_fractional_digits_and_z(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("ada").await;
        let (access, _) = app.login_pair("ada").await;
        let created = assert_api_timestamp(&user["created_at"]);
        assert_api_timestamp(&user["updated_at"]);

        let me: Value = app.me(&access).await.json().await.expect("json");
        assert_eq!(me["created_at"], user["created_at"], "one value, one spelling");
        assert_api_timestamp(&me["updated_at"]);

        let list = sessions(&app, &access).await;
        assert_eq!(list.len(), 1);
        let started = assert_api_timestamp(&list[0]["created_at"]);
        assert_api_timestamp(&list[0]["last_used_at"]);
        // Sessions are stored to the second; the login came after the sign-up.
        assert!(started >= created.replace_nanosecond(0).expect("valid"), "{started} < {created}");
    }
}
