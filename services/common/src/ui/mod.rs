//! The chrome every agl dashboard shares: the page layout, the embedded stylesheet and
//! script, the response headers of an HTML page, value formatting and the span
//! [`waterfall`]. A service writes its own pages (what a rollout or a trace is belongs to
//! it) and renders them through [`Shell::page`]; this module knows nothing of either.
//!
//! Pages are rendered on the server with `maud` (templates checked at compile time, text
//! escaped by construction: span attributes are untrusted input). The script only adds
//! what needs it: live regions refreshed in place (`data-live`), span details loaded into
//! a side panel, and local times. Everything is embedded, so a dashboard works offline;
//! the Content-Security-Policy allows no script or style from anywhere else.

pub mod format;
pub mod waterfall;

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};

pub use maud;

const CSS: &str = include_str!("agl.css");
const JS: &str = include_str!("agl.js");
const ICON: &str = include_str!("icon.svg");

/// Where the assets are served; every page links them with a content hash, so they can be
/// cached for good.
pub const ASSETS: &str = "/ui/assets";

/// The assets under [`ASSETS`] (each `/name`); open without a key (`crate::auth`).
pub const ASSET_NAMES: &[&str] = &["/agl.css", "/agl.js", "/icon.svg"];

/// A short hash of the embedded assets, so that a new build is never served stale ones.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    // FNV-1a: stable across builds and platforms, which `std`'s hasher is not.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in CSS.bytes().chain(JS.bytes()).chain(ICON.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h >> 32)
});

/// What a service's pages have in common: its name and its navigation.
#[derive(Debug, Clone, Copy)]
pub struct Shell {
    /// Shown in the header and the title, e.g. `agl-store`.
    pub service: &'static str,
    /// `(href, label)` of each navigation entry.
    pub nav: &'static [(&'static str, &'static str)],
}

impl Shell {
    /// A whole page: `active` is the navigation entry to mark, `body` the page's content.
    pub fn page(&self, title: &str, active: &str, body: &Markup) -> Response {
        let v = VERSION.as_str();
        html_response(
            StatusCode::OK,
            html! {
                (DOCTYPE)
                html lang="en" {
                    head {
                        meta charset="utf-8";
                        meta name="viewport" content="width=device-width, initial-scale=1";
                        title { (title) " · " (self.service) }
                        link rel="icon" type="image/svg+xml" href={ (ASSETS) "/icon.svg?v=" (v) };
                        link rel="stylesheet" href={ (ASSETS) "/agl.css?v=" (v) };
                        script src={ (ASSETS) "/agl.js?v=" (v) } defer {}
                    }
                    body {
                        header.top {
                            a.brand href="/" { span.logo { "⚡" } (self.service) }
                            nav {
                                @for (href, label) in self.nav {
                                    a href=(href) class=[(*href == active).then_some("active")] { (label) }
                                }
                            }
                        }
                        main { (body) }
                    }
                }
            },
        )
    }

    /// The page of an error (unknown id, bad filter): the status with a sentence.
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        let mut response = self.page(
            status.canonical_reason().unwrap_or("Error"),
            "",
            &html! {
                section.error {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            },
        );
        *response.status_mut() = status;
        response
    }
}

/// `s` as one URL path segment (or query value): everything but RFC 3986's unreserved
/// characters percent-encoded, so that ids with `/`, `?` or spaces stay one segment.
pub fn path_segment(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An HTML response with the headers every dashboard page carries: never cached (the data
/// is live), no framing, no sniffing, and scripts only from this origin.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    // By value: a rollout page of thousands of spans is megabytes, not copied again here.
    let mut response = (status, markup.0).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        // Inline `style` attributes carry the waterfall's bar positions; scripts stay
        // external, so text in a span can never run.
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A fragment of a page (a span's details), for the script to place.
pub fn fragment(markup: Markup) -> Response {
    html_response(StatusCode::OK, markup)
}

/// The routes of the embedded assets (stylesheet, script, icon).
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    fn asset(body: &'static str, kind: &'static str) -> Response {
        (
            [
                (header::CONTENT_TYPE, kind),
                // Linked with a content hash: a changed asset has another URL.
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response()
    }
    Router::new()
        .route(
            &format!("{ASSETS}/agl.css"),
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            &format!("{ASSETS}/agl.js"),
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            &format!("{ASSETS}/icon.svg"),
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
}

/// JSON text shown pretty-printed (or as it came, when it is not JSON).
pub fn json_block(id: Option<&str>, raw: &str) -> Markup {
    let pretty = serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_owned());
    html! { pre.json id=[id] { (pretty) } }
}

/// A value pretty-printed as JSON.
pub fn json_value(id: Option<&str>, value: &serde_json::Value) -> Markup {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json id=[id] { (pretty) } }
}

/// A status as a coloured badge (the class is the status itself).
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge s-" (status.to_ascii_lowercase()) } { (status) } }
}

/// An epoch time shown in UTC, turned into the reader's local time by the script.
pub fn time(t: Option<f64>) -> Markup {
    match t {
        Some(t) if t.is_finite() => {
            html! { time datetime=(format::iso(t)) { (format::utc(t)) } }
        }
        _ => html! { span.muted { "—" } },
    }
}

/// Links to the previous and next page of a list of `total` items.
pub fn pager(total: usize, offset: usize, limit: usize, href: impl Fn(usize) -> String) -> Markup {
    let end = (offset + limit).min(total);
    html! {
        nav #pager .pager {
            @if offset > 0 {
                a.prev href=(href(offset.saturating_sub(limit))) { "← Newer" }
            } @else {
                span.prev.disabled { "← Newer" }
            }
            span.range {
                @if total == 0 { "nothing" } @else { (offset + 1) "–" (end) }
                " of " span #total { (total) }
            }
            @if end < total {
                a.next href=(href(end)) { "Older →" }
            } @else {
                span.next.disabled { "Older →" }
            }
        }
    }
}

/// Raw markup that is already safe (only for text this crate writes itself).
pub fn trusted(s: &'static str) -> PreEscaped<&'static str> {
    PreEscaped(s)
}
