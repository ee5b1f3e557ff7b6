//! The web dashboard: one page, its script, styles and icon, compiled into
//! the binary (`include_str!`) and served by the job's own REST endpoint
//! at `/`.
//!
//! Why embedded and plain: a job has no other server to put a UI on and may
//! run where nothing can be downloaded, so everything the page needs ships
//! with the job and nothing is fetched from elsewhere at run time (the
//! `Content-Security-Policy` below forbids it). The page is hand-written
//! HTML, CSS and JavaScript with no build step, so CI needs no JavaScript
//! toolchain. It reads the same REST routes any other client reads
//! (`web/dashboard.js`), so it shows nothing they do not.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file: where it is served, its content type, its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the dashboard. `index.html` is served at `/`, the others
/// under `/web/`.
const ASSETS: [Asset; 4] = [
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/index.html"),
    },
    Asset {
        path: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/dashboard.js"),
    },
    Asset {
        path: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/dashboard.css"),
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../web/favicon.svg"),
    },
];

/// Only this origin's own files and REST routes: no script, style, font or
/// image from anywhere else, no inline script, no framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Whether `path` is one of the dashboard's files: these are served
/// without the REST token (they are the same for every job and hold no job
/// data; the page sends the token with its API requests).
pub(crate) fn is_asset(path: &str) -> bool {
    path == "/"
        || path
            .strip_prefix("/web/")
            .is_some_and(|name| ASSETS.iter().any(|a| a.path == name))
}

/// `GET /` and `GET /web/{file}`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/web/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

/// The embedded file `name` with its headers, or 404.
fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == name) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "errors": [format!("not found: GET /web/{name}")]
            })),
        )
            .into_response();
    };
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        // The files change only with the binary; a browser asks again
        // (cheaply) rather than keep a stale script from an older job.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, asset.body).into_response()
}
