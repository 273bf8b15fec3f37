//! `runner bench --ui`: the dashboard against a synthetic store (10 000 runs of 20 epochs by default):
//! how long its API calls take, and how long the runs page takes to be interactive in headless Chromium
//! (from navigation to the table drawn, as the page measures it, through the DevTools protocol).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mlp_runner::report::ui;

/// GET `path` from the server, returning the body's length and the time to the last byte.
fn get(addr: SocketAddr, path: &str) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let took = start.elapsed();
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    Ok((body.len(), took))
}

/// Read one response of a keep-alive connection: its head, then `Content-Length` bytes of body.
fn read_response(r: &mut impl std::io::BufRead) -> Result<usize> {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the connection closed in a response");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok(length)
}

/// The median time of `n` requests for `path` on one keep-alive connection, and on a new connection each.
fn keep_alive(addr: SocketAddr, path: &str, n: usize) -> Result<(f64, f64)> {
    let s = TcpStream::connect(addr)?;
    let mut w = s.try_clone()?;
    let mut r = std::io::BufReader::new(s);
    let mut kept = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        // One write, as a browser sends a request: pieces would wait for each other's ACK (Nagle).
        w.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        read_response(&mut r)?;
        kept.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut fresh = Vec::new();
    for _ in 0..n {
        fresh.push(get(addr, path)?.1.as_secs_f64() * 1000.0);
    }
    kept.sort_by(f64::total_cmp);
    fresh.sort_by(f64::total_cmp);
    Ok((kept[n / 2], fresh[n / 2]))
}

/// Timings of the dashboard over a synthetic store, one line each.
pub fn run(runs: usize, epochs: usize, log: &dyn Fn(&str)) -> Result<Vec<(String, String)>> {
    let dir = std::env::temp_dir().join(format!("mlp-runner-uibench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("synthetic.db");
    let _ = std::fs::remove_file(&db);
    let started = Instant::now();
    mlp_runner::store::synthetic::fill(&db, runs, epochs)?;
    log(&format!(
        "synthetic store: {runs} runs of {epochs} epochs in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let server = ui::Server::start(&ui::ServeOptions {
        db: db.clone(),
        addr: "127.0.0.1:0".parse()?,
    })?;
    let addr = server.addr;
    let mut out = Vec::new();
    for path in [
        "/api/version",
        "/api/experiments",
        "/api/runs",
        "/api/run/5000",
        "/api/experiment/synthetic-7",
        "/api/run/5000/gallery",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..9 {
            let (n, t) = get(addr, path)?;
            bytes = n;
            times.push(t.as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out.push((
            format!("API {path}"),
            format!(
                "median {:.1} ms, slowest {:.1} ms of 9 ({} KB)",
                times[4],
                times[8],
                bytes / 1024
            ),
        ));
    }
    // A response of a few KB on a kept-alive connection against one on a new connection each: with Nagle's
    // algorithm and delayed ACKs a response written in pieces waits ~40 ms on a kept connection.
    let (kept, fresh) = keep_alive(addr, "/api/run/5000", 21)?;
    out.push((
        "keep-alive".into(),
        format!(
            "/api/run/<id> on one kept-alive connection: median {kept:.2} ms; on a new connection each: \
             {fresh:.2} ms ({:.2}x)",
            kept / fresh
        ),
    ));
    match super::browser::find() {
        None => out.push((
            "runs page".into(),
            "not measured: no Chromium (apt-get install chromium, or set MLP_RUNNER_CHROMIUM)"
                .into(),
        )),
        Some(chromium) => {
            let mut b = super::browser::Browser::start(&chromium)?;
            // Each page from navigation to drawn with its data (as the page measures it), 5 loads.
            for (label, hash, page, count) in [
                (
                    "runs page (10 000 runs, 200 drawn per page)",
                    "#/runs",
                    "runs",
                    "document.querySelectorAll('#runs tbody tr').length",
                ),
                (
                    "experiment page (100 runs: importance, parallel coordinates, slices, history, curves)",
                    "#/experiment/synthetic-7",
                    "experiment",
                    "document.querySelectorAll('.pc-line').length",
                ),
                (
                    "run page (its confusion matrix)",
                    "#/run/5000",
                    "run",
                    "document.querySelectorAll('#confusion-test td.cell').length",
                ),
            ] {
                let mut times = Vec::new();
                for _ in 0..5 {
                    b.navigate("about:blank")?;
                    b.navigate(&format!("http://{addr}/{hash}"))?;
                    let ms = b.wait_for(
                        &format!(
                            "document.body.dataset.page === '{page}' && document.body.dataset.readyMs"
                        ),
                        Duration::from_secs(30),
                    )?;
                    let drawn = b.eval(count)?;
                    let text =
                        |v: &serde_json::Value| v.as_str().map_or(v.to_string(), str::to_string);
                    log(&format!(
                        "{label}: ready after {} ms, {} elements drawn",
                        text(&ms),
                        text(&drawn)
                    ));
                    times.push(
                        ms.as_str()
                            .and_then(|s| s.parse::<f64>().ok())
                            .unwrap_or(f64::NAN),
                    );
                }
                times.sort_by(f64::total_cmp);
                out.push((
                    format!("{label} interactive"),
                    format!(
                        "median {:.0} ms, slowest {:.0} ms of 5 loads (navigation to the page drawn, in {})",
                        times[2],
                        times[4],
                        chromium.display()
                    ),
                ));
            }
        }
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
