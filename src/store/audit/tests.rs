use serde_json::json;

use super::*;
use crate::store::test_database;

fn entry(event: AuditEvent, n: i64) -> AuditEntry {
    let mut entry = AuditEntry::new(event, Outcome::Success)
        .on(UserId::new(n))
        .with("n", n)
        .with("a_first", "sorted");
    entry.ip = Some("192.0.2.7".to_owned());
    entry.user_agent = Some("agent \"quoted\"".to_owned());
    entry.request_id = Some(format!("req-{n}"));
    entry.at = Some(1_700_000_000_000_000 + n);
    entry
}

/// Writes `count` events, one transaction each.
async fn append(db: &Db, count: i64) {
    for n in 1..=count {
        db.append_audit(&[entry(AuditEvent::LoginSucceeded, n)])
            .await
            .expect("appended");
    }
}

async fn rows(db: &Db) -> Vec<AuditRecord> {
    let mut rows = db
        .audit_events(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    rows.reverse();
    rows
}

async fn execute(db: &Db, sql: &'static str) {
    dispatch!(db, conn => sqlx::query(sql).execute(conn).await.map(drop)).expect("executed");
}

/// Gives row `id` another address and the hash that goes with it, as someone covering their
/// tracks would: the row matches its own hash again, only its successor's link tells.
async fn rewrite_and_rehash(db: &Db, id: i64) {
    let mut row = rows(db)
        .await
        .into_iter()
        .find(|row| row.id == id)
        .expect("the row");
    row.ip = Some("203.0.113.9".to_owned());
    row.hash = row.expected_hash();
    dispatch!(db, conn => sqlx::query("UPDATE audit_events SET ip = $1, hash = $2 WHERE id = $3")
        .bind(row.ip.as_deref())
        .bind(row.hash.as_str())
        .bind(id)
        .execute(conn)
        .await
        .map(drop))
    .expect("rewritten");
}

async fn verify(db: &Db) -> ChainReport {
    db.verify_audit_chain().await.expect("verified")
}

#[test]
fn details_are_canonical_whatever_order_they_are_given_in() {
    let details: Details = vec![
        ("zeta", json!({"b": 1, "a": [true, null, "x\"y"]})),
        ("alpha", json!(2)),
    ];
    assert_eq!(
        canonical_details(&details),
        r#"{"alpha":2,"zeta":{"a":[true,null,"x\"y"],"b":1}}"#
    );
    assert_eq!(canonical_details(&[]), "{}");
}

#[test]
fn the_hash_covers_every_field_and_the_previous_hash() {
    let record = AuditRecord {
        id: 7,
        occurred_at: 1_700_000_000_000_001,
        event: "auth.login_failed".to_owned(),
        actor_user_id: None,
        target_user_id: Some(3),
        ip: Some("::1".to_owned()),
        user_agent: None,
        request_id: Some("r-1".to_owned()),
        outcome: "failure".to_owned(),
        details: r#"{"reason":"invalid_credentials"}"#.to_owned(),
        prev_hash: GENESIS_HASH.to_owned(),
        hash: String::new(),
    };
    assert_eq!(
        record.content(),
        r#"[7,1700000000000001,"auth.login_failed",null,3,"::1",null,"r-1","failure",{"reason":"invalid_credentials"}]"#
    );
    let mut sha = Sha256::new();
    sha.update(format!("{GENESIS_HASH}\n{}", record.content()));
    assert_eq!(record.expected_hash(), hex(&sha.finalize()));
    let base = record.expected_hash();
    let changes: [fn(&mut AuditRecord); 6] = [
        |r| r.id = 8,
        |r| r.occurred_at += 1,
        |r| r.target_user_id = None,
        |r| r.ip = Some("::2".to_owned()),
        |r| r.details = "{}".to_owned(),
        |r| r.prev_hash = "1".repeat(64),
    ];
    for change in changes {
        let mut changed = record.clone();
        change(&mut changed);
        assert_ne!(changed.expected_hash(), base, "{changed:?}");
    }
    assert_eq!(record.occurred_at_rfc3339(), "2023-11-14T22:13:20.000001Z");
}

#[tokio::test]
async fn appended_rows_form_one_chain_and_verify() {
    let (_dir, db) = test_database().await;
    assert_eq!(
        verify(&db).await,
        ChainReport {
            checked: 0,
            span: None,
            broken: None,
            purged_through: None
        }
    );
    append(&db, 5).await;
    let rows = rows(&db).await;
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(rows[0].prev_hash, GENESIS_HASH);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let third = &rows[2];
    assert_eq!(third.target_user_id, Some(3));
    assert_eq!(third.occurred_at, 1_700_000_000_000_003);
    assert_eq!(third.details, r#"{"a_first":"sorted","n":3}"#);
    assert_eq!(third.request_id.as_deref(), Some("req-3"));
    assert_eq!(
        verify(&db).await,
        ChainReport {
            checked: 5,
            span: Some((1, 5)),
            broken: None,
            purged_through: None
        }
    );
}

#[tokio::test]
async fn the_entry_keeps_the_row_written_for_it() {
    let (_dir, db) = test_database().await;
    let entries = [
        entry(AuditEvent::UserSignedUp, 1),
        entry(AuditEvent::EmailVerificationSent, 1),
    ];
    assert!(entries[0].written().is_none());
    db.append_audit(&entries).await.expect("appended");
    let written: Vec<_> = entries.iter().map(|e| e.written().cloned()).collect();
    assert_eq!(
        written,
        rows(&db).await.into_iter().map(Some).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_edited_row_is_named() {
    let (_dir, db) = test_database().await;
    append(&db, 4).await;
    execute(
        &db,
        "UPDATE audit_events SET ip = '203.0.113.9' WHERE id = 3",
    )
    .await;
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Altered(3)));
}

#[tokio::test]
async fn a_rewritten_and_rehashed_row_is_named() {
    let (_dir, db) = test_database().await;
    append(&db, 4).await;
    rewrite_and_rehash(&db, 2).await;
    let report = verify(&db).await;
    assert_eq!(report.broken, Some(ChainBreak::Rehashed(2)));
    assert!(
        report
            .broken
            .expect("broken")
            .to_string()
            .contains("row 2 ")
    );
}

#[tokio::test]
async fn deleted_rows_are_named_in_the_middle_and_at_the_end() {
    let (_dir, db) = test_database().await;
    append(&db, 5).await;
    execute(&db, "DELETE FROM audit_events WHERE id = 5").await;
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Missing(5)));
    execute(&db, "DELETE FROM audit_events WHERE id = 2").await;
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Missing(2)));
    execute(&db, "DELETE FROM audit_events WHERE id = 1").await;
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Missing(1)));
}

#[tokio::test]
async fn inserted_rows_are_named() {
    let (_dir, db) = test_database().await;
    append(&db, 3).await;
    // A row after the head, even one that links and hashes correctly.
    let mut forged = rows(&db).await.remove(2);
    forged.prev_hash = forged.hash.clone();
    forged.id = 4;
    forged.hash = forged.expected_hash();
    let f = forged.clone();
    dispatch!(&db, conn => sqlx::query(concat!(
            "INSERT INTO audit_events (", record_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"))
        .bind(f.id)
        .bind(f.occurred_at)
        .bind(f.event.as_str())
        .bind(f.actor_user_id)
        .bind(f.target_user_id)
        .bind(f.ip.as_deref())
        .bind(f.user_agent.as_deref())
        .bind(f.request_id.as_deref())
        .bind(f.outcome.as_str())
        .bind(f.details.as_str())
        .bind(f.prev_hash.as_str())
        .bind(f.hash.as_str())
        .execute(conn)
        .await
        .map(drop))
    .expect("inserted");
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Inserted(4)));
    // The next real append takes id 4 no more: the forged row holds it.
    assert!(
        db.append_audit(&[entry(AuditEvent::LoggedOut, 9)])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_purge_moves_the_anchor_and_the_chain_still_verifies() {
    let (_dir, db) = test_database().await;
    append(&db, 6).await;
    let before = rows(&db).await;
    // Rows 1..=4 occurred before the cutoff.
    let purged = db
        .purge_audit_events(1_700_000_000_000_005)
        .await
        .expect("purged");
    assert_eq!(
        purged,
        Purge {
            deleted: 4,
            refused: None
        }
    );
    assert_eq!(
        verify(&db).await,
        ChainReport {
            checked: 2,
            span: Some((5, 6)),
            broken: None,
            purged_through: Some((4, Some(1_700_000_000_000_004)))
        }
    );
    let anchor: (i64, String) = dispatch!(&db, conn => sqlx::query_as(
        "SELECT anchor_id, anchor_hash FROM audit_chain WHERE id = 1")
        .fetch_one(conn)
        .await)
    .expect("read");
    assert_eq!(anchor, (4, before[3].hash.clone()));
    // Appends continue the chain from the head, not the anchor.
    append(&db, 1).await;
    assert_eq!(verify(&db).await.span, Some((5, 7)));
    // Deleting the oldest kept row by hand is not a purge.
    execute(&db, "DELETE FROM audit_events WHERE id = 5").await;
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Missing(5)));
}

#[tokio::test]
async fn purging_everything_leaves_a_verifiable_empty_chain() {
    let (_dir, db) = test_database().await;
    append(&db, 3).await;
    assert_eq!(
        db.purge_audit_events(i64::MAX)
            .await
            .expect("purged")
            .deleted,
        3
    );
    assert_eq!(verify(&db).await.broken, None);
    assert_eq!(
        db.purge_audit_events(i64::MAX)
            .await
            .expect("purged")
            .deleted,
        0
    );
    append(&db, 1).await;
    let rows = rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, 4);
    assert_eq!(verify(&db).await.span, Some((4, 4)));
}

#[tokio::test]
async fn filters_and_keyset_pages() {
    let (_dir, db) = test_database().await;
    append(&db, 4).await;
    db.append_audit(&[entry(AuditEvent::LoggedOut, 2).by(UserId::new(9))])
        .await
        .expect("appended");
    let ids = |rows: Vec<AuditRecord>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let query = |q: AuditQuery| {
        let db = db.clone();
        async move { ids(db.audit_events(&q).await.expect("read")) }
    };
    let page = |limit| AuditQuery {
        limit,
        ..AuditQuery::default()
    };
    assert_eq!(query(page(2)).await, [5, 4]);
    assert_eq!(
        query(AuditQuery {
            before: Some(4),
            ..page(2)
        })
        .await,
        [3, 2]
    );
    assert_eq!(
        query(AuditQuery {
            event: Some(AuditEvent::LoggedOut),
            ..page(10)
        })
        .await,
        [5]
    );
    assert_eq!(
        query(AuditQuery {
            target: Some(UserId::new(2)),
            ..page(10)
        })
        .await,
        [5, 2]
    );
    assert_eq!(
        query(AuditQuery {
            actor: Some(UserId::new(9)),
            ..page(10)
        })
        .await,
        [5]
    );
    assert_eq!(
        query(AuditQuery {
            since: Some(1_700_000_000_000_002),
            until: Some(1_700_000_000_000_003),
            ..page(10)
        })
        .await,
        [5, 3, 2]
    );
}

#[tokio::test]
async fn a_purge_keeps_rows_that_are_not_an_intact_chain() {
    let (_dir, db) = test_database().await;
    append(&db, 6).await;
    execute(&db, "DELETE FROM audit_events WHERE id = 3").await;
    let purge = db.purge_audit_events(i64::MAX).await.expect("ran");
    assert_eq!(
        purge,
        Purge {
            deleted: 0,
            refused: Some(ChainBreak::Missing(3))
        }
    );
    assert_eq!(rows(&db).await.len(), 5, "nothing deleted");
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Missing(3)));
    execute(&db, "UPDATE audit_events SET details = '{}' WHERE id = 1").await;
    let purge = db.purge_audit_events(i64::MAX).await.expect("ran");
    assert_eq!(purge.refused, Some(ChainBreak::Altered(1)));
}

#[tokio::test]
async fn a_purge_keeps_a_rehashed_row_at_the_end_of_its_prefix() {
    let (_dir, db) = test_database().await;
    append(&db, 5).await;
    // Row 3, the last one due, rewritten and re-hashed: only row 4's link tells.
    rewrite_and_rehash(&db, 3).await;
    let purge = db
        .purge_audit_events(1_700_000_000_000_004)
        .await
        .expect("ran");
    assert_eq!(purge.refused, Some(ChainBreak::Rehashed(3)));
    assert_eq!(purge.deleted, 0);
    assert_eq!(verify(&db).await.broken, Some(ChainBreak::Rehashed(3)));
}

#[tokio::test]
async fn a_purge_takes_the_leading_run_that_is_due() {
    let (_dir, db) = test_database().await;
    append(&db, 3).await;
    // Row 4 stamped earlier than row 3 (stamped before it took the head): the purge stops at
    // row 3, the first row that is not due, and takes row 4 only once row 3 is due too.
    let mut early = entry(AuditEvent::LoggedOut, 4);
    early.at = Some(1_700_000_000_000_001);
    db.append_audit(&[early]).await.expect("appended");
    let purge = db
        .purge_audit_events(1_700_000_000_000_003)
        .await
        .expect("ran");
    assert_eq!(purge.deleted, 2);
    assert_eq!(verify(&db).await.span, Some((3, 4)));
    let purge = db
        .purge_audit_events(1_700_000_000_000_004)
        .await
        .expect("ran");
    assert_eq!(purge.deleted, 2);
    assert_eq!(verify(&db).await.span, None);
    assert_eq!(verify(&db).await.broken, None);
}
