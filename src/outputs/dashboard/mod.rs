//! The dashboard: one web page at `/` that polls the JSON API (`/api/v1/*`) and draws,
//! per stream, the dataset drift share over recent windows, each feature's primary score
//! against its threshold, and the reference vs current distribution of a selected feature.
//!
//! Every asset is compiled into the binary with `include_str!` (no CDN, no web fonts, no
//! chart library: the charts are SVG drawn by `app.js`), so the page works offline and
//! always matches the API of the binary that serves it. The page itself is public; the
//! API behind it keeps its optional bearer token, which the page asks for on a 401 and
//! keeps in the browser's `localStorage`.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Only our own files and our own API: the page has no inline script or style, so a
/// strict policy costs nothing (the favicon is an inline `data:` SVG).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes: `GET /`, `GET /assets/app.js` and `GET /assets/style.css`.
/// Generic over the state so it merges into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small files: always revalidate, so an upgraded binary never serves a stale page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::routes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 GET; returns the status line, the headers (lower-cased names) and the body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (String, Vec<(String, String)>, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_content_type() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app: axum::Router = routes::<()>();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        for (path, content_type, marker) in [
            ("/", "text/html; charset=utf-8", "<!doctype html>"),
            ("/assets/app.js", "text/javascript; charset=utf-8", "use strict"),
            ("/assets/style.css", "text/css; charset=utf-8", "--drift"),
        ] {
            let (status, headers, body) = get(addr, path).await;
            assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
            assert_eq!(header(&headers, "content-type"), Some(content_type), "{path}");
            assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
            assert!(header(&headers, "content-security-policy").is_some(), "{path}");
            assert!(body.contains(marker), "{path} does not contain {marker:?}");
        }
        let (status, _, _) = get(addr, "/assets/missing.js").await;
        assert!(status.starts_with("HTTP/1.1 404"), "{status}");
        server.abort();
    }

    #[test]
    fn page_loads_nothing_from_outside() {
        // Offline by construction: no absolute URL may be fetched by the page.
        for (name, text) in
            [("index.html", super::INDEX_HTML), ("app.js", super::APP_JS), ("style.css", super::STYLE_CSS)]
        {
            for needle in ["http://", "https://", "//fonts.", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(needle) && !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{name} mentions {needle}: {hits:?}");
            }
        }
        // Relative, so the page also works behind a reverse proxy under a path prefix.
        assert!(super::INDEX_HTML.contains(r#"src="assets/app.js""#));
        assert!(super::INDEX_HTML.contains(r#"href="assets/style.css""#));
    }
}
