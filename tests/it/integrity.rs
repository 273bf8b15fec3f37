//! Integrity under contention, corruption and hostile input: fenced takeovers (real processes, SIGSTOP and
//! SIGCONT), stored bits checked against their hashes (real SQLite edits), and files that must never be
//! overwritten, allocated from a lie, or read whole.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{file_sha, mnist, query, runner, runner_env, scalar, small_idx_dir, spec, tmp};

/// Two seeds, two epochs on 2 000 images: a store with two finished runs in well under a second, keeping
/// their initial weights (so that those can be corrupted too).
const SMALL: &str = "name = \"small\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 2000\nlimit_test = 500\n\
                     [model]\nsizes = [784, 32, 10]\n[train]\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2]\n\
                     [store]\ninitial_weights = true\n";

fn trained(d: &Path) -> PathBuf {
    let db = d.join("results.db");
    let s = spec(d, "small.toml", SMALL);
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    db
}

fn sql(db: &Path, statement: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(statement)
        .unwrap();
}

fn spawn(d: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_stopped_owner_that_was_taken_over_is_fenced_and_never_demotes_the_run() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "run.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 20000\nlimit_test = 2000\n[model]\nsizes = [784, 64, 10]\n\
         [train]\nseed = 3\nepochs = 3\n",
    );
    let s = s.to_str().unwrap();
    let reference = d.join("reference.db");
    runner(d, &[s, "--db", reference.to_str().unwrap()]).ok();
    let fingerprint = |db: &Path| {
        query(
            db,
            "SELECT r.weights_sha256, e.epoch, e.train_loss, e.train_acc, e.test_loss, e.test_acc
             FROM runs r JOIN epochs e ON e.run_id = r.id ORDER BY e.epoch",
        )
    };

    // A: beats every second, pauses 1.5 s after each stored epoch. Stopped after its first epoch.
    let db = d.join("f.db");
    let dbs = db.to_str().unwrap();
    let live = ["--heartbeat", "1", "--stale-after", "3"];
    let mut a = spawn(
        d,
        &[&[s, "--db", dbs][..], &live].concat(),
        &[("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "1500")],
    );
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("A prints its first epoch").unwrap();
        if line.contains("epoch 1/3") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    signal(&a, "-STOP");

    // B, while A is stopped: no takeover before A has been silent for three heartbeats...
    let early = runner(d, &[&[s, "--db", dbs][..], &live].concat());
    assert!(
        early.ok().stdout.contains("1 running elsewhere"),
        "{}",
        early.stdout
    );
    // ...then A is stale: B takes the run over and completes it.
    std::thread::sleep(Duration::from_millis(3500));
    let b = runner(d, &[&[s, "--db", dbs][..], &live].concat());
    assert!(
        b.ok().stdout.contains("resuming after epoch 1/3"),
        "{}",
        b.stdout
    );
    assert_eq!(
        scalar(&db, "SELECT status || ' ' || claim FROM runs"),
        "completed 2"
    );

    // A wakes up: it must find the run lost, say so, stop, and leave B's rows exactly as they are.
    let before = query(&db, "SELECT * FROM runs");
    let epochs_before = query(&db, "SELECT * FROM epochs");
    signal(&a, "-CONT");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = a.wait().unwrap();
    let mut stderr = String::new();
    a.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(0), "{rest}\n{stderr}");
    assert!(
        rest.contains("was taken over by pid") && rest.contains("has stopped training it"),
        "{rest}"
    );
    assert!(
        !rest.contains("epoch 2/3"),
        "A trained on after losing the run: {rest}"
    );
    assert_eq!(query(&db, "SELECT * FROM runs"), before);
    assert_eq!(query(&db, "SELECT * FROM epochs"), epochs_before);
    assert_eq!(
        scalar(
            &db,
            "SELECT status || ' ' || resumes || ' ' || coalesce(error, 'none') FROM runs"
        ),
        "completed 1 none"
    );
    assert_eq!(fingerprint(&db), fingerprint(&reference));
    let again = runner(d, &[s, "--db", dbs]);
    assert!(
        again.ok().stdout.contains("1 already done"),
        "{}",
        again.stdout
    );
    let v = runner(d, &["verify", "1", "--db", dbs]);
    assert!(v.ok().stdout.contains("identical"), "{}", v.stdout);
}

#[test]
fn staleness_has_a_floor_and_the_heartbeat_keeps_a_paused_owner_its_runs() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "many.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 3000\nlimit_test = 500\n[model]\nsizes = [784, 32, 10]\n\
         [train]\nbatch_size = 10\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2, 3, 4]\n",
    );
    let s = s.to_str().unwrap();
    let db = d.join("shared.db");
    let dbs = db.to_str().unwrap();
    for bad in [["--stale-after", "0"], ["--stale-after", "59"]] {
        let out = runner(d, &[&[s, "--db", dbs][..], &bad].concat());
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains("less than 3 heartbeats"),
            "{}",
            out.stderr
        );
        assert!(!db.exists(), "nothing written for a refused option");
    }
    // A pauses 6 s after each stored epoch of its run; B, started once A has stored its first epoch,
    // trains the three other runs with a 1 s pause after each epoch, claiming its next run at about 2 s
    // and 4 s, when A's last stored epoch is older than `--stale-after 3`. Only A's heartbeat thread
    // (every second) shows that A is alive: no run may be taken over.
    let live = ["--heartbeat", "1", "--stale-after", "3", "--jobs", "1"];
    let args = [&[s, "--db", dbs][..], &live].concat();
    let mut a = spawn(d, &args, &[("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "6000")]);
    let mut a_lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let mut a_out = Vec::new();
    loop {
        let line = a_lines.next().expect("A prints its first epoch").unwrap();
        let first = line.contains("epoch 1/2");
        a_out.push(line);
        if first {
            break;
        }
    }
    let b = runner_env(d, &args, &[("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "1000")]);
    a_out.extend(a_lines.map(Result::unwrap));
    let a_status = a.wait().unwrap();
    let a_out = a_out.join("\n");
    assert_eq!(a_status.code(), Some(0), "{a_out}");
    assert_eq!(b.code, 0, "{}\n{}", b.stdout, b.stderr);
    assert_eq!(b.stdout.matches(": training").count(), 3, "{}", b.stdout);
    for out in [&a_out, &b.stdout] {
        assert!(
            !out.contains("resuming after") && !out.contains("was taken over by"),
            "{out}"
        );
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM runs WHERE status = 'completed' AND claim = 1 AND resumes = 0"
        ),
        "4"
    );
}

#[test]
fn every_reader_checks_stored_weights_against_their_hashes() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d);
    let dbs = db.to_str().unwrap();
    let seven = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/examples/seven.png");
    let seven = seven.to_str().unwrap();
    let check = runner(d, &["check", "--db", dbs]);
    assert!(
        check.ok().stdout.contains("every stored hash matches"),
        "{}",
        check.stdout
    );

    let corruptions = [
        (
            "final weights zeroed",
            "UPDATE weights SET data = zeroblob(length(data)) WHERE run_id = 1 AND kind = 'final'",
            "final weights do not match their hash",
        ),
        (
            "a NaN in the final weights",
            "UPDATE weights SET data = CAST(x'0000c07f' || substr(data, 5) AS BLOB) WHERE run_id = 1 AND kind = 'final' AND layer = 2 AND param = 'bias'",
            "final weights do not match their hash",
        ),
        (
            "one byte flipped in the middle of a weight matrix",
            "UPDATE weights SET data = CAST(substr(data, 1, 5000) || x'5a' || substr(data, 5002) AS BLOB) WHERE run_id = 1 AND kind = 'final' AND layer = 1 AND param = 'weight'",
            "final weights do not match their hash",
        ),
        (
            "initial weights changed",
            "UPDATE weights SET data = CAST(substr(data, 1, 100) || x'00' || substr(data, 102) AS BLOB) WHERE run_id = 1 AND kind = 'initial' AND layer = 1 AND param = 'weight'",
            "initial weights do not match their hash",
        ),
        (
            "a tensor turned into text by an edit",
            "UPDATE weights SET data = x'0000c07f' || substr(data, 5) WHERE run_id = 1 AND kind = 'final' AND layer = 2 AND param = 'bias'",
            "final weights: layer 2 bias is stored as text",
        ),
        (
            "a tensor cut short",
            "UPDATE weights SET data = substr(data, 1, 8) WHERE run_id = 1 AND kind = 'final' AND layer = 2 AND param = 'bias'",
            "holds 8 bytes, not 40",
        ),
    ];
    for (what, edit, needle) in corruptions {
        let copy = d.join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        let copys = copy.to_str().unwrap();
        sql(&copy, edit);
        // SQLite's own check sees nothing wrong: only the hashes can tell.
        assert_eq!(scalar(&copy, "PRAGMA integrity_check"), "ok", "{what}");
        let before = file_sha(&copy);
        for args in [
            vec!["check", "--db", copys],
            vec!["verify", "--all", "--db", copys],
            vec![
                "export",
                "1",
                "-o",
                "m.safetensors",
                "--weights",
                "initial",
                "--db",
                copys,
            ],
            vec!["export", "1", "-o", "m.safetensors", "--db", copys],
            vec!["predict", "1", seven, "--db", copys],
            vec!["merge", copys, "-o", "merged.db"],
        ] {
            let initial_only = args.contains(&"initial");
            if initial_only != needle.starts_with("initial") && args[0] == "export" {
                continue; // this export reads the other kind of weights
            }
            if needle.starts_with("initial") && args[0] == "predict" {
                continue; // predict reads the final weights only
            }
            let out = runner(d, &args);
            assert_eq!(
                out.code, 3,
                "{what}: {args:?}\n{}\n{}",
                out.stdout, out.stderr
            );
            let text = format!("{}{}", out.stdout, out.stderr);
            assert!(text.contains("run 1"), "{what}: {args:?}: {text}");
            assert!(text.contains(needle), "{what}: {args:?}: {text}");
            assert!(!d.join("m.safetensors").exists() && !d.join("merged.db").exists());
        }
        assert_eq!(
            file_sha(&copy),
            before,
            "{what}: a reader changed the store"
        );
        // The untouched run is still fine.
        let v = runner(d, &["verify", "2", "--db", copys]);
        assert!(v.ok().stdout.contains("identical"), "{what}: {}", v.stdout);
    }
}

#[test]
fn long_cells_and_hostile_names_never_panic_or_reach_the_terminal_raw() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d);
    let dbs = db.to_str().unwrap();
    let out = runner(
        d,
        &[
            "sql",
            "SELECT hex(data) AS h FROM weights LIMIT 2",
            "--db",
            dbs,
        ],
    );
    assert!(
        out.ok().stdout.contains("more characters)"),
        "{}",
        out.stdout
    );
    let csv = runner(
        d,
        &[
            "sql",
            "--csv",
            "SELECT hex(data) AS h FROM weights LIMIT 1",
            "--db",
            dbs,
        ],
    );
    assert!(csv.ok().stdout.len() > 100_000, "CSV keeps the whole value");

    // A 70 000-character name is refused when the spec is read; so are control characters.
    let long = spec(
        d,
        "long.toml",
        &format!("name = \"{}\"\n", "x".repeat(70_000)),
    );
    let out = runner(d, &[long.to_str().unwrap(), "--db", dbs]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("at most 200 characters"),
        "{}",
        &out.stderr[..300.min(out.stderr.len())]
    );
    let escape = spec(d, "esc.toml", "name = \"evil\\u001b[2J\\nname\"\n");
    let out = runner(d, &[escape.to_str().unwrap(), "--db", dbs]);
    assert_eq!(out.code, 2);
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);

    // A value a sweep puts in run names (a data folder with an escape code and a newline in its name)
    // is shown escaped by every command that prints it.
    let odd = d.join("mnist\x1b[31m\nred");
    std::os::unix::fs::symlink(mnist(), &odd).unwrap();
    let s = spec(
        d,
        "odd.toml",
        &format!(
            "name = \"odd\"\n[data]\nlimit_train = 500\nlimit_test = 100\n[model]\nsizes = [784, 8, 10]\n\
             [train]\nepochs = 1\n[sweep]\n\"data.dir\" = [{}]\n",
            toml::Value::String(odd.to_str().unwrap().to_string())
        ),
    );
    let odd_db = d.join("odd.db");
    let odd_dbs = odd_db.to_str().unwrap();
    let train = runner(d, &[s.to_str().unwrap(), "--db", odd_dbs]);
    let id = scalar(&odd_db, "SELECT id FROM runs");
    for out in [
        train,
        runner(d, &["ls", "--db", odd_dbs]),
        runner(d, &["show", &id, "--db", odd_dbs]),
        runner(
            d,
            &["sql", "SELECT name, data_dir FROM runs", "--db", odd_dbs],
        ),
        runner(d, &["verify", &id, "--db", odd_dbs]),
    ] {
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 0, "{all}");
        assert!(!all.contains('\x1b'), "raw escape code in {all:?}");
        assert!(all.contains("\\u{1b}[31m\\nred"), "{all}");
    }
}

#[test]
fn a_huge_image_among_small_ones_is_named_before_anything_is_allocated() {
    let dir = tmp();
    let d = dir.path();
    let png = d.join("png");
    let src = small_idx_dir(&d.join("src"), 300, 20);
    runner(
        d,
        &[
            "data",
            "export-png",
            src.to_str().unwrap(),
            png.to_str().unwrap(),
        ],
    )
    .ok();
    // The first file in reading order becomes a 6000 x 6000 image: 36 MB of pixels, 300 times that if
    // buffers were sized from it.
    let big = png.join("training/0/00001.png");
    assert!(big.exists());
    image::GrayImage::new(6000, 6000).save(&big).unwrap();
    let started = Instant::now();
    let out = runner(d, &["data", "info", png.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("00001.png")
            && out
                .stderr
                .contains("image is 6000x6000 but the others are 28x28"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // All of one huge size: refused as wider than any input layer.
    let all_big = d.join("big");
    for (split, digit) in [("training", 0), ("testing", 1)] {
        let f = all_big.join(format!("{split}/{digit}"));
        std::fs::create_dir_all(&f).unwrap();
        image::GrayImage::new(400, 400)
            .save(f.join("a.png"))
            .unwrap();
    }
    let out = runner(d, &["data", "info", all_big.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("160000 pixels"), "{}", out.stderr);
}

#[test]
fn outputs_never_overwrite_the_store_or_an_input() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d);
    let dbs = db.to_str().unwrap();
    let before = file_sha(&db);
    let other = d.join("other.db");
    std::fs::copy(&db, &other).unwrap();
    let other_sha = file_sha(&other);
    for args in [
        vec!["export", "1", "-o", dbs, "--db", dbs],
        vec!["export", "1", "-o", dbs, "--db", dbs, "--force"],
        vec![
            "export",
            "1",
            "-o",
            "./results.db-wal",
            "--db",
            dbs,
            "--force",
        ],
        vec!["plot", "-o", dbs, "--db", dbs, "--force"],
        vec!["export", "1", "-o", "other.db", "--db", dbs],
        vec!["plot", "-o", "other.db", "--db", dbs],
        vec!["merge", "other.db", dbs, "-o", dbs],
    ] {
        let out = runner(d, &args);
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        assert_eq!(file_sha(&db), before, "{args:?} changed the store");
        assert_eq!(file_sha(&other), other_sha, "{args:?} changed other.db");
    }
    // With --force, another SQLite file may be replaced; the store in use never.
    runner(
        d,
        &["export", "1", "-o", "other.db", "--db", dbs, "--force"],
    )
    .ok();
    assert!(
        !std::fs::read(&other)
            .unwrap()
            .starts_with(b"SQLite format 3")
    );
    // Devices are never taken for stores (SQLite would create /dev/null-journal), and an export to standard
    // output is written in place (the header of /dev/stdout is never read: that would block on the pipe).
    for args in [
        vec!["merge", dbs, "-o", "/dev/null"],
        vec!["ls", "--db", "/dev/zero"],
        vec!["small.toml", "--db", "/dev/null"],
    ] {
        let out = runner(d, &args);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(
            out.stderr.contains("is not a regular file"),
            "{}",
            out.stderr
        );
    }
    assert!(!Path::new("/dev/null-journal").exists() && !Path::new("/dev/null-wal").exists());
    let piped = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["export", "1", "-o", "/dev/stdout", "--db", dbs])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(piped.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&piped.stdout).contains("\"__metadata__\""));
    // No temporary file is left behind, whatever happened.
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn merge_checks_every_input_before_it_writes_anything() {
    let dir = tmp();
    let d = dir.path();
    let a = trained(d);
    let b = d.join("b.db");
    let s = spec(d, "b.toml", &SMALL.replace("[1, 2]", "[3]"));
    runner(d, &[s.to_str().unwrap(), "--db", b.to_str().unwrap()]).ok();
    let (a_sha, b_sha) = (file_sha(&a), file_sha(&b));
    // The output is one of the sources: refused before `a` is merged into it.
    let out = runner(
        d,
        &[
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "-o",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is the output itself"),
        "{}",
        out.stderr
    );
    assert_eq!((file_sha(&a), file_sha(&b)), (a_sha.clone(), b_sha.clone()));
    // A missing source: no output is created.
    let out = runner(
        d,
        &["merge", a.to_str().unwrap(), "missing.db", "-o", "new.db"],
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("missing.db"), "{}", out.stderr);
    assert!(!d.join("new.db").exists());
    // A completed run with no epochs or no weights is a corrupt input, not a run to copy.
    for (what, edit) in [
        ("no epochs", "DELETE FROM epochs WHERE run_id = 2"),
        (
            "no final weights",
            "DELETE FROM weights WHERE run_id = 2 AND kind = 'final'",
        ),
    ] {
        let broken = d.join("broken.db");
        std::fs::copy(&a, &broken).unwrap();
        sql(&broken, edit);
        let out = runner(
            d,
            &[
                "merge",
                b.to_str().unwrap(),
                broken.to_str().unwrap(),
                "-o",
                "new.db",
            ],
        );
        assert_eq!(out.code, 3, "{what}: {}", out.stderr);
        assert!(out.stderr.contains("run 2"), "{what}: {}", out.stderr);
        assert!(!d.join("new.db").exists(), "{what}");
    }
    let out = runner(
        d,
        &[
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "-o",
            "new.db",
        ],
    );
    assert!(out.ok().stdout.contains("3 runs added"), "{}", out.stdout);
}

#[test]
fn sql_streams_is_read_only_stops_on_time_and_ends_quietly_on_a_closed_pipe() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d);
    let dbs = db.to_str().unwrap();
    // Five million rows: read the first two million, then look at the process's peak memory while it is
    // blocked writing the rest. Collecting every row first would take hundreds of megabytes.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000000) SELECT x, x * 2 AS y FROM c";
    let mut child = spawn(d, &["sql", "--csv", many, "--db", dbs], &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2_000_000 {
        lines.next().unwrap().unwrap();
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 60_000, "peak memory {peak_kb} kB while streaming");
    // The reader goes away: the writer ends at once, quietly, with exit 0 (as `| head` does).
    drop(lines);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // Any other write error is reported.
    let full = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["ls", "--db", dbs])
        .current_dir(d)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&full.stderr).contains("standard output"));

    let forever =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let out = runner(d, &["sql", "--timeout", "0.5", forever, "--db", dbs]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("time limit of 0.5 s"), "{}", out.stderr);

    let before = file_sha(&db);
    let target = d.join("copy.db");
    for statement in [
        format!("VACUUM INTO '{}'", target.display()),
        format!("ATTACH '{}' AS x", target.display()),
        "DROP TABLE runs".to_string(),
    ] {
        let out = runner(d, &["sql", &statement, "--db", dbs]);
        assert_eq!(out.code, 2, "{statement}");
        assert!(
            out.stderr.contains("read-only") || out.stderr.contains("readonly"),
            "{}",
            out.stderr
        );
        assert!(!target.exists(), "{statement} created a file");
    }
    assert_eq!(file_sha(&db), before);
}

#[test]
fn oversized_inputs_are_refused_without_being_read_whole() {
    let dir = tmp();
    let d = dir.path();
    let db = d.join("r.db");
    let started = Instant::now();
    let out = runner(d, &["/dev/zero", "--db", db.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("larger than 1048576 bytes"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A gzipped IDX file whose stream inflates to far more than its header promises.
    let data = small_idx_dir(&d.join("bomb"), 100, 10);
    let images = data.join("train-images-idx3-ubyte");
    let header = std::fs::read(&images).unwrap()[..16].to_vec();
    std::fs::remove_file(&images).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    use std::io::Write;
    gz.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        gz.write_all(&zeros).unwrap(); // 200 MB inflated, for a header promising 78 kB
    }
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    let out = runner(d, &["data", "info", data.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("oversized IDX image data"),
        "{}",
        out.stderr
    );
    assert!(!db.exists());
}

#[test]
fn a_foreign_sqlite_file_is_recognised_and_left_untouched() {
    let dir = tmp();
    let d = dir.path();
    let foreign = d.join("foreign.db");
    sql(
        &foreign,
        "CREATE TABLE notes(id INTEGER, body TEXT); PRAGMA user_version = 1;",
    );
    let before = file_sha(&foreign);
    let s = spec(d, "small.toml", SMALL);
    for args in [
        vec![s.to_str().unwrap(), "--db", foreign.to_str().unwrap()],
        vec!["ls", "--db", foreign.to_str().unwrap()],
        vec!["check", "--db", foreign.to_str().unwrap()],
    ] {
        let out = runner(d, &args);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(out.stderr.contains("another program"), "{}", out.stderr);
    }
    assert_eq!(file_sha(&foreign), before);
    assert!(!d.join("foreign.db-wal").exists(), "switched to WAL");
}

#[test]
fn a_reused_pid_does_not_keep_a_dead_owners_run_and_limits_are_checked() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "run.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 5000\nlimit_test = 500\n[model]\nsizes = [784, 16, 10]\n\
         [train]\nepochs = 2\n",
    );
    let s = s.to_str().unwrap();
    let db = d.join("p.db");
    let dbs = db.to_str().unwrap();
    let mut a = spawn(
        d,
        &[s, "--db", dbs],
        &[("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "5000")],
    );
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("epoch 1/2") {}
    a.kill().unwrap();
    a.wait().unwrap();
    // The dead owner's pid now belongs to a live process: this test's own, which started at another time.
    let (start, _) = scalar(&db, "SELECT owner_start FROM runs")
        .rsplit_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    sql(
        &db,
        &format!(
            "UPDATE runs SET pid = {}, owner_start = '{start}/1'",
            std::process::id()
        ),
    );
    let plan = runner(d, &["plan", s, "--db", dbs]);
    assert!(
        plan.ok().stdout.contains("is resumed or retried"),
        "{}",
        plan.stdout
    );
    let out = runner(d, &[s, "--db", dbs]);
    let out = out.ok();
    assert!(
        out.stdout.contains("1 run (1 to resume or retry)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("resuming after epoch 1/2"),
        "{}",
        out.stdout
    );
    assert_eq!(scalar(&db, "SELECT status FROM runs"), "completed");

    // Limits: epochs, and a tensor larger than SQLite stores.
    let before = file_sha(&db);
    for (body, needle) in [
        ("[train]\nepochs = 1000000000000\n", "train.epochs"),
        (
            "[model]\nsizes = [784, 1, 11300, 11300, 10]\ndtype = \"f64\"\n",
            "layer 3's weight matrix [11300, 11300] in f64",
        ),
    ] {
        let bad = spec(d, "bad.toml", body);
        let out = runner_env(d, &[bad.to_str().unwrap(), "--db", dbs], &[]);
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
    assert_eq!(file_sha(&db), before);
}
