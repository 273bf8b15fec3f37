//! `runner bench --ui`: the dashboard against a synthetic store (10 000 runs of 20 epochs by default):
//! how long its API calls take, and how long the runs page takes to be interactive in headless Chromium
//! (from navigation to the table drawn, as the page measures it, through the DevTools protocol).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mlp_runner::core::config::RunConfig;
use mlp_runner::report::ui;
use mlp_runner::store::Store;
use rusqlite::params;

/// Fill a new store at `path` with `runs` completed runs of `epochs` epochs each (no weights), in 100-run
/// experiments, as fast as SQLite takes them: a store of the size a long-lived project reaches.
pub fn synthetic_store(path: &Path, runs: usize, epochs: usize) -> Result<()> {
    Store::open(path)?.close()?;
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    let mut experiment = 0;
    for i in 0..runs {
        if i % 100 == 0 {
            tx.execute(
                "INSERT INTO experiments (name, description, spec_path, spec_toml, created_at, invocation)
                 VALUES (?1, 'synthetic', 'synthetic.toml', '', '2026-01-01T00:00:00Z', ?2)",
                params![format!("synthetic-{}", i / 100), format!("bench:{i}")],
            )?;
            experiment = tx.last_insert_rowid();
        }
        let mut c = RunConfig::default();
        c.train.seed = (i % 5) as u64;
        c.train.learning_rate = [1.0, 0.3, 0.1, 0.03, 0.01][(i / 5) % 5];
        c.train.batch_size = [10, 32, 100, 128][(i / 25) % 4];
        c.train.epochs = epochs;
        let acc = 0.9 + 0.09 * ((i * 7919) % 1000) as f64 / 1000.0;
        tx.execute(
            "INSERT INTO runs (experiment_id, name, status, seed, sizes, activation, init, dtype, batch_size,
                learning_rate, epochs, drop_last, data_dir, data_format, overrides, config_toml, config_hash,
                seed_group, created_at, epochs_done, train_loss, train_acc, test_loss, test_acc, seconds,
                finished_at)
             VALUES (?1, ?2, 'completed', ?3, '[784,512,10]', 'relu', 'he', 'f32', ?4, ?5, ?6, 1, 'data/mnist',
                'auto', ?7, ?8, ?9, ?10, '2026-01-01T00:00:00Z', ?6, ?11, ?12, ?11, ?12, ?13,
                '2026-01-01T00:00:00Z')",
            params![
                experiment,
                format!("synthetic-{}/run={i}", i / 100),
                c.train.seed as i64,
                c.train.batch_size as i64,
                c.train.learning_rate,
                epochs as i64,
                serde_json::json!({ "train.seed": c.train.seed, "train.learning_rate": c.train.learning_rate }).to_string(),
                format!("[train]\nseed = {}\nepochs = {epochs}\n", c.train.seed),
                format!("{i:064x}"),
                c.seed_group(),
                1.0 - acc,
                acc,
                epochs as f64 * 1.5,
            ],
        )?;
        let id = tx.last_insert_rowid();
        let mut ep = tx.prepare_cached(
            "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds)
             VALUES (?1, ?2, ?3, ?4, ?3, ?4, 1.5, 1.0)",
        )?;
        for e in 1..=epochs {
            let a = acc * (1.0 - 0.5 / (e as f64 + 1.0));
            ep.execute(params![id, e as i64, 1.0 - a, a])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// GET `path` from the server, returning the body's length and the time to the last byte.
fn get(addr: SocketAddr, path: &str) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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

/// Timings of the dashboard over a synthetic store, one line each.
pub fn run(runs: usize, epochs: usize, log: &dyn Fn(&str)) -> Result<Vec<(String, String)>> {
    let dir = std::env::temp_dir().join(format!("mlp-runner-uibench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("synthetic.db");
    let _ = std::fs::remove_file(&db);
    let started = Instant::now();
    synthetic_store(&db, runs, epochs)?;
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
    match super::browser::find() {
        None => out.push((
            "runs page".into(),
            "not measured: no Chromium (apt-get install chromium, or set MLP_RUNNER_CHROMIUM)"
                .into(),
        )),
        Some(chromium) => {
            let mut b = super::browser::Browser::start(&chromium)?;
            let mut times = Vec::new();
            for _ in 0..5 {
                b.navigate("about:blank")?;
                b.navigate(&format!("http://{addr}/#/runs"))?;
                let ms = b.wait_for(
                    "document.body.dataset.page === 'runs' && document.body.dataset.readyMs",
                    Duration::from_secs(30),
                )?;
                let rows = b.eval("document.querySelectorAll('#runs tbody tr').length")?;
                let count = b.eval("document.getElementById('runs-count').textContent")?;
                log(&format!(
                    "runs page ready after {ms} ms: {rows} rows drawn, {count}"
                ));
                times.push(
                    ms.as_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .unwrap_or(f64::NAN),
                );
            }
            times.sort_by(f64::total_cmp);
            out.push((
                "runs page interactive".into(),
                format!(
                    "median {:.0} ms, slowest {:.0} ms of 5 loads (navigation to the table drawn, in {})",
                    times[2],
                    times[4],
                    chromium.display()
                ),
            ));
        }
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
