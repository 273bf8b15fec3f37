//! Adaptive search with real processes and real stores: a 9-candidate successive halving (eta 3) on a
//! subset of the shipped MNIST decides the same rungs and stores the same bits with --jobs 1, --jobs 2,
//! three processes on one store, after SIGKILL mid-rung, at a rung boundary and in the middle of a
//! promotion, and across shards merged rung by rung; a tie goes by config hash; a promoted run equals the
//! same config trained straight; Hyperband runs its brackets; bad search specs are refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::util::{Out, query, runner, runner_env, scalar, spec, tmp};

/// 9 candidates (3 learning rates x 3 widths), 1 000 of 3 000 training images held out, up to 9 epochs:
/// rungs of 9 runs at 1 epoch, 3 at 3, 1 at 9.
const HALVING: &str = "name = \"h\"\n[data]\ndir = \"mnist\"\nlimit_train = 3000\nvalidation = 1000\n\
                       limit_test = 500\n[model]\nsizes = [784, 32, 10]\n[train]\nepochs = 9\nbatch_size = 20\n\
                       [sweep]\nmethod = \"halving\"\neta = 3\nmin_epochs = 1\n\
                       \"train.learning_rate\" = [0.3, 0.1, 0.03]\n\
                       \"model.sizes\" = [[784, 16, 10], [784, 32, 10], [784, 64, 10]]\n";

/// Everything a search decided and stored, as exact bits and by config hash (run ids and times differ
/// between stores): every rung's members with their metric, place and promotion; every run's status,
/// epochs and weights; every epoch's metrics.
fn outcome(db: &Path) -> Vec<Vec<String>> {
    let mut all = query(
        db,
        "SELECT 'rung', bracket, rung, config_hash, epochs, value, place, promoted FROM rung_members
         ORDER BY bracket, rung, config_hash",
    );
    all.extend(query(
        db,
        "SELECT 'run', config_hash, status, epochs_done, weights_sha256, init_weights_sha256, val_acc, test_acc
         FROM runs ORDER BY config_hash",
    ));
    all.extend(query(
        db,
        "SELECT 'epoch', r.config_hash, e.epoch, e.train_loss, e.train_acc, e.val_loss, e.val_acc, e.test_loss,
                e.test_acc
         FROM epochs e JOIN runs r ON r.id = e.run_id ORDER BY r.config_hash, e.epoch",
    ));
    all
}

fn train(d: &Path, s: &Path, db: &Path, extra: &[&str]) -> Out {
    let mut args = vec![s.to_str().unwrap(), "--db", db.to_str().unwrap()];
    args.extend(extra);
    runner(d, &args)
}

/// A runner process in the background; its stdout and stderr go to `<db>.<n>.log`, which
/// [`succeeds`] shows when it fails.
fn spawn(d: &Path, s: &Path, db: &Path, env: &[(&str, &str)]) -> Child {
    let log = (0..)
        .map(|n| db.with_extension(format!("{n}.log")))
        .find(|p| !p.exists())
        .unwrap();
    let out = std::fs::File::create(&log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            s.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .envs(env.iter().copied())
        .current_dir(d)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Wait for the children spawned on `db`; a failed one fails the test with every child's log.
fn succeeds(db: &Path, children: Vec<Child>) {
    let codes: Vec<_> = children
        .into_iter()
        .map(|mut c| c.wait().unwrap())
        .collect();
    if codes.iter().all(|c| c.success()) {
        return;
    }
    let logs: String = (0..codes.len())
        .map(|n| {
            let p = db.with_extension(format!("{n}.log"));
            format!(
                "--- {} ({}):\n{}\n",
                p.display(),
                codes[n],
                std::fs::read_to_string(&p).unwrap_or_default()
            )
        })
        .collect();
    panic!("a runner on {} failed:\n{logs}", db.display());
}

/// Poll the store (as another process would) until `sql` gives at least `n`.
fn wait_until(db: &Path, sql: &str, n: i64) {
    let start = Instant::now();
    loop {
        if db.exists()
            && let Ok(conn) = rusqlite::Connection::open(db)
            && conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .is_ok_and(|v| v >= n)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {n} for {sql}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The halving spec in `d`, its data folder by a relative path (a link to the shipped MNIST): the runs'
/// config hashes, and so which shard each falls in, do not depend on where the repository is.
fn halving_spec(d: &Path) -> PathBuf {
    let link = d.join("mnist");
    if !link.exists() {
        std::os::unix::fs::symlink(crate::util::mnist(), &link).unwrap();
    }
    spec(d, "h.toml", HALVING)
}

fn reference(d: &Path) -> (PathBuf, PathBuf, Vec<Vec<String>>) {
    let s = halving_spec(d);
    let db = d.join("ref.db");
    let out = train(d, &s, &db, &["--jobs", "1"]);
    assert!(out.ok().stdout.contains("best: run "), "{}", out.stdout);
    let o = outcome(&db);
    (s, db, o)
}

#[test]
fn halving_decides_the_same_with_any_workers_processes_and_kills() {
    let dir = tmp();
    let d = dir.path();
    let (s, ref_db, expect) = reference(d);
    // The schedule: 9 runs at 1 epoch, 3 at 3, 1 at 9; 3 promoted, then 1; the rest pruned.
    assert_eq!(
        query(
            &ref_db,
            "SELECT rung, count(*), sum(promoted), min(epochs) FROM rung_members GROUP BY rung ORDER BY rung"
        ),
        [
            ["0", "9", "3", "1"],
            ["1", "3", "1", "3"],
            ["2", "1", "0", "9"]
        ]
    );
    assert_eq!(
        query(
            &ref_db,
            "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status"
        ),
        [["completed", "1"], ["pruned", "8"]]
    );
    // 21 epochs trained, against 81 for the full grid.
    assert_eq!(scalar(&ref_db, "SELECT count(*) FROM epochs"), "21");
    // The promoted runs are the best of each rung by validation accuracy.
    let best = query(
        &ref_db,
        "SELECT config_hash FROM rung_members WHERE rung = 0 ORDER BY value DESC LIMIT 3",
    );
    let promoted = query(
        &ref_db,
        "SELECT config_hash FROM rung_members WHERE rung = 0 AND promoted = 1 ORDER BY value DESC",
    );
    assert_eq!(best, promoted);

    // --jobs 2.
    let db = d.join("jobs2.db");
    train(d, &s, &db, &["--jobs", "2"]).ok();
    assert_eq!(outcome(&db), expect, "--jobs 2");

    // Three processes on one store.
    let db = d.join("three.db");
    let children: Vec<Child> = (0..3).map(|_| spawn(d, &s, &db, &[])).collect();
    succeeds(&db, children);
    assert_eq!(outcome(&db), expect, "three processes");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM runs"),
        "9",
        "each candidate is one run"
    );

    // SIGKILL mid-rung (4 of the first rung's 9 runs paused), then at a rung boundary (the first rung
    // decided: the hook sleeps after the epoch that decided it), each resumed by running the spec again.
    for (name, sql, n) in [
        (
            "mid-rung",
            "SELECT count(*) FROM runs WHERE status = 'paused'",
            4,
        ),
        (
            "rung boundary",
            "SELECT count(*) FROM rung_members WHERE rung = 1",
            3,
        ),
    ] {
        let db = d.join(format!("{}.db", name.replace(' ', "-")));
        let mut child = spawn(d, &s, &db, &[("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "150")]);
        wait_until(&db, sql, n);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_ne!(outcome(&db), expect, "{name}: the kill came after the end");
        let out = train(d, &s, &db, &[]);
        assert!(
            out.ok().stdout.contains("best: run "),
            "{name}: {}",
            out.stdout
        );
        assert_eq!(outcome(&db), expect, "{name}");
    }

    // SIGKILL in the middle of a promotion: the epoch that completes the first rung holds its
    // transaction open after deciding it; the kill rolls the epoch and the decision back together.
    let db = d.join("promotion.db");
    let mut child = spawn(d, &s, &db, &[("MLP_RUNNER_PAUSE_IN_DECISION_MS", "4000")]);
    wait_until(&db, "SELECT count(*) FROM runs WHERE status = 'paused'", 8);
    wait_until(
        &db,
        "SELECT count(*) FROM runs WHERE status = 'running' AND epochs_done = 0",
        1,
    );
    std::thread::sleep(Duration::from_millis(800));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM rung_members WHERE decided_at IS NOT NULL"
        ),
        "0",
        "the kill did not land inside the deciding transaction"
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM epochs"), "8");
    train(d, &s, &db, &[]).ok();
    assert_eq!(outcome(&db), expect, "killed during a promotion");

    // Every run verifies: a pruned run as the same config trained straight for its epochs, the winner
    // (trained in three pieces) as the config trained straight for 9.
    let v = runner(d, &["verify", "--all", "--db", ref_db.to_str().unwrap()]);
    assert_eq!(
        v.ok().stdout.matches(": identical").count(),
        9,
        "{}",
        v.stdout
    );
}

#[test]
fn a_promoted_run_equals_the_same_config_trained_straight() {
    let dir = tmp();
    let d = dir.path();
    let (_, ref_db, _) = reference(d);
    // The winner at 9 epochs and a run pruned at 3, each against a plain spec of its config.
    for (status, epochs) in [("completed", 9), ("pruned", 3)] {
        let row = query(
            &ref_db,
            &format!(
                "SELECT id, config_toml, weights_sha256 FROM runs WHERE status = '{status}' AND epochs_done = {epochs}
                 ORDER BY id LIMIT 1"
            ),
        );
        let [id, config, weights] = [&row[0][0], &row[0][1], &row[0][2]];
        let straight = config.replace("epochs = 9", &format!("epochs = {epochs}"));
        let s = spec(
            d,
            &format!("straight{epochs}.toml"),
            &format!("name = \"straight\"\n{straight}"),
        );
        let db = d.join(format!("straight{epochs}.db"));
        train(d, &s, &db, &[]).ok();
        assert_eq!(
            &scalar(&db, "SELECT weights_sha256 FROM runs"),
            weights,
            "{status}"
        );
        let metrics = "SELECT epoch, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc FROM epochs";
        assert_eq!(
            query(&db, &format!("{metrics} ORDER BY epoch")),
            query(
                &ref_db,
                &format!("{metrics} WHERE run_id = {id} ORDER BY epoch")
            ),
            "{status}"
        );
    }
    // A pruned run is done for its search only: a plain spec of its config, trained into the search's
    // store, trains it in full as a new row (and the search's rows stay as they are).
    let pruned = query(
        &ref_db,
        "SELECT id, config_toml FROM runs WHERE status = 'pruned' ORDER BY id LIMIT 1",
    );
    let s = spec(
        d,
        "full.toml",
        &format!("name = \"full\"\n{}", pruned[0][1]),
    );
    let before = outcome(&ref_db);
    let plan = runner(
        d,
        &[
            "plan",
            s.to_str().unwrap(),
            "--db",
            ref_db.to_str().unwrap(),
        ],
    );
    assert!(plan.ok().stdout.contains("to train"), "{}", plan.stdout);
    let out = train(d, &s, &ref_db, &[]);
    assert!(out.ok().stdout.contains("1 run (1 new)"), "{}", out.stdout);
    assert_eq!(
        query(
            &ref_db,
            "SELECT status, epochs_done FROM runs WHERE id = (SELECT max(id) FROM runs)"
        ),
        [["completed", "9"]]
    );
    let rungs = |o: &[Vec<String>]| {
        o.iter()
            .filter(|r| r[0] == "rung")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(rungs(&outcome(&ref_db)), rungs(&before));
    assert_eq!(
        scalar(
            &ref_db,
            &format!("SELECT status FROM runs WHERE id = {}", pruned[0][0])
        ),
        "pruned"
    );
}

#[test]
fn a_tie_is_broken_by_config_hash() {
    let dir = tmp();
    let d = dir.path();
    // `auto` and `idx` read the same files: every pair of candidates trains the same bits, a real tie
    // on both metrics. With eta 6, one of the six goes on: of the best pair, the smaller config hash.
    let s = spec(
        d,
        "tie.toml",
        "name = \"tie\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 2000\nvalidation = 500\nlimit_test = 200\n\
         [model]\nsizes = [784, 16, 10]\n[train]\nepochs = 2\n[sweep]\nmethod = \"halving\"\neta = 6\n\
         \"data.format\" = [\"auto\", \"idx\"]\n\"train.learning_rate\" = [0.3, 0.1, 0.03]\n",
    );
    let db = d.join("tie.db");
    train(d, &s, &db, &[]).ok();
    let rung = query(
        &db,
        "SELECT config_hash, value, place, promoted FROM rung_members WHERE rung = 0 ORDER BY place",
    );
    assert_eq!(rung.len(), 6);
    assert_eq!(
        rung[0][1], rung[1][1],
        "the best two tie on validation accuracy"
    );
    let loss = |h: &str| {
        scalar(
            &db,
            &format!(
                "SELECT e.val_loss FROM epochs e JOIN runs r ON r.id = e.run_id WHERE r.config_hash = '{h}' AND e.epoch = 1"
            ),
        )
    };
    assert_eq!(
        loss(&rung[0][0]),
        loss(&rung[1][0]),
        "and on validation loss"
    );
    assert!(rung[0][0] < rung[1][0], "the smaller hash first: {rung:?}");
    assert_eq!((rung[0][3].as_str(), rung[1][3].as_str()), ("1", "0"));
}

#[test]
fn hyperband_runs_its_brackets_and_reproduces() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "hb.toml",
        "name = \"hb\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 2000\nvalidation = 500\nlimit_test = 200\n\
         [model]\nsizes = [784, 16, 10]\n[train]\nepochs = 9\nbatch_size = 20\n[sweep]\nmethod = \"hyperband\"\n\
         seed = 4\n\"train.learning_rate\" = { log_uniform = [0.01, 1.0] }\n\
         \"model.sizes\" = [[784, 16, 10], [784, 32, 10]]\n",
    );
    let plan = runner(d, &["plan", s.to_str().unwrap(), "--db", "none.db"]);
    assert!(
        plan.ok()
            .stdout
            .contains("Hyperband over 17 candidates in 3 brackets"),
        "{}",
        plan.stdout
    );
    let (a, b) = (d.join("a.db"), d.join("b.db"));
    train(d, &s, &a, &["--jobs", "1"]).ok();
    train(d, &s, &b, &["--jobs", "2"]).ok();
    assert_eq!(outcome(&a), outcome(&b));
    // Brackets of 9 runs at 1, 3 at 3, 1 at 9; 5 at 3, 1 at 9; 3 at 9.
    assert_eq!(
        query(
            &a,
            "SELECT bracket, rung, count(*), min(epochs) FROM rung_members GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        [
            ["0", "0", "9", "1"],
            ["0", "1", "3", "3"],
            ["0", "2", "1", "9"],
            ["1", "0", "5", "3"],
            ["1", "1", "1", "9"],
            ["2", "0", "3", "9"]
        ]
    );
    assert_eq!(
        scalar(
            &a,
            "SELECT count(*) FROM rung_members WHERE decided_at IS NULL"
        ),
        "0"
    );
    let v = runner(d, &["verify", "--all", "--db", a.to_str().unwrap()]);
    assert!(!v.ok().stdout.contains("MISMATCH"), "{}", v.stdout);
}

#[test]
fn shards_merged_rung_by_rung_decide_as_one_process() {
    let dir = tmp();
    let d = dir.path();
    let (s, _, expect) = reference(d);
    let merged = d.join("merged.db");
    // Rung by rung, as a cluster would run it: each shard trains on its own copy of the merged store,
    // and merging the shards decides the rung.
    let mut rounds = 0;
    let mut saw_paused = false;
    loop {
        let mut shards = Vec::new();
        for i in 0..2 {
            let db = d.join(format!("shard{i}.db"));
            let _ = std::fs::remove_file(&db);
            if merged.exists() {
                std::fs::copy(&merged, &db).unwrap();
            }
            let shard = format!("{i}/2");
            let out = train(d, &s, &db, &["--shard", &shard, "--private-store"]);
            assert!(out.code == 0, "{}{}", out.stdout, out.stderr);
            shards.push(db);
        }
        let mut args = vec!["merge".to_string()];
        args.extend(shards.iter().map(|p| p.display().to_string()));
        args.extend([
            "-o".into(),
            merged.display().to_string(),
            "--allow-incomplete".into(),
            "--spec".into(),
            s.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = runner(d, &args);
        assert!(
            !out.ok().stdout.contains("REPRODUCIBILITY FAILURE"),
            "{}",
            out.stdout
        );
        // A run copied paused at its rung is there, waiting for a later round: not "in no input".
        for line in out.stdout.lines().filter(|l| l.starts_with("MISSING")) {
            assert!(!line.contains("in no input"), "{line}");
        }
        if scalar(&merged, "SELECT count(*) FROM runs WHERE status = 'paused'") != "0" {
            assert!(out.stdout.contains("paused at its rung"), "{}", out.stdout);
            saw_paused = true;
        }
        rounds += 1;
        if scalar(
            &merged,
            "SELECT count(*) FROM rung_members WHERE decided_at IS NULL",
        ) == "0"
        {
            break;
        }
        assert!(rounds < 5, "the search did not end");
    }
    // One round per rung at most: a shard that holds every run of a rung decides it in its own round.
    assert!((2..=3).contains(&rounds), "{rounds} rounds for 3 rungs");
    assert!(saw_paused, "a round ended with runs paused at their rung");
    assert_eq!(outcome(&merged), expect);
    // A copy with other bits is reported, never taken.
    let bad = d.join("bad.db");
    std::fs::copy(&merged, &bad).unwrap();
    rusqlite::Connection::open(&bad)
        .unwrap()
        .execute_batch(
            "UPDATE epochs SET val_acc = val_acc + 1e-9 WHERE epoch = 1 AND run_id = (SELECT min(id) FROM runs)",
        )
        .unwrap();
    crate::util::rehash_metrics(
        &bad,
        scalar(&bad, "SELECT min(id) FROM runs").parse().unwrap(),
    );
    let out = runner(
        d,
        &[
            "merge",
            bad.to_str().unwrap(),
            "-o",
            merged.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("REPRODUCIBILITY FAILURE"),
        "{}",
        out.stdout
    );
    assert_eq!(outcome(&merged), expect);
}

#[test]
fn bad_search_specs_are_refused_with_the_key() {
    let dir = tmp();
    let d = dir.path();
    let base = "[data]\ndir = \"{MNIST}\"\nlimit_train = 1000\n[train]\nepochs = 3\n[sweep]\n";
    for (sweep, needle) in [
        (
            "method = \"halving\"\nmetric = \"val_acc\"\n\"train.seed\" = [1, 2, 3]\n",
            "val_acc is measured on a validation split, and run `bad/seed=1` has none: set [data] validation",
        ),
        (
            "method = \"halving\"\nmetric = \"test_acc\"\n\"train.epochs\" = [1, 3]\n",
            "key `sweep.train.epochs`: a search decides how many epochs",
        ),
        (
            "method = \"hyperband\"\nmetric = \"test_acc\"\ntrials = 5\n\"train.seed\" = [1, 2]\n",
            "Hyperband decides how many candidates each bracket draws",
        ),
        (
            "method = \"halving\"\nmetric = \"test_acc\"\nmin_epochs = 5\n\"train.seed\" = [1, 2]\n",
            "5 is more than train.epochs (3)",
        ),
        (
            "method = \"halving\"\neta = 1\n\"train.seed\" = [1, 2]\n",
            "key `sweep.eta`: must be a whole number from 2",
        ),
        (
            "method = \"halving\"\nmetric = \"val_ac\"\n\"train.seed\" = [1, 2]\n",
            "did you mean \"val_acc\"?",
        ),
        (
            "eta = 3\n\"train.seed\" = [1, 2]\n",
            "only applies to method = \"halving\" or \"hyperband\"",
        ),
        ("method = \"halvng\"\n\"train.seed\" = [1]\n", "\"halving\""),
    ] {
        let s = spec(d, "bad.toml", &format!("{base}{sweep}"));
        let db = d.join("bad.db");
        let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{sweep}");
        assert!(out.stderr.contains(needle), "{sweep}: {}", out.stderr);
        assert!(!db.exists());
    }
    // --force would train the runs again without making the decisions again.
    let s = halving_spec(d);
    let out = runner_env(d, &[s.to_str().unwrap(), "--force", "--db", "x.db"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--force with an adaptive search"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_spec_without_a_search_is_trained_as_before() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "plain.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 1000\nlimit_test = 200\n[model]\nsizes = [784, 16, 10]\n\
         [train]\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2]\n",
    );
    let db = d.join("p.db");
    train(d, &s, &db, &[]).ok();
    assert_eq!(scalar(&db, "SELECT count(*) FROM searches"), "0");
    assert_eq!(
        query(
            &db,
            "SELECT status, epochs_done, validation, val_acc FROM runs"
        ),
        [
            ["completed", "2", "NULL", "NULL"],
            ["completed", "2", "NULL", "NULL"]
        ]
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM epochs WHERE val_loss IS NULL AND val_acc IS NULL"
        ),
        "4"
    );
}
