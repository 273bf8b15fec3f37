//! The holes a hostile user found, each closed and kept closed: a merge into a database's side file, edited
//! parameter columns, DNS rebinding and idle connections on the dashboard, SQL injected through
//! `ls --where`, the exit codes of damaged stores and corrupt checkpoints, leftovers of killed merges, a
//! private store that is not private, and the rough edges of the command line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{Out, file_sha, query, runner, scalar, spec, tmp, try_scalar};

const SPEC: &str = "name = \"h\"
[data]
dir = \"{MNIST}\"
limit_train = 600
limit_test = 200
[model]
sizes = [784, 16, 10]
[train]
batch_size = 50
epochs = 2
[sweep]
\"train.learning_rate\" = [0.3, 0.1]
";

fn run(d: &Path, db: &Path, args: &[&str]) -> Out {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--db", db.to_str().unwrap()]);
    runner(d, &all)
}

fn trained(d: &Path, name: &str) -> PathBuf {
    let s = spec(d, &format!("{name}.toml"), SPEC);
    let db = d.join(format!("{name}.db"));
    run(d, &db, &[s.to_str().unwrap()]).ok();
    db
}

fn sql(db: &Path, statement: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(statement)
        .unwrap();
}

#[test]
fn a_merge_never_writes_into_a_side_file_and_cleans_up_after_killed_merges() {
    let dir = tmp();
    let d = dir.path();
    let a = trained(d, "a");
    let b = trained(d, "b");
    for side in ["a.db-wal", "a.db-shm", "a.db-journal", "b.db-wal"] {
        let out = runner(
            d,
            &[
                "merge",
                b.to_str().unwrap(),
                "-o",
                d.join(side).to_str().unwrap(),
            ],
        );
        assert_eq!(out.code, 2, "{side}: {}", out.stdout);
        assert!(
            out.stderr.contains("side file of the SQLite database"),
            "{}",
            out.stderr
        );
    }
    assert!(!d.join("a.db-journal").exists());
    // Files a killed merge left (its pid is gone) are removed by the next merge to that output; a live
    // process's are not.
    let stale = d.join(".m.db.merging-999999999");
    std::fs::write(&stale, b"half a database").unwrap();
    std::fs::write(d.join(".m.db.merging-999999999-wal"), b"x").unwrap();
    let live = d.join(format!(".m.db.merging-{}", std::process::id()));
    std::fs::write(&live, b"in use").unwrap();
    runner(
        d,
        &[
            "merge",
            a.to_str().unwrap(),
            "-o",
            d.join("m.db").to_str().unwrap(),
        ],
    )
    .ok();
    assert!(!stale.exists() && !d.join(".m.db.merging-999999999-wal").exists());
    assert!(live.exists());
}

#[test]
fn columns_that_restate_the_config_are_checked_against_it() {
    let dir = tmp();
    let d = dir.path();
    for (edit, column) in [
        (
            "UPDATE runs SET learning_rate = 0.01 WHERE id = 1",
            "learning_rate",
        ),
        (
            "UPDATE runs SET sizes = '[784,512,10]' WHERE id = 1",
            "sizes",
        ),
        ("UPDATE runs SET seed = 7 WHERE id = 1", "seed"),
        (
            "UPDATE runs SET activation = 'tanh' WHERE id = 1",
            "activation",
        ),
        ("UPDATE runs SET batch_size = 10 WHERE id = 1", "batch_size"),
        ("UPDATE runs SET dtype = 'f64' WHERE id = 1", "dtype"),
        (
            "UPDATE runs SET limit_train = NULL WHERE id = 1",
            "limit_train",
        ),
        (
            "UPDATE runs SET seed_group = 'x' WHERE id = 1",
            "seed_group",
        ),
        (
            "UPDATE runs SET overrides = '{\"train.learning_rate\":0.5}' WHERE id = 1",
            "overrides",
        ),
        ("UPDATE runs SET status = 'pruned' WHERE id = 1", "pruned"),
    ] {
        let db = trained(d, "edited");
        sql(&db, edit);
        let c = run(d, &db, &["check"]);
        assert_eq!(c.code, 3, "{edit}: {}", c.stdout);
        assert!(c.stdout.contains(column), "{edit}: {}", c.stdout);
        let v = run(d, &db, &["verify", "1"]);
        assert_eq!(v.code, 3, "{edit}: {}", v.stdout);
        let out = d.join("merged.db");
        let m = runner(
            d,
            &["merge", db.to_str().unwrap(), "-o", out.to_str().unwrap()],
        );
        assert_eq!(m.code, 3, "{edit}: {}", m.stderr);
        assert!(!out.exists());
        std::fs::remove_file(&db).unwrap();
    }
}

fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_dashboard_answers_only_its_own_names_and_bounds_its_connections() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d, "ui");
    let ui = crate::ui::serve(d, &db, &[]);
    let port = ui.addr.rsplit(':').next().unwrap().to_string();
    // DNS rebinding: a page of another site whose name now points to 127.0.0.1.
    for host in [
        format!("attacker.example:{port}"),
        "127.0.0.1:1".to_string(),
        "localhost".to_string(),
    ] {
        let r = raw(
            &ui.addr,
            format!("GET /api/runs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 421"), "{host}: {r}");
        assert!(!r.contains("h/learning_rate"), "{r}");
    }
    let r = raw(
        &ui.addr,
        b"GET /api/run/1/export.safetensors HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    // Its own names get the page, with the headers a local tool sends.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = raw(
            &ui.addr,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            r.starts_with("HTTP/1.1 200"),
            "{host}: {}",
            &r[..r.len().min(300)]
        );
        for header in [
            "X-Content-Type-Options: nosniff",
            "X-Frame-Options: DENY",
            "frame-ancestors 'none'",
            "Referrer-Policy: no-referrer",
        ] {
            assert!(r.contains(header), "{header}");
        }
    }
    // Keep-alive: several requests on one connection, with bare LF line ends too.
    let mut s = TcpStream::connect(&ui.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let host = format!("127.0.0.1:{port}");
    s.write_all(format!("GET /api/runs HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    s.write_all(
        format!("GET /api/version HTTP/1.1\nHost: {host}\nConnection: close\n\n").as_bytes(),
    )
    .unwrap();
    let mut both = String::new();
    s.read_to_string(&mut both).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    // At most 64 connections: the next one is told 503 at once; once they close, it is served.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&ui.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = raw(
        &ui.addr,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 503"), "{}", &r[..r.len().min(200)]);
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let r = raw(
        &ui.addr,
        format!("GET /api/version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn the_dashboard_waits_for_an_empty_store_and_warns_of_corrupt_runs() {
    let dir = tmp();
    let d = dir.path();
    // A store a sweep is about to fill: an empty file.
    let empty = d.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let ui = crate::ui::serve(d, &empty, &[]);
    let port = ui.addr.rsplit(':').next().unwrap().to_string();
    let r = raw(
        &ui.addr,
        format!(
            "GET /api/experiments HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"empty\":true"),
        "{r}"
    );
    drop(ui);
    // A run whose final weights were edited: the run's page says so.
    let db = trained(d, "c");
    sql(
        &db,
        "UPDATE weights SET data = zeroblob(length(data)) WHERE run_id = 1 AND kind = 'final' AND layer = 2",
    );
    let store = mlp_runner::store::Store::open_read_only(&db).unwrap();
    let page = mlp_runner::report::ui::api::run(&store, 1).unwrap();
    let corrupt = page["corrupt"].as_array().unwrap();
    assert!(
        corrupt
            .iter()
            .any(|f| f.as_str().unwrap().contains("final weights do not match")),
        "{page}"
    );
    let clean = mlp_runner::report::ui::api::run(&store, 2).unwrap();
    assert_eq!(clean["corrupt"].as_array().unwrap().len(), 0);
}

#[test]
fn ls_where_reads_run_summary_only_and_stops_in_time() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d, "w");
    for clause in [
        "0) UNION SELECT name, sql, 1, 1, 1, 1, 1, 1, 1, 1 FROM sqlite_master --",
        "run_id IN (SELECT run_id FROM weights)",
        "EXISTS (SELECT 1 FROM sqlite_master)",
        "(SELECT count(*) FROM runs WHERE config_toml LIKE '%') > 0",
        "EXISTS (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 1 FROM c)",
        "length(randomblob(1000000000)) > 0",
        "1; DROP TABLE runs",
        "test_acc > 0 /* comment */",
    ] {
        let out = run(d, &db, &["ls", "--where", clause]);
        assert_eq!(out.code, 2, "{clause}: {}", out.stdout);
        assert!(!out.stdout.contains("CREATE TABLE"), "{clause}");
        assert!(out.stdout.is_empty(), "{clause}: {}", out.stdout);
    }
    // A condition that takes too long is stopped at --timeout.
    let heavy = format!(
        "(SELECT count(*) FROM {}) > 0",
        (0..26)
            .map(|i| format!("run_summary_all t{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = run(d, &db, &["ls", "--timeout", "0.3", "--where", &heavy]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("time limit of 0.3 s"), "{}", out.stderr);
    // Conditions on its columns still work, tags and subqueries on the view included.
    let out = run(
        d,
        &db,
        &[
            "ls",
            "--csv",
            "--where",
            "learning_rate > 0.2 AND run_id IN (SELECT run_id FROM run_summary)",
        ],
    );
    assert_eq!(out.ok().stdout.lines().count(), 2, "{}", out.stdout);
}

#[test]
fn damaged_stores_and_corrupt_checkpoints_exit_3_and_change_nothing() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d, "t");
    sql(&db, "PRAGMA wal_checkpoint(TRUNCATE)");
    let bytes = std::fs::read(&db).unwrap();
    let cut = d.join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for args in [&["ls"][..], &["check"], &["verify", "1"], &["show", "1"]] {
        let out = run(d, &cut, args);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
    }
    // A checkpoint whose bytes were edited: resume stops with exit 3 and leaves the run as it was
    // (interrupted, its epochs and checkpoint untouched). The run is left by a process killed after
    // its first epoch.
    let s = spec(d, "long.toml", &SPEC.replace("epochs = 2", "epochs = 3"));
    let db = d.join("cp.db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            s.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "5000")
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while try_scalar(
        &db,
        "SELECT count(*) FROM weights WHERE kind = 'checkpoint'",
    )
    .is_none_or(|n| n == "0")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let id = scalar(
        &db,
        "SELECT run_id FROM weights WHERE kind = 'checkpoint' LIMIT 1",
    );
    sql(
        &db,
        &format!(
            "UPDATE weights SET data = zeroblob(length(data)) WHERE run_id = {id} AND kind = 'checkpoint' \
             AND layer = 2 AND param = 'bias'"
        ),
    );
    let kept = format!(
        "SELECT epochs_done, checkpoint_epoch, checkpoint_sha256 FROM runs WHERE id = {id}"
    );
    let before = query(&db, &kept);
    let out = run(d, &db, &["resume", &id]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("checkpoint is corrupt; left interrupted"),
        "{}",
        out.stdout
    );
    assert_eq!(query(&db, &kept), before);
    assert_eq!(
        scalar(&db, &format!("SELECT status FROM runs WHERE id = {id}")),
        "interrupted"
    );
}

#[test]
fn a_private_store_is_refused_when_a_live_process_trains_in_it() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "p.toml", &SPEC.replace("epochs = 2", "epochs = 6"));
    let db = d.join("p.db");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            s.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "400")
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while try_scalar(&db, "SELECT count(*) FROM epochs").is_none_or(|n| n == "0") {
        assert!(start.elapsed() < Duration::from_secs(60), "no epoch stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(d, &db, &[s.to_str().unwrap(), "--private-store"]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("a live process on this host"),
        "{}",
        out.stderr
    );
}

#[test]
fn command_line_edges_get_clear_answers() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d, "e");
    // Negative numbers reach the value checks.
    let out = run(d, &db, &["show", "-1"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no run with the id or name `-1`"),
        "{}",
        out.stderr
    );
    let s = spec(d, "e2.toml", SPEC);
    let out = run(d, &db, &[s.to_str().unwrap(), "--jobs", "-1"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("-1 is not in 0..=256"),
        "{}",
        out.stderr
    );
    // CSV keeps a value whole, control characters included (text tables escape them).
    run(d, &db, &["note", "1", "bell\u{7} and escape \u{1b}[2J"]).ok();
    let csv = run(d, &db, &["ls", "--csv"]);
    assert!(csv.ok().stdout.contains("\u{1b}[2J"), "{}", csv.stdout);
    let text = run(d, &db, &["ls"]);
    assert!(!text.ok().stdout.contains('\u{1b}'));
    // An output error names the user's path, not a temporary file.
    let blocked = d.join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    let target = blocked.join("sub").join("x.png");
    let out = run(
        d,
        &db,
        &["plot", "--experiment", "h", "-o", target.to_str().unwrap()],
    );
    assert_eq!(out.code, 2);
    assert!(!out.stderr.contains(".partial-"), "{}", out.stderr);
    // A file with this tool's application_id whose creation stopped before its schema.
    let half = d.join("half.db");
    sql(
        &half,
        "PRAGMA application_id = 1296846930; CREATE TABLE t (x); PRAGMA user_version = 0",
    );
    let sha = file_sha(&half);
    let out = run(d, &half, &["ls"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("whose creation did not finish"),
        "{}",
        out.stderr
    );
    assert_eq!(file_sha(&half), sha);
}
