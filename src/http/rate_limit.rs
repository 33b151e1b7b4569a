//! Rate limits at the HTTP edge: which rule a request answers to (the route table below), the
//! check before the handler runs (so a refused request costs no body read, no database query
//! and no bcrypt work), and the `RateLimit-Policy` / `RateLimit` header fields
//! (draft-ietf-httpapi-ratelimit-headers) on every answer of a limited route.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::client_ip::ClientIp;
use super::error::ApiError;
use super::extract::bearer_token;
use crate::auth::tokens::AccessClaims;
use crate::limits::{Decision, Rule, ip_key};

/// What a route answers to.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// One rule keyed by the client IP (a handler may check more, such as the login name).
    PerIp(Rule),
    /// `api_user` keyed by the token's session rather than its user: ending a session must stay
    /// possible while a stolen token spends the user's budget.
    PerSession,
    /// Never limited: probes and scrapes must get through an attack.
    Exempt,
}

/// The routes with their own rule. Any other request answers to `api_user` (keyed by user) with
/// a valid access token and `api_ip` without. A new route class is one line here (and, for a new
/// setting, its [`Rule`]).
#[rustfmt::skip]
const ROUTES: &[(Option<Method>, &str, Class)] = &[
    (Some(Method::POST),   "/auth/login",         Class::PerIp(Rule::LoginIp)),
    (Some(Method::POST),   "/auth/signup",        Class::PerIp(Rule::SignupIp)),
    (Some(Method::POST),   "/auth/refresh",       Class::PerIp(Rule::RefreshIp)),
    (Some(Method::POST),   "/auth/logout",        Class::PerSession),
    (Some(Method::POST),   "/auth/logout-all",    Class::PerSession),
    (Some(Method::DELETE), "/auth/sessions/{id}", Class::PerSession),
    (Some(Method::POST),   "/auth/password/forgot",     Class::PerIp(Rule::RecoveryIp)),
    (Some(Method::POST),   "/auth/email/verification",  Class::PerIp(Rule::RecoveryIp)),
    (None,                 "/healthz",            Class::Exempt),
    (None,                 "/readyz",             Class::Exempt),
    (None,                 "/metrics",            Class::Exempt),
];

/// The claims of the request's bearer token, verified here for the rule's key (signature,
/// expiry and claims; not the session), so the `CurrentUser` extractor does not verify it again.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedToken(pub AccessClaims);

/// The decisions taken for one request, which the handler can add to (the login name's rule)
/// and which become the response's header fields.
#[derive(Debug, Clone, Default)]
pub struct Checked(Arc<Mutex<Vec<Decision>>>);

impl Checked {
    fn push(&self, decision: Decision) {
        self.lock().push(decision);
    }

    fn take(&self) -> Vec<Decision> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Decision>> {
        // A panic while holding this lock leaves a plain Vec, still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes one request from `key`'s budget under `rule`, recording the decision in `checked` (when
/// there is one) for the header fields. 429 when the budget is spent, 503 when the store fails
/// and `RATE_LIMIT_FAIL_OPEN` is false.
pub async fn check(
    state: &AppState,
    checked: Option<&Checked>,
    rule: Rule,
    key: &str,
) -> Result<(), ApiError> {
    match state.limiter.check(rule, key).await {
        Err(unavailable) => Err(ApiError::Unavailable(unavailable.into())),
        Ok(None) => Ok(()),
        Ok(Some(decision)) => {
            if let Some(checked) = checked {
                checked.push(decision);
            }
            if decision.allowed {
                Ok(())
            } else {
                tracing::info!(rule = rule.name(), "rate limited");
                Err(ApiError::TooManyRequests {
                    retry_after: decision.retry_after,
                })
            }
        }
    }
}

/// Middleware: the route's rule, checked before the handler runs, and the header fields.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !state.limiter.enabled() {
        return next.run(req).await;
    }
    let class = req.extensions().get::<MatchedPath>().and_then(|path| {
        ROUTES
            .iter()
            .find(|(method, route, _)| {
                *route == path.as_str() && method.as_ref().is_none_or(|m| m == req.method())
            })
            .map(|(_, _, class)| *class)
    });
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0);
    let (rule, key) = match class {
        Some(Class::Exempt) => return next.run(req).await,
        Some(Class::PerIp(rule)) => (rule, ip_key(ip)),
        Some(Class::PerSession) | None => {
            let claims = bearer_token(req.headers()).and_then(|t| state.auth.token_claims(t));
            if let Some(claims) = claims {
                // The handler's `CurrentUser` takes these instead of verifying the token again.
                req.extensions_mut().insert(VerifiedToken(claims));
            }
            match (claims, class) {
                (Some(claims), Some(_)) => {
                    (Rule::ApiUser, format!("session:{}", claims.session.get()))
                }
                (Some(claims), None) => (Rule::ApiUser, claims.user.get().to_string()),
                (None, _) => (Rule::ApiIp, ip_key(ip)),
            }
        }
    };
    let checked = Checked::default();
    let mut response = match check(&state, Some(&checked), rule, &key).await {
        Ok(()) => {
            req.extensions_mut().insert(checked.clone());
            next.run(req).await
        }
        Err(refused) => refused.into_response(),
    };
    add_header_fields(&mut response, &checked.take());
    response
}

/// `RateLimit-Policy` and `RateLimit`, one item per rule checked, e.g.
/// `"login_ip";q=60;w=60` and `"login_ip";r=59;t=1`.
fn add_header_fields(response: &mut Response, decisions: &[Decision]) {
    if decisions.is_empty() {
        return;
    }
    let join = |item: &dyn Fn(&Decision) -> String| {
        decisions.iter().map(item).collect::<Vec<_>>().join(", ")
    };
    let policy = join(&|d| {
        format!(
            "\"{}\";q={};w={}",
            d.rule.name(),
            d.rate.quota(),
            d.rate.window_secs()
        )
    });
    let current = join(&|d| {
        format!(
            "\"{}\";r={};t={}",
            d.rule.name(),
            d.remaining,
            whole_seconds(d.reset)
        )
    });
    let headers = response.headers_mut();
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", current)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// `duration` in whole seconds, rounded up.
pub fn whole_seconds(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// `Retry-After` for a wait of `duration`: whole seconds, rounded up, at least 1.
pub fn retry_after(duration: Duration) -> HeaderValue {
    HeaderValue::from(whole_seconds(duration).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Rate;

    #[test]
    fn header_fields_list_one_item_per_rule_in_structured_field_syntax() {
        let rate = |raw| Rate::parse(raw).expect("valid").expect("on");
        let decisions = [
            Decision {
                rule: Rule::LoginIp,
                rate: rate("60/minute"),
                allowed: true,
                remaining: 59,
                reset: Duration::from_millis(1000),
                retry_after: Duration::ZERO,
            },
            Decision {
                rule: Rule::LoginAccount,
                rate: rate("20/minute"),
                allowed: false,
                remaining: 0,
                reset: Duration::from_millis(60_001),
                retry_after: Duration::from_millis(2_500),
            },
        ];
        let mut response = Response::new(axum::body::Body::empty());
        add_header_fields(&mut response, &decisions);
        let headers = response.headers();
        assert_eq!(
            headers["ratelimit-policy"],
            r#""login_ip";q=60;w=60, "login_account";q=20;w=60"#
        );
        assert_eq!(
            headers["ratelimit"],
            r#""login_ip";r=59;t=1, "login_account";r=0;t=61"#
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after(Duration::ZERO), "1");
        assert_eq!(retry_after(Duration::from_millis(10)), "1");
        assert_eq!(retry_after(Duration::from_millis(1000)), "1");
        assert_eq!(retry_after(Duration::from_millis(1001)), "2");
        assert_eq!(retry_after(Duration::from_secs(900)), "900");
    }
}
