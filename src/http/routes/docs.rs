//! `/docs` (Swagger UI), `/redoc` (ReDoc) and `/openapi.json`, served entirely from the binary:
//! no page references another host.

use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa_redoc::{Redoc, Servable};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// ReDoc 2.5.4's standalone bundle from the npm registry (see assets/vendor/redoc/README.md).
const REDOC_JS: &[u8] = include_bytes!("../../../assets/vendor/redoc/redoc.standalone.js");
const REDOC_JS_PATH: &str = "/redoc/redoc.standalone.js";
/// The only outside resource the bundle loads by itself: Redocly's logo in the sidebar footer.
const REDOC_LOGO_URL: &[u8] = b"https://cdn.redoc.ly/redoc/logo-mini.svg";

/// The bundle with the logo URL emptied (the component hides an image that fails to load), so
/// the page asks no other host. The asset on disk stays byte-for-byte the pinned npm file.
static REDOC_JS_SERVED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut out = Vec::with_capacity(REDOC_JS.len());
    let mut rest = REDOC_JS;
    while let Some(at) = rest
        .windows(REDOC_LOGO_URL.len())
        .position(|w| w == REDOC_LOGO_URL)
    {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + REDOC_LOGO_URL.len()..];
    }
    out.extend_from_slice(rest);
    out
});

/// The ReDoc page: utoipa-redoc's, with the script served by cerego and no web fonts.
const REDOC_HTML: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>cerego API — ReDoc</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <div id="redoc-container"></div>
    <script src="/redoc/redoc.standalone.js"></script>
    <script>
      Redoc.init($spec, $config, document.getElementById("redoc-container"));
    </script>
  </body>
</html>
"#;

/// The documentation routes for `openapi`.
pub fn router(openapi: OpenApi) -> Router {
    let swagger = SwaggerUi::new("/docs")
        .url("/openapi.json", openapi.clone())
        .config(
            Config::default()
                // The default validator badge loads an image from swagger.io.
                .validator_url("none")
                .persist_authorization(true)
                .try_it_out_enabled(true),
        );
    let redoc = Redoc::with_url("/redoc", openapi).custom_html(REDOC_HTML);
    Router::new()
        .merge(swagger)
        .merge(redoc)
        .route(REDOC_JS_PATH, get(redoc_js))
}

async fn redoc_js() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS_SERVED.as_slice(),
    )
}
