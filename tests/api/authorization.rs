//! Who may call which admin route: the route → permission table as the served OpenAPI document
//! states it, one custom role per permission reaching exactly that permission's routes, and
//! changes to roles taking effect on the holder's next request (same access token).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_helpers::{PERMISSIONS, id_of, jwt_claims, spawn_admin_app};
use crate::db_tests;
use crate::helpers::{Backend, GOOD_PASSWORD, TestApp, assert_detail};

/// Every admin operation the issue lists, with the permission it needs.
const ADMIN_ROUTES: [(&str, &str, &str); 12] = [
    ("GET", "/admin/users", "users:read"),
    ("GET", "/admin/users/{id}", "users:read"),
    ("PATCH", "/admin/users/{id}", "users:write"),
    ("DELETE", "/admin/users/{id}", "users:delete"),
    ("DELETE", "/admin/users/{id}/sessions", "sessions:revoke"),
    ("PUT", "/admin/users/{id}/roles/{role}", "roles:write"),
    ("DELETE", "/admin/users/{id}/roles/{role}", "roles:write"),
    ("GET", "/admin/roles", "roles:read"),
    ("POST", "/admin/roles", "roles:write"),
    ("PUT", "/admin/roles/{name}", "roles:write"),
    ("DELETE", "/admin/roles/{name}", "roles:write"),
    ("GET", "/admin/audit-events", "audit:read"),
];

/// One admin operation: method, path template, the permission its OAuth2 scope names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
    permission: String,
}

/// The `/admin` operations of the served `/openapi.json`, each with the one OAuth2 scope it
/// declares (and a description saying "Requires `<permission>`").
async fn routes_from_openapi(app: &TestApp) -> Vec<Route> {
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let mut routes = Vec::new();
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/admin")) {
        let operations = item
            .as_object()
            .expect("path item")
            .iter()
            .filter(|(method, _)| {
                [
                    "get", "put", "post", "delete", "patch", "head", "options", "trace",
                ]
                .contains(&method.as_str())
            });
        for (method, operation) in operations {
            let what = format!("{method} {path}");
            let scopes: Vec<&str> = operation["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{what} declares its security"))
                .iter()
                .filter_map(|requirement| requirement.get("OAuth2PasswordBearer"))
                .flat_map(|scopes| scopes.as_array().expect("scopes").iter())
                .map(|scope| scope.as_str().expect("scope"))
                .collect();
            assert_eq!(scopes.len(), 1, "{what}: one OAuth2 scope, the permission");
            let permission = scopes[0].to_owned();
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("Requires `{permission}`")),
                "{what}: {description:?}"
            );
            routes.push(Route {
                method: method.to_uppercase(),
                path: path.clone(),
                permission,
            });
        }
    }
    routes.sort();
    routes
}

/// The order to call `routes` in: deletions last, the user's own deletion at the very end, so
/// that a holder allowed to delete removes nothing another of its calls needs.
fn call_order(mut routes: Vec<Route>) -> Vec<Route> {
    routes.sort_by_key(|r| (r.method == "DELETE", std::cmp::Reverse(r.path.len())));
    routes
}

/// Calls `route` with `token` (or none) on `target` (a user id) and the custom role `scratch`;
/// a body the route accepts where it takes one.
async fn call(
    app: &TestApp,
    route: &Route,
    token: Option<&str>,
    target: i64,
    scratch: &str,
    tag: &str,
) -> reqwest::Response {
    let path = route
        .path
        .replace("{id}", &target.to_string())
        .replace("{role}", scratch)
        .replace("{name}", scratch);
    let body = match (route.method.as_str(), route.path.as_str()) {
        ("PATCH", _) => Some(json!({ "disabled": false })),
        ("POST", "/admin/roles") => {
            Some(json!({ "name": format!("made-{tag}"), "permissions": [] }))
        }
        ("PUT", "/admin/roles/{name}") => {
            Some(json!({ "description": "edited", "permissions": [] }))
        }
        _ => None,
    };
    let method = Method::from_bytes(route.method.as_bytes()).expect("method");
    app.call(method, &path, token, body.as_ref()).await
}

db_tests! {
    /// The served document states the permission of every admin operation the issue lists.
    async fn openapi_states_each_admin_operations_permission(backend: Backend) {
        let app = spawn_admin_app(backend).await;

        let routes = routes_from_openapi(&app).await;

        let mut expected: Vec<Route> = ADMIN_ROUTES
            .iter()
            .map(|(method, path, permission)| Route {
                method: (*method).to_owned(),
                path: (*path).to_owned(),
                permission: (*permission).to_owned(),
            })
            .collect();
        expected.sort();
        assert_eq!(routes, expected);

        let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
        let scopes = &doc["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]["scopes"];
        let mut declared: Vec<&str> = scopes
            .as_object()
            .unwrap_or_else(|| panic!("the password flow declares scopes: {scopes}"))
            .keys()
            .map(String::as_str)
            .collect();
        declared.sort_unstable();
        let mut all = PERMISSIONS.to_vec();
        all.sort_unstable();
        assert_eq!(declared, all, "every permission is a scope of the password flow");
    }

    /// A scope asked for in the OAuth2 password form grants nothing: the roles decide.
    async fn a_requested_scope_grants_nothing(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        app.create_user("ada").await;
        let form = [
            ("grant_type", "password"),
            ("username", "ada"),
            ("password", GOOD_PASSWORD),
            ("scope", "users:read users:write roles:write"),
        ];

        let response = app.login_form(&form).await;

        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        let token = body["access_token"].as_str().expect("token");
        assert_eq!(jwt_claims(token)["roles"], json!(["user"]));
        let listed = app.call(Method::GET, "/admin/users", Some(token), None).await;
        assert_detail(listed, 403, "Not enough permissions").await;
    }

    /// For each permission, a holder of a custom role with exactly that permission gets through
    /// exactly the routes needing it (a 2xx) and 403 on every other; a plain user gets 403
    /// everywhere, no token 401.
    async fn each_permission_opens_exactly_the_routes_that_need_it(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let routes = call_order(routes_from_openapi(&app).await);
        assert!(!routes.is_empty(), "the document lists admin routes");
        let (_, plain) = app.user_with_role(&admin, "plain", "user").await;

        for (i, permission) in PERMISSIONS.iter().enumerate() {
            let role = format!("only-{}", permission.replace(':', "-"));
            app.create_role(&admin, &role, &[permission]).await;
            let (_, token) = app.user_with_role(&admin, &format!("holder{i}"), &role).await;
            let target = id_of(&app.create_user(&format!("target{i}")).await);
            let scratch = format!("scratch-{i}");
            app.create_role(&admin, &scratch, &[]).await;
            assert_eq!(app.grant(&admin, target, &scratch).await.status(), 204);

            let mut reached = BTreeSet::new();
            for route in &routes {
                let what = format!("{permission}: {} {}", route.method, route.path);
                let response = call(&app, route, Some(&token), target, &scratch, &i.to_string()).await;
                if route.permission == *permission {
                    assert!(response.status().is_success(), "{what}: {}", response.status());
                    reached.insert((route.method.clone(), route.path.clone()));
                } else {
                    assert_eq!(response.status(), 403, "{what}");
                    assert_detail(response, 403, "Not enough permissions").await;
                }
            }
            let needing = routes.iter().filter(|r| r.permission == *permission).count();
            assert_eq!(reached.len(), needing, "{permission}");
        }

        let target = id_of(&app.create_user("untouched").await);
        for route in &routes {
            let what = format!("{} {}", route.method, route.path);
            let response = call(&app, route, Some(&plain), target, "user", "plain").await;
            assert_eq!(response.status(), 403, "plain user: {what}");
            assert_detail(response, 403, "Not enough permissions").await;
            let response = call(&app, route, None, target, "user", "anonymous").await;
            assert_eq!(response.status(), 401, "no token: {what}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
            assert_detail(response, 401, "Could not validate credentials").await;
        }
        assert_eq!(app.me(&plain).await.status(), 200, "the plain user was left alone");
    }

    /// Granting, narrowing and removing a role change what the same access token may do on its
    /// very next request.
    async fn role_changes_take_effect_on_the_next_request(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        app.create_role(&admin, "reader", &["users:read"]).await;
        let id = id_of(&app.create_user("ada").await);
        let token = app.token_for("ada").await;
        let list = || app.call(Method::GET, "/admin/users", Some(&token), None);

        assert_detail(list().await, 403, "Not enough permissions").await;
        assert_eq!(app.grant(&admin, id, "reader").await.status(), 204);
        assert_eq!(list().await.status(), 200, "granted: the same token gets through");

        let narrowed = json!({ "permissions": ["roles:read"] });
        let response = app.call(Method::PUT, "/admin/roles/reader", Some(&admin), Some(&narrowed)).await;
        assert_eq!(response.status(), 200);
        assert_detail(list().await, 403, "Not enough permissions").await;
        let roles = app.call(Method::GET, "/admin/roles", Some(&token), None).await;
        assert_eq!(roles.status(), 200, "the role's new permission works at once");

        let widened = json!({ "permissions": ["users:read"] });
        let response = app.call(Method::PUT, "/admin/roles/reader", Some(&admin), Some(&widened)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(list().await.status(), 200);
        assert_eq!(app.revoke(&admin, id, "reader").await.status(), 204);
        assert_detail(list().await, 403, "Not enough permissions").await;
        assert_eq!(app.me(&token).await.status(), 200, "the session itself lives on");
    }

    /// An admin demoted by another admin is refused on its next admin call, same token.
    async fn a_demoted_admin_is_refused_on_its_next_call(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let root = app.admin_token().await;
        let (id, second) = app.user_with_role(&root, "second", "admin").await;
        let list = || app.call(Method::GET, "/admin/users", Some(&second), None);
        assert_eq!(list().await.status(), 200);

        assert_eq!(app.revoke(&root, id, "admin").await.status(), 204);

        assert_detail(list().await, 403, "Not enough permissions").await;
        let me = app.me_json(&second).await;
        assert_eq!(me["is_admin"], json!(false), "{me}");
        assert_eq!(me["roles"], json!(["user"]), "{me}");
    }

    /// Nobody acts above their own permissions: a `roles:write` holder cannot make itself (or
    /// anyone) an admin, create or grant a role with a permission it lacks, or take a role from
    /// an account that holds more than it does; a `users:write` holder cannot disable an admin.
    /// Within its own permissions each does its job.
    async fn nobody_acts_above_their_own_permissions(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let root = id_of(&app.me_json(&admin).await);
        app.create_role(&admin, "granter", &["roles:write"]).await;
        app.create_role(&admin, "disabler", &["users:write"]).await;
        app.create_role(&admin, "reader", &["users:read"]).await;
        let (granter, granter_token) = app.user_with_role(&admin, "granter1", "granter").await;
        let (_, disabler_token) = app.user_with_role(&admin, "disabler1", "disabler").await;
        let plain = id_of(&app.create_user("plain1").await);
        let forbidden = "Not enough permissions";

        assert_detail(app.grant(&granter_token, granter, "admin").await, 403, forbidden).await;
        assert_detail(app.grant(&granter_token, plain, "admin").await, 403, forbidden).await;
        assert_detail(app.grant(&granter_token, plain, "reader").await, 403, forbidden).await;
        assert_detail(app.revoke(&granter_token, root, "admin").await, 403, forbidden).await;
        let wider = json!({ "name": "wider", "permissions": ["users:read"] });
        let created = app.call(Method::POST, "/admin/roles", Some(&granter_token), Some(&wider)).await;
        assert_detail(created, 403, forbidden).await;
        let edit = json!({ "permissions": ["roles:write", "users:delete"] });
        let edited = app.call(Method::PUT, "/admin/roles/granter", Some(&granter_token), Some(&edit)).await;
        assert_detail(edited, 403, forbidden).await;
        let deleted = app.call(Method::DELETE, "/admin/roles/reader", Some(&granter_token), None).await;
        assert_detail(deleted, 403, forbidden).await;
        let disabled = app.patch_user(&disabler_token, root, &json!({ "disabled": true })).await;
        assert_detail(disabled, 403, forbidden).await;
        assert_eq!(app.me_json(&admin).await["is_admin"], json!(true), "nothing changed");

        // Within their own permissions: grant a role it holds, create one no wider, disable a
        // plain account.
        assert_eq!(app.grant(&granter_token, plain, "granter").await.status(), 204);
        assert_eq!(app.grant(&granter_token, plain, "user").await.status(), 204);
        let narrow = json!({ "name": "narrow", "permissions": ["roles:write"] });
        let created = app.call(Method::POST, "/admin/roles", Some(&granter_token), Some(&narrow)).await;
        assert_eq!(created.status(), 201);
        // `plain` now holds `roles:write`, which the disabler lacks; a newcomer holds nothing.
        let disabled = app.patch_user(&disabler_token, plain, &json!({ "disabled": true })).await;
        assert_detail(disabled, 403, forbidden).await;
        let newcomer = id_of(&app.create_user("newcomer1").await);
        let disabled = app.patch_user(&disabler_token, newcomer, &json!({ "disabled": true })).await;
        assert_eq!(disabled.status(), 200);
    }

    /// The permission check comes before anything about the request: no token is 401 and a
    /// caller without the permission 403, whatever the id, the role name or the query.
    async fn refusals_come_before_any_other_answer(backend: Backend) {
        let app = spawn_admin_app(backend).await;
        let admin = app.admin_token().await;
        let (_, plain) = app.user_with_role(&admin, "plain2", "user").await;
        let bad = json!({ "disabled": "maybe" });
        for (method, path, body) in [
            (Method::GET, "/admin/users/abc", None),
            (Method::GET, "/admin/users/999999", None),
            (Method::GET, "/admin/users?limit=0&cursor=zzz", None),
            (Method::PATCH, "/admin/users/999999", Some(&bad)),
            (Method::DELETE, "/admin/roles/Bad", None),
            (Method::PUT, "/admin/users/0/roles/nope", None),
        ] {
            let response = app.call(method.clone(), path, None, body).await;
            assert_detail(response, 401, "Could not validate credentials").await;
            let response = app.call(method, path, Some(&plain), body).await;
            assert_detail(response, 403, "Not enough permissions").await;
        }
    }
}
