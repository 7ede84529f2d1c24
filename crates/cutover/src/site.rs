//! Static components: cutover serves the files of the active release itself.
//!
//! The active release is a [`Site`] behind an `ArcSwapOption`; a switch is one pointer store.
//! A response already started keeps its open file (and `Arc<Site>`), so it completes from the
//! old release even after the switch, or after the old release directory is pruned.
//!
//! Served: GET and HEAD; Content-Type by extension; strong ETags from the release manifest
//! (content hashes, so they never collide across releases); Last-Modified; If-None-Match and
//! If-Modified-Since (304); single byte ranges with If-Range (206/416); precompressed `.br` and
//! `.gz` siblings chosen by Accept-Encoding; `index.html` for directories (with a redirect to
//! the slash form); Cache-Control by glob; the SPA fallback for extension-less unknown paths.

use crate::config::StaticConfig;
use crate::proxy::{BoxError, ProxyBody, StatsSnapshot};
use crate::release::ReleaseId;
use crate::response::plain;
use arc_swap::ArcSwapOption;
use globset::{Glob, GlobSet, GlobSetBuilder};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Cache-Control when no configured glob matches: always revalidate (ETags make that cheap).
const DEFAULT_CACHE_CONTROL: &str = "no-cache";

/// One release's files, ready to serve.
pub struct Site {
    pub component: String,
    pub release: ReleaseId,
    root: PathBuf,
    /// Content sha256 by relative path: the source of ETags.
    manifest: BTreeMap<String, String>,
    spa_fallback: Option<String>,
    cache_globs: GlobSet,
    cache_values: Vec<HeaderValue>,
    metrics: crate::metrics::UpstreamMetrics,
    /// What `status` shows as this release's traffic (the metrics have the same, by status class).
    requests: AtomicU64,
    server_errors: AtomicU64,
}

impl Site {
    pub fn new(
        component: &str,
        release: ReleaseId,
        root: PathBuf,
        manifest: BTreeMap<String, String>,
        config: &StaticConfig,
    ) -> Result<Site, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        let mut cache_values = Vec::new();
        for rule in &config.cache {
            builder.add(Glob::new(&rule.glob)?);
            cache_values.push(
                HeaderValue::from_str(&rule.control)
                    .unwrap_or(HeaderValue::from_static(DEFAULT_CACHE_CONTROL)),
            );
        }
        Ok(Site {
            metrics: crate::metrics::UpstreamMetrics::new(component, release.as_str()),
            component: component.to_owned(),
            release,
            root,
            manifest,
            spa_fallback: config.spa_fallback.clone(),
            cache_globs: builder.build()?,
            cache_values,
            requests: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
        })
    }

    pub fn file_count(&self) -> usize {
        self.manifest.len()
    }

    /// Requests this release answered, and how many of them with a 5xx.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            failed: self.server_errors.load(Ordering::Relaxed),
        }
    }

    fn cache_control(&self, relative: &str) -> HeaderValue {
        self.cache_globs
            .matches(relative)
            .first()
            .map(|&i| self.cache_values[i].clone())
            .unwrap_or(HeaderValue::from_static(DEFAULT_CACHE_CONTROL))
    }
}

/// The static counterpart of [`crate::proxy::Route`].
pub struct SiteRoute {
    current: ArcSwapOption<Site>,
}

impl Default for SiteRoute {
    fn default() -> Self {
        Self::new()
    }
}

impl SiteRoute {
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
        }
    }

    pub fn current(&self) -> Option<Arc<Site>> {
        self.current.load_full()
    }

    /// The atomic switch. Returns the site served before.
    pub fn switch(&self, next: Option<Arc<Site>>) -> Option<Arc<Site>> {
        if let Some(site) = &next {
            crate::metrics::active(&site.component, Some(site.release.as_str()));
        }
        self.current.swap(next)
    }
}

/// Decodes and checks a request path; `None` for anything that could leave the site.
fn relative_path(uri_path: &str) -> Option<Vec<String>> {
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .ok()?;
    let mut parts = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains('\0') || p.contains('\\') => return None,
            p => parts.push(p.to_owned()),
        }
    }
    Some(parts)
}

pub async fn handle<B>(route: &SiteRoute, req: Request<B>) -> Response<ProxyBody> {
    let Some(site) = route.current() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "cutover: no active release",
        );
    };
    let started = std::time::Instant::now();
    let mut response = serve(&site, &req).await;
    site.metrics.response(response.status().as_u16());
    site.requests.fetch_add(1, Ordering::Relaxed);
    if response.status().is_server_error() {
        site.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    site.metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(site.release.as_str()) {
        response.headers_mut().insert("x-release", value);
    }
    response
}

async fn serve<B>(site: &Arc<Site>, req: &Request<B>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(parts) = relative_path(req.uri().path()) else {
        return plain(StatusCode::BAD_REQUEST, "bad path");
    };
    let mut relative = parts.join("/");
    let mut path = site.root.join(&relative);
    let meta = tokio::fs::metadata(&path).await.ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        if !req.uri().path().ends_with('/') {
            // Built from the normalized path: `//docs` must not become `//docs/`, which a
            // browser reads as another host.
            let normalized: String = parts.iter().map(|p| format!("/{p}")).collect();
            let location = match req.uri().query() {
                Some(query) => format!("{normalized}/?{query}"),
                None => format!("{normalized}/"),
            };
            let mut response = plain(StatusCode::MOVED_PERMANENTLY, "moved");
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        relative = if relative.is_empty() {
            "index.html".into()
        } else {
            format!("{relative}/index.html")
        };
        path = site.root.join(&relative);
    }
    if !site.manifest.contains_key(&relative) {
        let extensionless = parts.last().is_none_or(|last| !last.contains('.'));
        match (&site.spa_fallback, extensionless) {
            (Some(fallback), true) if site.manifest.contains_key(fallback) => {
                relative = fallback.clone();
                path = site.root.join(&relative);
            }
            _ => return plain(StatusCode::NOT_FOUND, "not found"),
        }
    }
    // Only manifest entries are served, and the manifest lists regular files reached without
    // following any link: no request can leave the release, with no per-request I/O to check.
    send_file(site, req, &relative, &path).await
}

/// Picks `.br` or `.gz` when the client accepts it and the release has one.
fn choose_encoding(
    site: &Site,
    relative: &str,
    headers: &HeaderMap,
) -> Option<(&'static str, String)> {
    let accepted = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut pieces = item.trim().split(';');
            let coding = pieces.next()?.trim().to_ascii_lowercase();
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0).then_some(coding)
        })
        .collect::<Vec<_>>();
    [("br", "br"), ("gzip", "gz")]
        .into_iter()
        .find_map(|(coding, ext)| {
            let variant = format!("{relative}.{ext}");
            (accepted.iter().any(|a| a == coding) && site.manifest.contains_key(&variant))
                .then_some((coding, variant))
        })
}

fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// A single `bytes=` range resolved against `len`: Ok(Some(start..=end)), Ok(None) to serve the
/// whole file (absent, multiple or malformed ranges), Err(()) when unsatisfiable.
fn parse_range(header: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multipart ranges: the whole file is a valid answer
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let Ok(n) = suffix.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (start, "") => {
            let Ok(s) = start.parse::<u64>() else {
                return Ok(None);
            };
            (s, len.saturating_sub(1))
        }
        (start, end) => {
            let (Ok(s), Ok(e)) = (start.parse::<u64>(), end.parse::<u64>()) else {
                return Ok(None);
            };
            if e < s {
                return Ok(None);
            }
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if len == 0 || start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn send_file<B>(
    site: &Arc<Site>,
    req: &Request<B>,
    relative: &str,
    path: &Path,
) -> Response<ProxyBody> {
    let headers = req.headers();
    let encoding = choose_encoding(site, relative, headers);
    let (served_relative, served_path) = match &encoding {
        Some((_, variant)) => (variant.as_str(), site.root.join(variant)),
        None => (relative, path.to_owned()),
    };
    let mut file = match tokio::fs::File::open(&served_path).await {
        Ok(file) => file,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let Ok(meta) = file.metadata().await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file");
    };
    let len = meta.len();
    let hash = site
        .manifest
        .get(served_relative)
        .map_or("0", String::as_str);
    let etag = format!("\"{}\"", &hash[..hash.len().min(16)]);
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);

    let mut response = Response::builder();
    {
        let h = response.headers_mut().expect("builder is valid");
        let mime = mime_guess::from_path(relative).first_or_octet_stream();
        let content_type = match mime.type_() {
            mime_guess::mime::TEXT => format!("{mime}; charset=utf-8"),
            _ if mime.subtype() == mime_guess::mime::JAVASCRIPT
                || mime.subtype() == mime_guess::mime::JSON =>
            {
                format!("{mime}; charset=utf-8")
            }
            _ => mime.to_string(),
        };
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&etag).expect("hex etag"),
        );
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&httpdate::fmt_http_date(modified)).expect("http date"),
        );
        h.insert(header::CACHE_CONTROL, site.cache_control(relative));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if site.manifest.contains_key(&format!("{relative}.br"))
            || site.manifest.contains_key(&format!("{relative}.gz"))
        {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if let Some((coding, _)) = &encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
    }

    // Conditional requests (RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since).
    let not_modified = match headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        Some(inm) => etag_matches(inm, &etag),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                let secs = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                };
                secs(modified) <= secs(since)
            }),
    };
    if not_modified {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Empty::new().map_err(|n| match n {}).boxed_unsync())
            .expect("valid response");
    }

    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_ok => parse_range(r, len),
        _ => Ok(None),
    };
    let (status, start, count) = match range {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((start, end))) => {
            let value = format!("bytes {start}-{end}/{len}");
            response = response.header(header::CONTENT_RANGE, value);
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Err(()) => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_LENGTH, "0")
                .body(Empty::new().map_err(|n| match n {}).boxed_unsync())
                .expect("valid response");
        }
    };
    response = response
        .status(status)
        .header(header::CONTENT_LENGTH, count);
    if req.method() == Method::HEAD {
        return response
            .body(Empty::new().map_err(|n| match n {}).boxed_unsync())
            .expect("valid response");
    }
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file");
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 64 * 1024);
    let body = StreamBody::new(futures_util::StreamExt::map(stream, |chunk| {
        chunk.map(http_body::Frame::data).map_err(BoxError::from)
    }));
    response
        .body(BodyExt::boxed_unsync(body))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape() {
        assert_eq!(relative_path("/a/b.css").unwrap(), ["a", "b.css"]);
        assert_eq!(relative_path("/a/./b").unwrap(), ["a", "b"]);
        assert!(relative_path("/../etc/passwd").is_none());
        assert!(relative_path("/a/%2e%2e/%2e%2e/etc/passwd").is_none());
        assert!(relative_path("/a%00b").is_none());
        assert!(relative_path("/a%5c..%5cb").is_none());
        assert!(relative_path("/%ff").is_none());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-1", 100), Ok(None));
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"def\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
