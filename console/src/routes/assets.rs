//! The page, embedded in the binary: no CDN, no build step. Script and style are files of
//! their own so that the Content-Security-Policy allows no inline code.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const CONSOLE_JS: &str = include_str!("../../ui/console.js");
const PLOT_JS: &str = include_str!("../../ui/plot.js");
const CONSOLE_CSS: &str = include_str!("../../ui/console.css");

/// `/`, `/console.js`, `/plot.js` and `/console.css`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(CONSOLE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/plot.js",
            get(|| async { asset(PLOT_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(CONSOLE_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
