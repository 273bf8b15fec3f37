//! The dashboard: `runner ui` serves the store read-only to a browser, and `runner report` writes the same
//! views as one self-contained HTML file.
//!
//! **Safe by construction.** The store is opened read-only (a pool of connections, one per request in
//! flight); only `GET` (and `HEAD`) is answered, anything else is 405; the only files served are the page
//! and its scripts, embedded in the binary (no part of a request path reaches the file system); every API
//! answer comes from [`api`] with bound parameters and bounded results (no SQL from the browser); an
//! unknown path or run is 404; a request for another host name is 421 ([`http`]: no DNS rebinding);
//! every answer forbids sniffing, framing and any source but itself. It listens on 127.0.0.1 unless told
//! otherwise. A store that a starting sweep has not filled yet is served as empty until it is.
//!
//! The front end (`assets/app.js`, plain JavaScript) draws its charts with uPlot, vendored in
//! `assets/vendor` with its version and licence (`refresh.sh` there fetches another version from the
//! npm registry): nothing is fetched from elsewhere when a page loads, and no Node toolchain builds it.
//!
//! Reads the store only; imports `store` and the rest of `report`, never `sweep` or the binary's code.

pub mod api;
pub mod http;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::store::{Store, WeightsKind};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const UPLOT_JS: &str = include_str!("assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/vendor/uPlot.min.css");
/// The vendored uPlot's version and licence, as shipped beside it.
pub const UPLOT_VERSION: &str = include_str!("assets/vendor/VERSION");

/// The page with its scripts and styles inline, and `data` (a script defining `window.MLP_DATA`, or
/// nothing for the live page). Text is put in raw: `</` inside a script is escaped by [`script_json`].
fn page(data: &str) -> String {
    // The data last: nothing in it is ever taken for a placeholder.
    INDEX
        .replace("/*UPLOT_CSS*/", UPLOT_CSS)
        .replace("/*APP_CSS*/", APP_CSS)
        .replace("/*UPLOT_JS*/", UPLOT_JS)
        .replace("/*APP_JS*/", APP_JS)
        .replacen("/*DATA*/", data, 1)
}

/// JSON safe to put inside a `<script>`: `<`, `>` and `&` as \u escapes, so that no string in the data
/// can close the script or open a comment.
fn script_json(v: &Json) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// An HTTP answer: status, content type, body, and extra headers.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(v: &Json) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    fn text(status: u16, msg: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: msg.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }
}

/// Percent-decode a URL component (`+` is not a space in a path).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Answer one request: `method` and the request target (path and query) as sent.
pub fn answer(store: &Store, method: &str, target: &str) -> Reply {
    if method != "GET" && method != "HEAD" {
        let mut r = Reply::text(
            405,
            "only GET is served: the dashboard reads the store and changes nothing",
        );
        r.headers.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let result = route(store, path);
    match result {
        Ok(r) => r,
        Err(Error::Usage(msg)) => Reply::text(404, &msg),
        Err(e @ Error::Corrupt { .. }) => Reply::text(500, &e.to_string()),
        Err(e) => Reply::text(500, &e.to_string()),
    }
}

fn route(store: &Store, path: &str) -> Result<Reply> {
    let not_found = || {
        Error::Usage(format!(
            "not found: {}",
            crate::text::clean(&crate::text::truncate(path, 200))
        ))
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode(s).ok_or_else(not_found))
        .collect::<Result<_>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    Ok(match segs.as_slice() {
        [] | ["index.html"] => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: page("").into_bytes(),
            headers: Vec::new(),
        },
        ["api", "store"] => Reply::json(&api::store_info(store)),
        ["api", "version"] => Reply::json(&api::version(store)?),
        ["api", "experiments"] => Reply::json(&api::experiments(store)?),
        ["api", "runs"] => Reply {
            status: 200,
            content_type: "application/json",
            body: api::runs_text(store)?.into_bytes(),
            headers: Vec::new(),
        },
        ["api", "experiment", name] => Reply::json(&api::experiment(store, name)?),
        ["api", "run", id] => Reply::json(&api::run(store, api::run_id(store, id)?)?),
        ["api", "run", id, "gallery"] => Reply::json(&super::errors::gallery(
            store,
            api::run_id(store, id)?,
            super::errors::GALLERY,
        )?),
        ["api", "run", id, "export.safetensors"] => {
            let id = api::run_id(store, id)?;
            let m = super::export::load(store, id, WeightsKind::Final)?;
            let mut r = Reply {
                status: 200,
                content_type: "application/octet-stream",
                body: super::export::safetensors_bytes(&m)?,
                headers: Vec::new(),
            };
            r.headers.push((
                "Content-Disposition",
                format!("attachment; filename=\"run-{id}.safetensors\""),
            ));
            r
        }
        _ => return Err(not_found()),
    })
}

/// How `runner ui` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub db: PathBuf,
    pub addr: SocketAddr,
}

/// The headers every answer carries: nothing cached, no content sniffed, never framed by another page,
/// no script, style, image or connection from anywhere but the page itself.
const SAFETY_HEADERS: [(&str, &str); 7] = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
];

/// A running dashboard server.
pub struct Server {
    listener: http::Listener,
    pub addr: SocketAddr,
}

impl Server {
    /// Check the store (read-only; it may still be empty) and listen; requests are answered on
    /// background threads until [`Server::stop`].
    pub fn start(opts: &ServeOptions) -> Result<Server> {
        // The store must be there now: a mistyped --db is an error before anything listens.
        if !opts.db.exists() {
            Store::open_read_only(&opts.db)?;
        }
        Store::open_read_only_or_empty(&opts.db)?;
        let pool: Arc<Mutex<Vec<Store>>> = Arc::new(Mutex::new(Vec::new()));
        let db = opts.db.clone();
        let handle = move |req: &http::Request| -> http::Response {
            let store = pool.lock().ok().and_then(|mut p| p.pop());
            let store = match store {
                Some(s) => Ok(Some(s)),
                None => Store::open_read_only_or_empty(&db),
            };
            let reply = match &store {
                Ok(Some(s)) => answer(s, &req.method, &req.target),
                Ok(None) => answer_empty(&req.method, &req.target),
                Err(e) => Reply::text(500, &e.to_string()),
            };
            if let (Ok(Some(s)), Ok(mut p)) = (store, pool.lock()) {
                p.push(s);
            }
            let mut headers: Vec<(String, String)> =
                vec![("Content-Type".into(), reply.content_type.into())];
            headers.extend(
                SAFETY_HEADERS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            headers.extend(reply.headers.into_iter().map(|(k, v)| (k.to_string(), v)));
            http::Response {
                status: reply.status,
                headers,
                body: reply.body,
            }
        };
        let listener = http::Listener::start(opts.addr, Arc::new(handle)).map_err(|e| {
            Error::Usage(format!(
                "cannot listen on {}: {e}; choose another --port (or --port 0 for a free one)",
                opts.addr
            ))
        })?;
        Ok(Server {
            addr: listener.addr,
            listener,
        })
    }

    /// Stop answering.
    pub fn stop(self) {
        self.listener.stop();
    }

    /// Serve until `stop` is set (Ctrl-C).
    pub fn wait(self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.stop();
    }
}

/// The answers for a store that exists but holds nothing yet (a sweep is creating it): the page, and
/// empty lists, so that the page shows that it waits for the first run.
fn answer_empty(method: &str, target: &str) -> Reply {
    if method != "GET" && method != "HEAD" {
        return Reply::text(405, "only GET is served");
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    match path.trim_end_matches('/') {
        "" | "/index.html" => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: page("").into_bytes(),
            headers: Vec::new(),
        },
        "/api/version" => Reply::json(&json!({"version": "empty", "runs": 0, "running": 0})),
        "/api/experiments" => Reply::json(&json!({"experiments": [], "runs": 0, "empty": true})),
        "/api/runs" => Reply::json(&json!({"columns": [], "rows": [], "empty": true})),
        "/api/store" => Reply::json(&json!({"empty": true})),
        _ => Reply::text(404, "the store holds no runs yet"),
    }
}

/// The names in an `/api/experiments` answer, in its order.
fn experiment_names(all: &Json) -> Vec<String> {
    all["experiments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The most runs a static report holds the pages of.
pub const MAX_REPORT_RUNS: usize = 5000;

/// `runner report`: every view of the given experiments (all when empty) as one HTML file, data,
/// scripts and styles inline; nothing is fetched when it is opened.
pub fn report(store: &Store, experiments: &[String]) -> Result<String> {
    let mut apis = serde_json::Map::new();
    let mut all = api::experiments(store)?;
    if !experiments.is_empty() {
        let known = experiment_names(&all);
        for e in experiments {
            if !known.contains(e) {
                return Err(Error::Usage(format!(
                    "no experiment `{}` in {}; experiments: {}",
                    crate::text::clean(e),
                    store.path().display(),
                    crate::text::clean(&known.join(", "))
                )));
            }
        }
        if let Some(a) = all["experiments"].as_array_mut() {
            a.retain(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| experiments.iter().any(|x| x == n))
            });
        }
    }
    let names = experiment_names(&all);
    let mut runs = api::runs(store)?;
    let exp_col = runs["columns"]
        .as_array()
        .and_then(|c| c.iter().position(|x| x == "experiment"))
        .unwrap_or(1);
    if let Some(rows) = runs["rows"].as_array_mut() {
        rows.retain(|r| {
            r[exp_col]
                .as_str()
                .is_some_and(|n| names.iter().any(|x| x == n))
        });
        if rows.len() > MAX_REPORT_RUNS {
            return Err(Error::Usage(format!(
                "{} runs are more than a report holds ({MAX_REPORT_RUNS}); name fewer experiments (runner \
                 report EXPERIMENT...), or use runner ui",
                rows.len()
            )));
        }
    }
    let ids: Vec<i64> = runs["rows"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
        .unwrap_or_default();
    for name in &names {
        // An experiment without finished runs has no page of its own in a report.
        if let Ok(v) = api::experiment(store, name) {
            apis.insert(format!("/api/experiment/{}", url_component(name)), v);
        }
    }
    for id in ids {
        apis.insert(format!("/api/run/{id}"), api::run(store, id)?);
    }
    // The gallery of misclassified digits of each experiment's best run (images of every run would
    // make the file large; `runner ui` shows each run's).
    let bests: std::collections::BTreeSet<i64> = all["experiments"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["best_run"].as_i64()).collect())
        .unwrap_or_default();
    for id in bests {
        apis.insert(
            format!("/api/run/{id}/gallery"),
            super::errors::gallery(store, id, super::errors::GALLERY)?,
        );
    }
    apis.insert("/api/experiments".into(), all);
    apis.insert("/api/runs".into(), runs);
    let data = json!({
        "title": format!("{} ({})", store.path().display(), names.join(", ")),
        "created": crate::text::iso_time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        ),
        "api": apis,
    });
    Ok(page(&format!("window.MLP_DATA = {};", script_json(&data))))
}

/// A path component as the page's `encodeURIComponent` writes it.
fn url_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_in_a_script_cannot_close_it() {
        let s = script_json(&json!({"name": "</script><script>alert(1)</script> & <!--"}));
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: Json = serde_json::from_str(&s).unwrap();
        assert_eq!(back["name"], "</script><script>alert(1)</script> & <!--");
    }

    #[test]
    fn paths_decode_as_the_page_encodes_them() {
        let name = "lr sweep/ü,1";
        assert_eq!(decode(&url_component(name)).as_deref(), Some(name));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("a%2"), None);
    }
}
