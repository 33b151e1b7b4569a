//! The admin SQL on SQLite (the black-box tests in `tests/api` run every route on both
//! databases, including the concurrent last-admin case on PostgreSQL).

use super::*;
use crate::domain::Username;

const NOW: i64 = 1_800_000_000;

fn new_user(name: &str) -> NewUser {
    NewUser {
        email: Email::parse(&format!("{name}@example.com")).expect("an address"),
        username: Username::parse(name).expect("a username"),
    }
}

async fn admin(db: &Db, name: &str) -> UserId {
    db.insert_admin(
        &new_user(name),
        "$2b$04$hash",
        NOW,
        &crate::store::test_audit(),
    )
    .await
    .expect("inserted")
    .id
}

async fn session(db: &Db, user: UserId, byte: u8) -> Option<SessionId> {
    crate::store::test_session(db, user, "$2b$04$hash", byte, NOW).await
}

use crate::domain::SessionId;

async fn permissions(db: &Db, user: UserId, session: SessionId) -> Option<Permissions> {
    db.user_in_session(user, session, NOW, NOW - 60)
        .await
        .expect("ran")
        .map(|(_, permissions)| permissions)
}

fn role(name: &str, permissions: &[Permission]) -> Role {
    Role {
        name: RoleName::parse(name).expect("a role name"),
        description: format!("the {name} role"),
        permissions: permissions.iter().copied().collect(),
        builtin: false,
    }
}

#[tokio::test]
async fn the_built_in_roles_are_admin_with_every_permission_and_user_with_none() {
    let (_dir, db) = crate::store::test_database().await;
    let roles = db.roles().await.expect("roles");
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["admin", "user"]);
    assert_eq!(roles[0].permissions, Permissions::all());
    assert!(roles[1].permissions.is_empty());
    assert!(roles.iter().all(|r| r.builtin));
}

#[tokio::test]
async fn custom_roles_are_created_changed_and_deleted_and_built_ins_are_not() {
    let (_dir, db) = crate::store::test_database().await;
    let support = role(
        "support",
        &[Permission::UsersRead, Permission::SessionsRevoke],
    );
    assert_eq!(
        db.create_role(&support, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(
        db.create_role(&support, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::RoleExists)
    );
    assert_eq!(
        db.create_role(&role("admin", &[]), NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::RoleExists)
    );
    let changed = db
        .update_role(
            &support.name,
            "",
            Permissions::NONE.with(Permission::RolesRead),
            NOW,
            &crate::store::test_audit(),
        )
        .await
        .expect("ran")
        .expect("changed");
    assert_eq!(changed.permissions.names(), ["roles:read"]);
    assert_eq!(changed.description, "");
    for builtin in [RoleName::admin(), RoleName::user()] {
        assert_eq!(
            db.update_role(
                &builtin,
                "x",
                Permissions::NONE,
                NOW,
                &crate::store::test_audit()
            )
            .await
            .expect("ran"),
            Err(Refusal::BuiltinRole)
        );
        assert_eq!(
            db.delete_role(&builtin, &crate::store::test_audit())
                .await
                .expect("ran"),
            Err(Refusal::BuiltinRole)
        );
    }
    assert_eq!(
        db.delete_role(&support.name, &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(
        db.delete_role(&support.name, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::RoleNotFound)
    );
    let ghost = RoleName::parse("ghost").expect("a name");
    assert_eq!(
        db.update_role(
            &ghost,
            "",
            Permissions::NONE,
            NOW,
            &crate::store::test_audit()
        )
        .await
        .expect("ran"),
        Err(Refusal::RoleNotFound)
    );
    assert_eq!(db.roles().await.expect("roles").len(), 2);
}

#[tokio::test]
async fn a_grant_shows_in_the_session_query_at_once_and_so_does_its_revocation() {
    let (_dir, db) = crate::store::test_database().await;
    let _keeper = admin(&db, "keeper").await;
    let ada = admin(&db, "ada").await;
    let sid = session(&db, ada, 1).await.expect("a session");
    assert_eq!(permissions(&db, ada, sid).await, Some(Permissions::all()));
    assert_eq!(
        db.revoke_role(ada, &RoleName::admin(), &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(permissions(&db, ada, sid).await, Some(Permissions::NONE));

    let support = role("support", &[Permission::UsersRead]);
    db.create_role(&support, NOW, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("created");
    assert_eq!(
        db.grant_role(ada, &support.name, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(
        db.grant_role(ada, &support.name, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(
        permissions(&db, ada, sid).await.map(Permissions::names),
        Some(vec!["users:read"])
    );
    let (user, _) = db
        .user_in_session(ada, sid, NOW, NOW - 60)
        .await
        .expect("ran")
        .expect("active");
    let roles: Vec<&str> = user.roles.iter().map(RoleName::as_str).collect();
    assert_eq!(roles, ["support", "user"]);

    // Deleting the role takes its permission away too.
    db.delete_role(&support.name, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("deleted");
    assert_eq!(permissions(&db, ada, sid).await, Some(Permissions::NONE));

    let ghost = RoleName::parse("ghost").expect("a name");
    assert_eq!(
        db.grant_role(ada, &ghost, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::RoleNotFound)
    );
    assert_eq!(
        db.grant_role(UserId::new(999), &ghost, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::UserNotFound)
    );
    assert_eq!(
        db.revoke_role(
            UserId::new(999),
            &RoleName::user(),
            &crate::store::test_audit()
        )
        .await
        .expect("ran"),
        Err(Refusal::UserNotFound)
    );
}

#[tokio::test]
async fn the_last_enabled_admin_cannot_be_demoted_disabled_or_deleted() {
    let (_dir, db) = crate::store::test_database().await;
    let ada = admin(&db, "ada").await;
    let admin_role = RoleName::admin();
    assert_eq!(
        db.revoke_role(ada, &admin_role, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::LastAdmin)
    );
    assert!(matches!(
        db.set_disabled(ada, true, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::LastAdmin)
    ));
    assert_eq!(
        db.delete_user(ada, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::LastAdmin)
    );

    // With a second enabled admin each is allowed, and then the other one is the last.
    let bob = admin(&db, "bob").await;
    let (account, _) = db
        .set_disabled(ada, true, NOW, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("disabled");
    assert!(account.disabled_at.is_some());
    assert_eq!(
        db.revoke_role(bob, &admin_role, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::LastAdmin)
    );
    // A disabled admin does not count: enabling ada again lets bob go.
    db.set_disabled(ada, false, NOW, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("enabled");
    assert_eq!(
        db.revoke_role(bob, &admin_role, &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(
        db.delete_user(ada, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::LastAdmin)
    );
    // Taking `user` from the last admin is fine: it grants nothing.
    assert_eq!(
        db.revoke_role(ada, &RoleName::user(), &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
}

#[tokio::test]
async fn disabling_revokes_every_session_and_refuses_new_ones_until_enabled() {
    let (_dir, db) = crate::store::test_database().await;
    let _keeper = admin(&db, "keeper").await;
    let ada = admin(&db, "ada").await;
    let first = session(&db, ada, 1).await.expect("a session");
    let second = session(&db, ada, 2).await.expect("a session");
    let (account, revoked) = db
        .set_disabled(ada, true, NOW, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("done");
    assert_eq!(revoked, 2);
    let disabled_at = account.disabled_at.expect("disabled");
    assert!(account.last_login_at.is_some(), "the logins were recorded");
    for sid in [first, second] {
        assert_eq!(permissions(&db, ada, sid).await, None);
    }
    assert_eq!(
        session(&db, ada, 3).await,
        None,
        "a login racing the disable"
    );
    // Disabling again changes nothing.
    let (again, revoked) = db
        .set_disabled(ada, true, NOW, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("done");
    assert_eq!((again.disabled_at, revoked), (Some(disabled_at), 0));
    let (enabled, _) = db
        .set_disabled(ada, false, NOW, &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("done");
    assert_eq!(enabled.disabled_at, None);
    assert!(session(&db, ada, 4).await.is_some());
    assert!(matches!(
        db.set_disabled(UserId::new(999), true, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::UserNotFound)
    ));
}

#[tokio::test]
async fn accounts_page_newest_first_and_search_names_literally() {
    let (_dir, db) = crate::store::test_database().await;
    let mut ids = Vec::new();
    for name in ["ada", "bob", "cy_d", "dee", "eve"] {
        ids.push(admin(&db, name).await);
    }
    let page = |search, before, limit| {
        let db = db.clone();
        async move {
            let query = AccountQuery {
                search,
                before,
                limit,
            };
            db.accounts(&query)
                .await
                .expect("ran")
                .into_iter()
                .map(|a| a.user.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, None, 2).await, [ids[4], ids[3]]);
    assert_eq!(page(None, Some(ids[3]), 2).await, [ids[2], ids[1]]);
    assert_eq!(page(None, Some(ids[1]), 2).await, [ids[0]]);
    assert_eq!(page(Some("EVE"), None, 50).await, [ids[4]]);
    assert_eq!(page(Some("example.COM"), None, 50).await.len(), 5);
    // `_` and `%` are characters to find, not wildcards.
    assert_eq!(page(Some("y_d"), None, 50).await, [ids[2]]);
    assert_eq!(page(Some("_"), None, 50).await, [ids[2]]);
    assert!(page(Some("%"), None, 50).await.is_empty());
    assert!(page(Some(r"\"), None, 50).await.is_empty());
}

#[tokio::test]
async fn the_bootstrap_grants_admin_to_an_existing_address_once() {
    let (_dir, db) = crate::store::test_database().await;
    let email = Email::parse("root@example.com").expect("an address");
    assert_eq!(
        db.grant_admin_by_email(&email, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        AdminGrant::NoAccount
    );
    let root = db
        .insert_admin(
            &new_user("root"),
            "$2b$04$hash",
            NOW,
            &crate::store::test_audit(),
        )
        .await
        .expect("inserted");
    assert!(root.is_admin() && root.email_verified_at.is_some());
    assert!(matches!(
        db.insert_admin(
            &new_user("root"),
            "$2b$04$hash",
            NOW,
            &crate::store::test_audit()
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        db.grant_admin_by_email(&email, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        AdminGrant::AlreadyAdmin(root.id)
    );
    // An account that lost the role gets it back.
    let _keeper = admin(&db, "keeper").await;
    db.revoke_role(root.id, &RoleName::admin(), &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("revoked");
    let upper = Email::parse("ROOT@example.com").expect("an address");
    assert_eq!(
        db.grant_admin_by_email(&upper, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        AdminGrant::Granted(root.id)
    );
    // An address nobody proved they receive mail at gets nothing: anyone could have signed up
    // with the address the operator names.
    let squatter = admin(&db, "squatter").await;
    db.revoke_role(squatter, &RoleName::admin(), &crate::store::test_audit())
        .await
        .expect("ran")
        .expect("revoked");
    dispatch!(&db, conn => sqlx::query("UPDATE users SET email_verified_at = NULL WHERE id = $1")
        .bind(squatter.get())
        .execute(conn)
        .await
        .map(drop))
    .expect("unverified");
    let address = Email::parse("squatter@example.com").expect("an address");
    assert_eq!(
        db.grant_admin_by_email(&address, NOW, &crate::store::test_audit())
            .await
            .expect("ran"),
        AdminGrant::Unverified(squatter)
    );
    let account = db.account(squatter).await.expect("ran").expect("exists");
    assert!(!account.user.is_admin());
}

#[tokio::test]
async fn deleting_an_account_deletes_its_sessions_and_frees_its_names() {
    let (_dir, db) = crate::store::test_database().await;
    let _keeper = admin(&db, "keeper").await;
    let ada = admin(&db, "ada").await;
    let sid = session(&db, ada, 1).await.expect("a session");
    assert_eq!(
        db.delete_user(ada, &crate::store::test_audit())
            .await
            .expect("ran"),
        Ok(())
    );
    assert_eq!(
        db.delete_user(ada, &crate::store::test_audit())
            .await
            .expect("ran"),
        Err(Refusal::UserNotFound)
    );
    assert_eq!(permissions(&db, ada, sid).await, None);
    assert!(db.account(ada).await.expect("ran").is_none());
    let again = admin(&db, "ada").await;
    assert_ne!(again, ada);
}
