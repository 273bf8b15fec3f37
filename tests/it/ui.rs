//! The dashboard over real stores: `runner ui` on a free port, spoken to over HTTP (only GET, only its own
//! pages, unknown runs 404, the store never changed), watched while another process trains, and loaded in
//! headless Chromium (the run table shows every run; a filter narrows it; a screenshot is kept); and
//! `runner report`'s self-contained file, opened from disk.
//!
//! Chromium: `.ci/test` installs Debian's `chromium` when it is missing and sets
//! MLP_RUNNER_REQUIRE_BROWSER=1, so that under CI a missing browser fails these tests; elsewhere a test
//! that needs it says it was not run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{file_sha, runner, scalar, spec, tmp};

const SPEC: &str = "name = \"web\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 1000\nlimit_test = 200\n\
                    [model]\nsizes = [784, 16, 10]\n[train]\nepochs = 2\n[sweep]\n\
                    \"train.learning_rate\" = [0.3, 0.1, 0.03]\n\"train.seed\" = [1, 2]\n";

pub struct Ui {
    child: Child,
    pub addr: String,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `runner ui --port 0` over `db`, and the address it printed.
pub fn serve(d: &Path, db: &Path, extra: &[&str]) -> Ui {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["ui", "--port", "0", "--db", db.to_str().unwrap()])
        .args(extra)
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Ui { child, addr }
}

/// A raw HTTP request; the status code and the body.
fn request(addr: &str, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    (code, raw[at..].to_vec())
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (code, body) = request(addr, "GET", path);
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn trained(d: &Path) -> (PathBuf, PathBuf) {
    let s = spec(d, "web.toml", SPEC);
    let db = d.join("web.db");
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    (s, db)
}

#[test]
fn the_server_answers_only_get_for_its_own_pages_and_never_changes_the_store() {
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d);
    let sha = file_sha(&db);
    let ui = serve(d, &db, &[]);
    assert!(ui.addr.starts_with("127.0.0.1:"), "{}", ui.addr);
    // The page: everything inline, nothing to fetch from elsewhere.
    let (code, page) = request(&ui.addr, "GET", "/");
    assert_eq!(code, 200);
    let page = String::from_utf8_lossy(&page);
    for external in [
        "<script src",
        "<link ",
        "src=\"http",
        "href=\"http",
        "@import",
    ] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    // The API agrees with the store.
    let runs = get_json(&ui.addr, "/api/runs");
    assert_eq!(runs["rows"].as_array().unwrap().len(), 6);
    let run = get_json(&ui.addr, "/api/run/3");
    assert_eq!(run["epochs"]["rows"].as_array().unwrap().len(), 2);
    assert_eq!(run["config"]["train.learning_rate"], 0.1);
    assert!(
        run["verify"]
            .as_str()
            .unwrap()
            .starts_with("runner verify 3 --db ")
    );
    let exp = get_json(&ui.addr, "/api/experiment/web");
    assert_eq!(exp["compare"]["rows"].as_array().unwrap().len(), 3);
    assert_eq!(exp["groups"].as_array().unwrap().len(), 3);
    assert_eq!(exp["groups"][0]["seeds"], 2);
    let (code, weights) = request(&ui.addr, "GET", "/api/run/3/export.safetensors");
    assert_eq!(code, 200);
    assert!(weights.len() > 50_000);
    // Only GET (and HEAD): anything else is 405, whatever the path.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/api/runs", "/api/run/1"] {
            assert_eq!(request(&ui.addr, method, path).0, 405, "{method} {path}");
        }
    }
    assert_eq!(request(&ui.addr, "HEAD", "/api/runs").0, 200);
    // No part of a path reaches the file system; unknown runs and pages are 404.
    for path in [
        "/api/run/99",
        "/api/run/0",
        "/api/run/abc",
        "/api/run/1;DROP%20TABLE%20runs",
        "/api/experiment/nosuch",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/../Cargo.toml",
        "/src/report/ui/assets/app.js",
        "/web.db",
        "/api/run/3/../../web.db",
        "/api",
        "/api/runs/extra",
        "/%ff%fe",
    ] {
        let (code, body) = request(&ui.addr, "GET", path);
        assert_eq!(code, 404, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "{path}");
    }
    let long = format!("/api/experiment/{}", "x".repeat(20_000));
    assert!(
        matches!(request(&ui.addr, "GET", &long).0, 404 | 414 | 431),
        "a long path"
    );
    drop(ui);
    assert_eq!(file_sha(&db), sha, "the dashboard changed the store");
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "6");
}

#[test]
fn an_address_beyond_this_machine_is_served_only_with_a_warning() {
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d);
    let mut ui = serve(d, &db, &["--host", "0.0.0.0"]);
    let mut err = String::new();
    BufReader::new(ui.child.stderr.take().unwrap())
        .read_line(&mut err)
        .unwrap();
    assert!(
        err.contains("warning") && err.contains("no authentication"),
        "{err}"
    );
    let bad = runner(d, &["ui", "--db", "nosuch.db", "--port", "0"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("does not exist"), "{}", bad.stderr);
}

#[test]
fn a_page_sees_another_process_train_within_two_seconds() {
    let dir = tmp();
    let d = dir.path();
    let (s, db) = trained(d);
    let ui = serve(d, &db, &[]);
    let before = get_json(&ui.addr, "/api/version");
    // Another process trains into the same store, a pause after each epoch.
    let more = std::fs::read_to_string(&s)
        .unwrap()
        .replace("[0.3, 0.1, 0.03]", "[0.2]")
        .replace("name = \"web\"", "name = \"more\"");
    let s2 = d.join("more.toml");
    std::fs::write(&s2, more).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            s2.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "1500")
        .current_dir(d)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The first epoch is stored: the version the page polls (every second) has changed, and the run
    // shows as running with its epoch.
    let start = Instant::now();
    let changed = loop {
        let v = get_json(&ui.addr, "/api/version");
        if v["version"] != before["version"] && v["running"].as_i64() == Some(1) {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no change seen");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(changed["runs"], 8);
    let runs = get_json(&ui.addr, "/api/runs");
    let cols: Vec<&str> = runs["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let status = cols.iter().position(|c| *c == "status").unwrap();
    assert!(
        runs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[status] == "running")
    );
    // An epoch stored while the page watches changes the version again at once.
    let seen = get_json(&ui.addr, "/api/version")["version"].clone();
    let start = Instant::now();
    while get_json(&ui.addr, "/api/version")["version"] == seen {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Chromium, or None (and a note) when it is missing and not required.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .filter_map(|n| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(n))
                    .find(|f| f.is_file())
            })
        })
        .next();
    if found.is_none() {
        assert!(
            std::env::var_os("MLP_RUNNER_REQUIRE_BROWSER").is_none()
                && std::env::var_os("CI").is_none(),
            "no Chromium on PATH, and this run requires one (.ci/test installs Debian's chromium)"
        );
        eprintln!("NOT RUN: no Chromium on PATH; .ci/test installs it (apt-get install chromium)");
    }
    found
}

/// The DOM of `url` after its scripts ran, in headless Chromium.
fn dom(chromium: &Path, url: &str, profile: &Path, screenshot: Option<&Path>) -> String {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--window-size=1400,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).stderr(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of the runs table in a dumped DOM.
fn table_rows(dom: &str) -> usize {
    dom.split("<table id=\"runs\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .map_or(0, |t| t.matches("<tr").count().saturating_sub(1))
}

#[test]
fn the_runs_page_shows_every_run_and_a_filter_narrows_it_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d);
    let ui = serve(d, &db, &[]);
    let profile = d.join("profile");
    let base = format!("http://{}/", ui.addr);
    let all = dom(&chromium, &format!("{base}#/runs"), &profile, None);
    assert!(!all.contains("data-error"), "{all}");
    assert_eq!(table_rows(&all), 6, "every run of the store: {all}");
    assert!(all.contains("6 of 6 runs"), "{all}");
    // A text filter and a metric range, as typed into the page (the page keeps its filters in the URL).
    let seed1 = dom(
        &chromium,
        &format!("{base}#/runs?q=seed%3D1"),
        &profile,
        None,
    );
    assert_eq!(table_rows(&seed1), 3, "{seed1}");
    assert!(seed1.contains("3 of 6 runs"));
    let best = scalar(&db, "SELECT count(*) FROM runs WHERE test_acc >= 0.8");
    let ranged = dom(
        &chromium,
        &format!("{base}#/runs?metric=test_acc&min=0.8"),
        &profile,
        None,
    );
    assert_eq!(table_rows(&ranged).to_string(), best, "{ranged}");
    // The other pages draw without an error.
    for page in [
        "#/experiments",
        "#/experiment/web",
        "#/run/2",
        "#/compare?runs=1,2,3",
    ] {
        let html = dom(&chromium, &format!("{base}{page}"), &profile, None);
        assert!(!html.contains("data-error"), "{page}: {html}");
        assert!(html.contains("data-ready-ms"), "{page}");
    }
    let compare = dom(
        &chromium,
        &format!("{base}#/compare?runs=1,2"),
        &profile,
        None,
    );
    assert!(
        compare.contains("train.seed"),
        "the config fields that differ: {compare}"
    );
    assert!(
        !compare.contains("train.learning_rate</td>"),
        "only the fields that differ"
    );
    // A screenshot, kept beside the test's store (and under target/ for a look).
    let shot = d.join("runs.png");
    dom(&chromium, &format!("{base}#/runs"), &profile, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::write(keep.join("runs.png"), png);
}

#[test]
fn a_report_is_one_file_that_opens_with_no_network() {
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d);
    // A note that tries to close the data's script and run one of its own.
    let hostile = "</script><script>document.title='pwned'</script><!--";
    runner(d, &["note", "2", hostile, "--db", db.to_str().unwrap()]).ok();
    let sha = file_sha(&db);
    let out = runner(d, &["report", "-o", "r.html", "--db", db.to_str().unwrap()]);
    assert!(out.ok().stdout.contains("wrote r.html"), "{}", out.stdout);
    let html = std::fs::read_to_string(d.join("r.html")).unwrap();
    for external in [
        "<script src",
        "<link ",
        "src=\"http",
        "href=\"http",
        "fetch(\"http",
    ] {
        assert!(!html.contains(external), "{external}");
    }
    assert!(html.contains("window.MLP_DATA"));
    assert!(
        html.contains("\"/api/run/6\""),
        "every run's page is in the report"
    );
    assert_eq!(file_sha(&db), sha);
    let bad = runner(
        d,
        &[
            "report",
            "nosuch",
            "-o",
            "x.html",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("no experiment `nosuch`"),
        "{}",
        bad.stderr
    );
    assert!(!d.join("x.html").exists());
    assert!(!html.contains(hostile), "the note is escaped in the data");
    let Some(chromium) = chromium() else { return };
    let url = format!("file://{}#/runs", d.join("r.html").display());
    let page = dom(&chromium, &url, &d.join("profile"), None);
    assert_eq!(table_rows(&page), 6, "{page}");
    assert!(page.contains("report of "), "{page}");
    assert!(!page.contains("<title>pwned"), "the note ran as a script");
    // The run's page shows the note as text.
    let run = dom(
        &chromium,
        &format!("file://{}#/run/2", d.join("r.html").display()),
        &d.join("profile"),
        None,
    );
    assert!(run.contains("note: &lt;/script&gt;&lt;script&gt;"), "{run}");
    assert!(!run.contains("<title>pwned"));
}

const SEARCH: &str = "name = \"search\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 1500\nvalidation = 300\n\
                      limit_test = 300\n[model]\nsizes = [784, 16, 10]\n[train]\nepochs = 3\nbatch_size = 20\n\
                      [sweep]\nmethod = \"halving\"\neta = 3\nmin_epochs = 1\nmetric = \"val_acc\"\n\
                      \"train.learning_rate\" = [0.3, 0.1, 0.03]\n\
                      \"model.sizes\" = [[784, 16, 10], [784, 32, 10], [784, 8, 10]]\n";

/// The sum of the `data-count` cells of the table `id` in a dumped DOM.
fn cell_sum(dom: &str, id: &str) -> u64 {
    dom.split(&format!("<table id=\"{id}\""))
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .map_or(0, |t| {
            t.split("data-count=\"")
                .skip(1)
                .filter_map(|c| c.split('"').next()?.parse::<u64>().ok())
                .sum()
        })
}

/// An attribute's values, in document order.
fn attrs<'a>(dom: &'a str, name: &str) -> Vec<&'a str> {
    dom.split(&format!(" {name}=\""))
        .skip(1)
        .filter_map(|c| c.split('"').next())
        .collect()
}

/// Where a model errs, stored with each completed run and drawn: the confusion matrix's cells sum to the
/// test set and its diagonal is the run's test accuracy; the misclassified samples are those whose label
/// differs from the prediction, shown with the dataset's images; a search's page shows its rungs (runs
/// as links), importance, history, one parallel-coordinates line per run (a brush narrows the table)
/// and the finalists' curves.
#[test]
fn the_dashboard_answers_which_parameters_matter_how_the_search_went_and_where_the_model_errs() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "search.toml", SEARCH);
    let db = d.join("s.db");
    let dbs = db.to_str().unwrap();
    runner(d, &[s.to_str().unwrap(), "--db", dbs]).ok();
    // The store: every completed run has both matrices; pruned runs have none.
    let completed: Vec<i64> = scalar(
        &db,
        "SELECT group_concat(id) FROM runs WHERE status = 'completed'",
    )
    .split(',')
    .map(|x| x.parse().unwrap())
    .collect();
    assert_eq!(completed.len(), 3, "three finalists of nine");
    for id in &completed {
        let q = |sql: &str| scalar(&db, &sql.replace("ID", &id.to_string()));
        assert_eq!(
            q("SELECT sum(count) FROM confusion WHERE run_id = ID AND split = 'test'"),
            "300"
        );
        assert_eq!(
            q("SELECT sum(count) FROM confusion WHERE run_id = ID AND split = 'validation'"),
            "300"
        );
        // The diagonal over the total is exactly the stored accuracy (the same argmax).
        assert_eq!(
            q(
                "SELECT (SELECT sum(count) FROM confusion WHERE run_id = ID AND split = 'test' AND actual = predicted) / 300.0 = test_acc FROM runs WHERE id = ID"
            ),
            "1"
        );
        assert_eq!(
            q(
                "SELECT (SELECT sum(count) FROM confusion WHERE run_id = ID AND split = 'validation' AND actual = predicted) / 300.0 = val_acc FROM runs WHERE id = ID"
            ),
            "1"
        );
        assert_eq!(
            q("SELECT count(*) FROM misclassified WHERE run_id = ID"),
            q(
                "SELECT sum(count) FROM confusion WHERE run_id = ID AND split = 'test' AND actual != predicted"
            )
        );
        assert_eq!(
            q("SELECT count(*) FROM misclassified WHERE run_id = ID AND actual = predicted"),
            "0"
        );
        // Every epoch's counts per class: they sum to the split, and their correct ones to the epoch's
        // accuracy, exactly.
        assert_eq!(
            q(
                "SELECT count(DISTINCT epoch) || ' ' || sum(samples) FROM epoch_classes WHERE run_id = ID AND split = 'test'"
            ),
            "3 900"
        );
        assert_eq!(
            q(
                "SELECT count(*) FROM epochs e WHERE e.run_id = ID AND e.test_acc = (SELECT sum(correct) / 300.0 FROM epoch_classes c WHERE c.run_id = ID AND c.epoch = e.epoch AND c.split = 'test') AND e.val_acc = (SELECT sum(correct) / 300.0 FROM epoch_classes c WHERE c.run_id = ID AND c.epoch = e.epoch AND c.split = 'validation')"
            ),
            "3"
        );
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM confusion c JOIN runs r ON r.id = c.run_id WHERE r.status = 'pruned'"
        ),
        "0"
    );
    let best = completed[0];
    let show = runner(d, &["show", &best.to_string(), "--db", dbs]);
    assert!(
        show.ok()
            .stdout
            .contains("test confusion (rows: true class"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("of 300 right"), "{}", show.stdout);
    // compare ranks the configurations by a class's accuracy (the finalists: the completed runs).
    let classes = runner(
        d,
        &[
            "compare",
            "--classes",
            "--class",
            "3",
            "--json",
            "--db",
            dbs,
        ],
    );
    let rows: serde_json::Value = serde_json::from_str(&classes.ok().stdout).unwrap();
    let acc: Vec<f64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class_3"].as_f64().unwrap())
        .collect();
    assert_eq!(acc.len(), 3, "the three finalists: {}", classes.stdout);
    assert!(acc.windows(2).all(|w| w[0] >= w[1]), "{acc:?}");
    let bad = runner(d, &["compare", "--classes", "--class", "10", "--db", dbs]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("classes 0 to 9"), "{}", bad.stderr);
    // Verify re-computes them from the re-trained weights; an edited cell is a difference.
    runner(d, &["verify", &best.to_string(), "--db", dbs]).ok();
    for (name, edit, said) in [
        (
            "edited.db",
            "UPDATE confusion SET count = count + 1 WHERE run_id = ?1 AND actual = predicted AND actual = 0",
            "where it errs",
        ),
        (
            "edited-classes.db",
            "UPDATE epoch_classes SET correct = correct - 1 WHERE run_id = ?1 AND epoch = 2 AND split = 'test' AND class = 1",
            "epoch 2, test accuracy per class",
        ),
    ] {
        let edited = d.join(name);
        std::fs::copy(&db, &edited).unwrap();
        rusqlite::Connection::open(&edited)
            .unwrap()
            .execute(edit, [best])
            .unwrap();
        let v = runner(
            d,
            &[
                "verify",
                &best.to_string(),
                "--db",
                edited.to_str().unwrap(),
            ],
        );
        assert_ne!(v.code, 0, "{}", v.stdout);
        let text = format!("{}{}", v.stdout, v.stderr);
        assert!(text.contains(said), "{said}: {text}");
    }
    // A merge keeps them.
    let merged = d.join("m.db");
    runner(d, &["merge", dbs, "-o", merged.to_str().unwrap()]).ok();
    assert_eq!(
        scalar(&merged, "SELECT count(*) FROM confusion"),
        scalar(&db, "SELECT count(*) FROM confusion")
    );
    assert_eq!(
        scalar(&merged, "SELECT count(*) FROM misclassified"),
        scalar(&db, "SELECT count(*) FROM misclassified")
    );
    assert_eq!(
        scalar(&merged, "SELECT count(*) FROM epoch_classes"),
        scalar(&db, "SELECT count(*) FROM epoch_classes")
    );

    let ui = serve(d, &db, &[]);
    let exp = get_json(&ui.addr, "/api/experiment/search");
    assert_eq!(exp["runs_total"], 9);
    assert_eq!(exp["metric"]["name"], "val_acc");
    assert_eq!(exp["history"].as_array().unwrap().len(), 3);
    assert_eq!(exp["trials"].as_array().unwrap().len(), 9);
    // Importance over all nine candidates at the epoch each reached (a full 3 x 3 grid).
    assert_eq!(exp["importance"]["epoch"], 1);
    let shares: f64 = exp["importance"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["share"].as_f64().unwrap())
        .sum::<f64>()
        + exp["importance"]["interactions"].as_f64().unwrap();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    let values: Vec<f64> = exp["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["value"].as_f64())
        .collect();
    assert_eq!(values.len(), 9);
    let gallery = get_json(&ui.addr, &format!("/api/run/{best}/gallery"));
    assert!(
        !gallery["images"].as_array().unwrap().is_empty(),
        "{gallery}"
    );

    let Some(chromium) = chromium() else { return };
    let profile = d.join("profile");
    let base = format!("http://{}/", ui.addr);
    let page = dom(
        &chromium,
        &format!("{base}#/experiment/search"),
        &profile,
        None,
    );
    assert!(!page.contains("data-error"), "{page}");
    assert_eq!(
        page.matches("class=\"pc-line").count(),
        9,
        "one line per run"
    );
    assert!(page.contains("id=\"importance\""), "{page}");
    assert!(page.contains("id=\"history\""), "{page}");
    assert!(page.contains("id=\"intermediate\""), "{page}");
    let rungs = page.split("<table id=\"rungs\"").nth(1).unwrap();
    assert!(
        rungs
            .split("</table>")
            .next()
            .unwrap()
            .contains("href=\"#/run/"),
        "run ids are links"
    );
    // The finalists' configurations are among the curves drawn (the best first, not the first by key).
    let curves = page
        .split("id=\"curves-val_acc\"")
        .nth(1)
        .and_then(|t| t.split("data-labels=\"").nth(1))
        .and_then(|t| t.split('"').next())
        .expect("a chart of val_acc curves");
    for g in exp["groups"].as_array().unwrap() {
        let finalist = g["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| completed.contains(&r.as_i64().unwrap()));
        if finalist {
            let label = g["label"].as_str().unwrap();
            assert!(
                curves.split('|').any(|l| l == label),
                "{label} not in {curves}"
            );
        }
    }
    // A brush on the metric's axis (the last: its upper half) narrows the table to the runs above the
    // middle of the range.
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let mid = (lo + hi) / 2.0;
    let above = values
        .iter()
        .filter(|v| **v >= mid - 1e-9 * (hi - lo))
        .count();
    let axis = exp["varying"].as_array().unwrap().len();
    let brushed = dom(
        &chromium,
        &format!("{base}#/experiment/search?b={axis}:0.5:1"),
        &profile,
        None,
    );
    let rows = brushed
        .split("<table id=\"pc-runs\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .map_or(0, |t| t.matches("<tr").count() - 1);
    assert_eq!(rows, above, "{brushed}");
    assert!(above < 9 && above > 0);
    assert!(brushed.contains(&format!("{above} of 9 runs selected")));
    // The run's page: the matrices sum to their splits; the gallery shows digits whose label (read from
    // the data) is the stored one and differs from the prediction.
    let run = dom(&chromium, &format!("{base}#/run/{best}"), &profile, None);
    assert!(!run.contains("data-error"), "{run}");
    assert_eq!(cell_sum(&run, "confusion-test"), 300, "{run}");
    assert_eq!(cell_sum(&run, "confusion-validation"), 300);
    let per_class = run
        .split("id=\"classes-test\"")
        .nth(1)
        .and_then(|t| t.split("data-labels=\"").nth(1))
        .and_then(|t| t.split('"').next())
        .expect("a chart of each class's accuracy per epoch");
    assert_eq!(per_class.split('|').count(), 10, "{per_class}");
    let (shown, actual, predicted) = (
        attrs(&run, "data-label"),
        attrs(&run, "data-actual"),
        attrs(&run, "data-predicted"),
    );
    assert!(!shown.is_empty(), "{run}");
    assert_eq!(shown, actual);
    for (l, p) in shown.iter().zip(&predicted) {
        assert_ne!(l, p, "a misclassified digit");
    }
    let shot = d.join("experiment.png");
    dom(
        &chromium,
        &format!("{base}#/experiment/search"),
        &profile,
        Some(&shot),
    );
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
}
