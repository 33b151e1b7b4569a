//! Faults: lock-order races on PostgreSQL, `kill -9` under load, and a PostgreSQL outage (a
//! throwaway cluster that the test creates, freezes, stops, starts and drops).

use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::db_tests;
use crate::helpers::{Backend, spawn_app, test_settings};

db_tests! {
    /// A purge (another instance's: here a second pool on the same database, in a tight loop)
    /// races refreshes. It counts every session as ended, as a purge does for a session at the
    /// very second it expires or goes idle while its owner refreshes it; here that happens to
    /// all of them, as often as possible. Before rotation and purge took their locks in one order
    /// (the session, then its tokens), PostgreSQL broke the resulting deadlocks with 40P01: a 503
    /// on the refresh or a failed purge.
    async fn purges_racing_refreshes_never_deadlock(backend: Backend) {
        const WORKERS: usize = 6;
        const ROUNDS: usize = 30;
        let app = Arc::new(spawn_app(backend).await);
        for worker in 0..WORKERS {
            app.create_user(&format!("racer{worker}")).await;
        }
        let (purger, _) =
            cerego::store::connect(&test_settings(&app.db.url()).database).expect("second pool");
        let done = Arc::new(AtomicBool::new(false));
        let purged = Arc::new(AtomicU64::new(0));
        let purging = tokio::spawn({
            let (done, purged) = (done.clone(), purged.clone());
            async move {
                while !done.load(Ordering::Relaxed) {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let count = purger
                        .purge_sessions(now, now + 24 * 3600)
                        .await
                        .expect("a purge never fails");
                    purged.fetch_add(count, Ordering::Relaxed);
                }
            }
        });

        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let app = app.clone();
            workers.push(tokio::spawn(async move {
                let name = format!("racer{worker}");
                let mut statuses = Vec::new();
                for _ in 0..ROUNDS {
                    let (access, mut refresh) = app.login_pair(&name).await;
                    for _ in 0..3 {
                        let rotated = app.refresh(&refresh).await;
                        statuses.push(("refresh", rotated.status().as_u16()));
                        let body: Value = rotated.json().await.expect("json");
                        match body["refresh_token"].as_str() {
                            Some(next) => refresh = next.to_owned(),
                            None => break,
                        }
                    }
                    let logout = app.post_authed("/auth/logout", &access).await;
                    statuses.push(("logout", logout.status().as_u16()));
                }
                statuses
            }));
        }
        let mut statuses = Vec::new();
        for worker in workers {
            statuses.extend(worker.await.expect("worker"));
        }
        done.store(true, Ordering::Relaxed);
        purging.await.expect("purger");

        // A refresh or logout of a session the purge has just deleted is refused, as it should
        // be; a logout that passed authentication before the purge finds no session to end.
        assert!(
            statuses.iter().all(|(what, status)| match *what {
                "refresh" => matches!(status, 200 | 401),
                _ => matches!(status, 204 | 401 | 404),
            }),
            "no 503 (deadlock) nor other failure: {statuses:?}"
        );
        assert!(
            statuses.contains(&("refresh", 200)),
            "some refreshes won the race: {statuses:?}"
        );
        assert!(purged.load(Ordering::Relaxed) > 0, "the purge deleted sessions");
    }
}
