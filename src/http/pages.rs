//! The small HTML pages behind the links in cerego's mail: the password-reset form and the
//! e-mail confirmation button, and what they answer when posted.
//!
//! They need no JavaScript and load nothing (inline CSS only), and post to *relative* actions
//! (`reset`, `verify`), so they work behind a path prefix. Their URL holds a token, so every
//! page is `no-store`, sends no `Referer`, cannot be framed, and its Content-Security-Policy
//! forbids everything but its own inline style and posting to its own origin. Everything
//! interpolated is HTML-escaped.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::domain::PasswordError;

/// The Content-Security-Policy of every page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Title of the password-reset form.
pub const RESET_TITLE: &str = "Choose a new password";
/// Title of the page after a successful reset.
pub const RESET_DONE_TITLE: &str = "Password changed";
/// Title of the e-mail confirmation page.
pub const VERIFY_TITLE: &str = "Confirm your email";
/// Title of the page after a successful confirmation.
pub const VERIFY_DONE_TITLE: &str = "Email confirmed";
/// Title of the page for a missing, unknown, used or expired link.
pub const INVALID_TITLE: &str = "Link invalid or expired";
/// The reset form's message when the two passwords differ.
pub const MISMATCH: &str = "The two passwords do not match.";

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f6f7f9;color:#1d2330;\
margin:0;padding:2rem 1rem}main{max-width:26rem;margin:0 auto;background:#fff;\
border:1px solid #dde1e7;border-radius:8px;padding:1.5rem 1.75rem}h1{font-size:1.35rem;\
margin:0 0 1rem}label{display:block;margin:1rem 0 .3rem;font-weight:600}\
input[type=password]{box-sizing:border-box;width:100%;padding:.55rem;font-size:1rem;\
border:1px solid #b9c0cb;border-radius:4px}button{margin-top:1.25rem;padding:.6rem 1.1rem;\
font-size:1rem;border:0;border-radius:4px;background:#2456c7;color:#fff;cursor:pointer}\
.error{background:#fdecec;border:1px solid #f1b5b5;color:#8a1c1c;padding:.6rem .75rem;\
border-radius:4px}.hint{color:#5b6472;font-size:.9rem}";

/// `text` with `& < > " '` escaped, safe in element content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` (escaped) and `body` (already HTML), with every header the pages send.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{title} · cerego</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}</main>\n\
         </body>\n</html>\n",
        title = escape(title),
    );
    // An error page keeps its HTML: the API-wide layer that gives error answers a JSON body
    // (`middleware::json_error_bodies`) leaves `text/html` answers alone.
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A paragraph of `text` (escaped).
fn paragraph(text: &str) -> String {
    format!("<p>{}</p>\n", escape(text))
}

/// The password-reset form for `token`, with `message` (an error to show) above it: 200 when
/// first shown, 422 when shown again after a refused password.
pub fn reset_form(status: StatusCode, token: &str, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    let body = format!(
        "{message}<form method=\"post\" action=\"reset\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         <label for=\"new_password\">New password</label>\n\
         <input id=\"new_password\" name=\"new_password\" type=\"password\" \
         autocomplete=\"new-password\" required>\n\
         <label for=\"confirm_password\">Repeat the new password</label>\n\
         <input id=\"confirm_password\" name=\"confirm_password\" type=\"password\" \
         autocomplete=\"new-password\" required>\n\
         <p class=\"hint\">At least 8 characters; not a common password, and not your username \
         or email.</p>\n\
         <button type=\"submit\">Set new password</button>\n</form>\n",
        token = escape(token),
    );
    page(status, RESET_TITLE, &body)
}

/// 200 after a successful reset.
pub fn reset_done() -> Response {
    page(
        StatusCode::OK,
        RESET_DONE_TITLE,
        &paragraph(
            "Your password has been changed and every session was signed out. \
             Log in with your new password.",
        ),
    )
}

/// 400 for a reset link that is missing its token, unknown, used or expired.
pub fn reset_invalid() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        INVALID_TITLE,
        &paragraph(
            "This password reset link is invalid, has already been used, or has expired. \
             Request a new link and use the newest one you received.",
        ),
    )
}

/// The e-mail confirmation page for `token`: one button, posting to `verify`.
pub fn verify_form(token: &str) -> Response {
    let body = format!(
        "<p>Confirm that this email address belongs to your cerego account.</p>\n\
         <form method=\"post\" action=\"verify\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         <button type=\"submit\">Confirm my email</button>\n</form>\n",
        token = escape(token),
    );
    page(StatusCode::OK, VERIFY_TITLE, &body)
}

/// 200 after a successful confirmation.
pub fn verify_done() -> Response {
    page(
        StatusCode::OK,
        VERIFY_DONE_TITLE,
        &paragraph("Your email address is confirmed. You can close this page."),
    )
}

/// 400 for a confirmation link that is missing its token, unknown, used or expired.
pub fn verify_invalid() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        INVALID_TITLE,
        &paragraph(
            "This confirmation link is invalid, has already been used, or has expired. \
             Log in and request a new verification email.",
        ),
    )
}

/// A page for an error a person meets on these pages (the database down, hashing saturated, a
/// bug): the status and `Retry-After` of the API's answer, in HTML. The API's answer is built
/// first, so the error is logged exactly as for a JSON client.
pub fn failure(err: ApiError) -> Response {
    let api = err.into_response();
    let status = api.status();
    let (title, text) = match status {
        StatusCode::TOO_MANY_REQUESTS => (
            "Too many attempts",
            "Too many attempts in a short time. Wait a moment, then try again.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "Try again in a moment",
            "The service cannot answer right now. Your link still works: try again in a moment.",
        ),
        _ => (
            "Something went wrong",
            "Something went wrong on our side. Your link still works: try again later.",
        ),
    };
    let mut response = page(status, title, &paragraph(text));
    if let Some(retry) = api.headers().get(header::RETRY_AFTER) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    response
}

/// What the reset form says about a password the policy refuses.
pub fn password_message(rule: PasswordError) -> &'static str {
    match rule {
        PasswordError::TooShort => "The password must have at least 8 characters.",
        PasswordError::TooLong => "The password must be at most 72 bytes long.",
        PasswordError::Common => "This password is too common: choose another one.",
        PasswordError::SameAsIdentity => {
            "The password must not be the same as your username or email."
        }
    }
}

/// The `token` parameter of a query string (the first, if repeated); `None` if absent or the
/// query cannot be parsed.
pub fn token_param(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn errors_met_on_a_page_are_pages_with_the_api_s_status_and_retry_after() {
        let busy = failure(ApiError::Busy);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            busy.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(busy.headers()[header::REFERRER_POLICY], "no-referrer");
        assert!(text(busy).await.contains("Try again in a moment"));

        let down = failure(ApiError::Unavailable(anyhow::anyhow!("connection refused")));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let page = text(down).await;
        assert!(page.contains("<title>Try again in a moment"), "{page}");
        assert!(
            !page.contains("connection refused"),
            "the cause stays in the log"
        );

        let bug = failure(ApiError::Unexpected(anyhow::anyhow!("a bug")));
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text(bug).await.contains("Something went wrong"));
    }

    #[test]
    fn escape_covers_the_five_characters_that_matter() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("crg_pr_abc-_09"), "crg_pr_abc-_09");
        assert_eq!(escape("é ü 😀"), "é ü 😀");
    }

    #[tokio::test]
    async fn the_reset_form_escapes_what_it_interpolates_and_posts_to_a_relative_action() {
        let hostile = r#""><script>alert(1)</script><input value=""#;
        let response = reset_form(StatusCode::UNPROCESSABLE_ENTITY, hostile, Some("<b>no</b>"));
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = text(response).await;
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>no</b>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;no&lt;/b&gt;"), "{html}");
        assert!(
            html.contains(r#"<form method="post" action="reset">"#),
            "{html}"
        );
        for name in ["token", "new_password", "confirm_password"] {
            assert!(html.contains(&format!("name=\"{name}\"")), "{name}");
        }
        assert!(!html.contains("http"), "no external reference: {html}");
        assert!(!html.contains("<script"), "{html}");
    }

    #[tokio::test]
    async fn every_page_sends_the_protective_headers() {
        let pages = [
            reset_form(StatusCode::OK, "crg_pr_x", None),
            reset_done(),
            reset_invalid(),
            verify_form("crg_ev_x"),
            verify_done(),
            verify_invalid(),
        ];
        for response in pages {
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        }
        assert_eq!(reset_invalid().status(), StatusCode::BAD_REQUEST);
        assert_eq!(verify_invalid().status(), StatusCode::BAD_REQUEST);
        let verify = text(verify_form("crg_ev_abc")).await;
        assert!(verify.contains("Confirm my email"), "{verify}");
        assert!(verify.contains(r#"action="verify""#), "{verify}");
        assert!(verify.contains(r#"value="crg_ev_abc""#), "{verify}");
    }

    #[test]
    fn the_token_parameter_is_read_from_the_query() {
        assert_eq!(
            token_param(Some("token=crg_pr_a%2Db&x=1")).as_deref(),
            Some("crg_pr_a-b")
        );
        assert_eq!(
            token_param(Some("x=1&token=a&token=b")).as_deref(),
            Some("a")
        );
        assert_eq!(token_param(Some("x=1")), None);
        assert_eq!(token_param(None), None);
        assert_eq!(token_param(Some("token=")).as_deref(), Some(""));
    }
}
