//! The whole path on real MNIST: spec -> training -> SQLite -> queries -> exact re-run.

use crate::util::{query, rehash_metrics, runner, scalar, spec, tmp};

/// Two learning rates x two seeds on a real subset: small enough for seconds, big enough to learn.
const SWEEP: &str = r#"
name = "mini"
description = "integration test sweep"
[data]
dir = "{MNIST}"
limit_train = 1500
limit_test = 500
[model]
sizes = [784, 32, 10]
[train]
batch_size = 16
epochs = 2
[sweep]
"train.learning_rate" = [0.3, 0.05]
"train.seed" = [1, 2]
"#;

#[test]
fn a_sweep_is_trained_stored_and_queryable() {
    let dir = tmp();
    let spec = spec(dir.path(), "mini.toml", SWEEP);
    // An explicit --db must name a folder that exists (only the default results/ is created).
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let db = dir.path().join("out/results.db");
    let out = runner(
        dir.path(),
        &[spec.to_str().unwrap(), "--db", db.to_str().unwrap()],
    );
    out.ok();
    assert!(
        out.stdout.contains("mini/learning_rate=0.3,seed=1"),
        "{}",
        out.stdout
    );

    // Every run completed with its epochs, its initial and final weights, and its provenance.
    let runs = query(
        &db,
        "SELECT status, epochs_done, learning_rate, seed, weights_sha256, dataset_sha256,
                                  gemm_kernel, rustc_version FROM runs ORDER BY id",
    );
    assert_eq!(runs.len(), 4);
    for r in &runs {
        assert_eq!((r[0].as_str(), r[1].as_str()), ("completed", "2"));
        assert_eq!(r[4].len(), 64);
        // the chain kernels, with the implementation this CPU ran
        assert!(r[6].starts_with("mlp-runner-chain/"), "{}", r[6]);
        assert!(r[7].starts_with("rustc "), "{}", r[7]);
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM epochs"), "8");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM weights WHERE kind = 'final'"),
        "16"
    );
    assert_eq!(
        scalar(&db, "SELECT count(DISTINCT dataset_sha256) FROM runs"),
        "1"
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM experiments"), "1");
    assert_eq!(scalar(&db, "PRAGMA user_version"), "9");
    assert_eq!(scalar(&db, "PRAGMA application_id"), "1296846930");
    assert_eq!(scalar(&db, "PRAGMA journal_mode"), "wal");

    // The stored weights are the ones hashed: SHA-256 over the final tensors' bytes in layer order.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let blobs: Vec<Vec<u8>> = conn
        .prepare("SELECT data FROM weights WHERE run_id = 1 AND kind = 'final' ORDER BY layer, param = 'bias'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    blobs.iter().for_each(|b| h.update(b));
    assert_eq!(crate::util::hex(&h.finalize()), runs[0][4]);
    assert_eq!(blobs[0].len(), 32 * 784 * 4);

    // It learned: the better learning rate beats chance by far on held-out data.
    let acc: f64 = conn
        .query_row("SELECT max(test_acc) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert!(acc > 0.8, "best test accuracy {acc}");

    // The views answer the common questions.
    let stats = query(
        &db,
        "SELECT seeds, std_test_acc IS NOT NULL FROM seed_stats",
    );
    assert_eq!(stats, vec![vec!["2".to_string(), "1".into()]; 2]);
    assert_eq!(query(&db, "SELECT * FROM best_runs").len(), 1);

    // `runner sql`, `ls` and `show` read the same file.
    let csv = runner(
        dir.path(),
        &[
            "sql",
            "--db",
            db.to_str().unwrap(),
            "--csv",
            "SELECT run_id, status FROM run_summary ORDER BY run_id",
        ],
    );
    assert_eq!(
        csv.ok().stdout,
        "run_id,status\n1,completed\n2,completed\n3,completed\n4,completed\n"
    );
    let json = runner(
        dir.path(),
        &[
            "sql",
            "--db",
            db.to_str().unwrap(),
            "--json",
            "SELECT count(*) AS n FROM runs",
        ],
    );
    assert!(json.ok().stdout.contains("\"n\": 4"), "{}", json.stdout);
    let ls = runner(dir.path(), &["ls", "--db", db.to_str().unwrap()]);
    assert_eq!(ls.ok().stdout.lines().count(), 2 + 4);
    let show = runner(dir.path(), &["show", "3", "--db", db.to_str().unwrap()]);
    assert!(
        show.ok().stdout.contains("learning_rate = 0.05"),
        "{}",
        show.stdout
    );

    let json = runner(
        dir.path(),
        &["show", "3", "--json", "--db", db.to_str().unwrap()],
    );
    let shown: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(shown["run"]["learning_rate"], 0.05);
    assert_eq!(shown["run"]["status"], "completed");
    assert_eq!(shown["epochs"].as_array().unwrap().len(), 2);
    // Final weights only: the initial ones are kept as their hash (`[store] initial_weights` keeps them).
    assert_eq!(shown["weights"].as_array().unwrap().len(), 4);
    // JSON carries typed values: lists as arrays, flags as booleans, counts as numbers.
    assert!(
        shown["run"]["sizes"].is_array(),
        "{}",
        shown["run"]["sizes"]
    );
    assert_eq!(shown["run"]["drop_last"], true);
    assert!(shown["weights"][0]["shape"].is_array());
    let ls = runner(dir.path(), &["ls", "--json", "--db", db.to_str().unwrap()]);
    let listed: serde_json::Value = serde_json::from_str(&ls.ok().stdout).unwrap();
    assert_eq!(
        (
            listed[0]["epochs_done"].as_i64(),
            listed[0]["epochs"].as_i64()
        ),
        (Some(2), Some(2))
    );

    // Running the spec again trains nothing; --force trains every run again as new rows.
    let again = runner(
        dir.path(),
        &[spec.to_str().unwrap(), "--db", db.to_str().unwrap()],
    );
    assert!(
        again.ok().stdout.contains("4 runs (4 already done)"),
        "{}",
        again.stdout
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "4");
    runner(
        dir.path(),
        &[
            spec.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--force",
        ],
    )
    .ok();
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "8");
    // ... with the same bits: a run is a pure function of its config and data.
    assert_eq!(
        scalar(&db, "SELECT count(DISTINCT weights_sha256) FROM runs"),
        "4"
    );
}

#[test]
fn same_seed_is_bit_identical_and_another_seed_is_not() {
    let dir = tmp();
    let body = SWEEP.replace("\"train.learning_rate\" = [0.3, 0.05]\n", "");
    let spec = spec(dir.path(), "s.toml", &body);
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    runner(
        dir.path(),
        &[spec.to_str().unwrap(), "--db", a.to_str().unwrap()],
    )
    .ok();
    runner(
        dir.path(),
        &[spec.to_str().unwrap(), "--db", b.to_str().unwrap()],
    )
    .ok();
    let sql = "SELECT r.seed, r.init_weights_sha256, r.weights_sha256, e.epoch, e.train_loss, e.train_acc,
                      e.test_loss, e.test_acc
               FROM runs r JOIN epochs e ON e.run_id = r.id ORDER BY r.seed, e.epoch";
    let (ra, rb) = (query(&a, sql), query(&b, sql));
    assert_eq!(ra, rb, "two trainings of the same spec differ");
    // Seeds 1 and 2 differ in their initial and final weights and in their metrics.
    assert_ne!(ra[0][1], ra[2][1]);
    assert_ne!(ra[0][2], ra[2][2]);
    assert_ne!(ra[0][4], ra[2][4]);
}

#[test]
fn verify_says_identical_and_catches_a_tampered_epoch() {
    let dir = tmp();
    let body = SWEEP
        .replace("[0.3, 0.05]", "[0.3]")
        .replace("[1, 2]", "[7]");
    let spec = spec(dir.path(), "v.toml", &body);
    let db = dir.path().join("v.db");
    let dbs = db.to_str().unwrap();
    runner(dir.path(), &[spec.to_str().unwrap(), "--db", dbs]).ok();
    let v = runner(dir.path(), &["verify", "1", "--db", dbs]);
    assert!(
        v.ok()
            .stdout
            .contains("run 1 mini/learning_rate=0.3,seed=7: identical"),
        "{}",
        v.stdout
    );
    let all = runner(dir.path(), &["verify", "--experiment", "mini", "--db", dbs]);
    assert!(all.ok().stdout.contains("identical"));
    let json = runner(dir.path(), &["verify", "1", "--json", "--db", dbs]);
    let rows: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(
        (rows[0]["run_id"].as_i64(), rows[0]["result"].as_str()),
        (Some(1), Some("identical"))
    );

    // Change the stored test accuracy of epoch 2 by one ulp: the epoch rows no longer match their hash
    // (a corrupt store, exit 3), and the re-run says which value differs and what it should be.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let acc: f64 = conn
        .query_row(
            "SELECT test_acc FROM epochs WHERE run_id = 1 AND epoch = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let tampered = f64::from_bits(acc.to_bits() + 1);
    conn.execute(
        "UPDATE epochs SET test_acc = ?1 WHERE run_id = 1 AND epoch = 2",
        [tampered],
    )
    .unwrap();
    drop(conn);
    let v = runner(dir.path(), &["verify", "1", "--db", dbs]);
    assert_eq!(v.code, 3, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stdout
            .contains("CORRUPT: its epoch rows do not match their hash"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("MISMATCH: epoch 2, test_acc"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains(&format!("{tampered:?}")), "{}", v.stdout);
    // With the hash recomputed (a consistent store whose bits differ), only the re-run can tell: exit 1.
    rehash_metrics(&db, 1);
    let v = runner(dir.path(), &["verify", "1", "--db", dbs]);
    assert_eq!(v.code, 1, "{}{}", v.stdout, v.stderr);
    assert!(!v.stdout.contains("CORRUPT"), "{}", v.stdout);
    assert!(
        v.stdout.contains("MISMATCH: epoch 2, test_acc"),
        "{}",
        v.stdout
    );

    // A tampered weights hash is caught too.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE epochs SET test_acc = ?1 WHERE run_id = 1 AND epoch = 2",
        [acc],
    )
    .unwrap();
    conn.execute("UPDATE runs SET weights_sha256 = 'x' WHERE id = 1", [])
        .unwrap();
    drop(conn);
    rehash_metrics(&db, 1);
    let v = runner(dir.path(), &["verify", "1", "--db", dbs]);
    assert_eq!(v.code, 3);
    assert!(
        v.stdout
            .contains("CORRUPT: final weights do not match their hash (stored sha256 x,"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("MISMATCH: final weights"), "{}", v.stdout);
}

#[test]
fn a_diverging_run_is_stored_as_diverged_and_the_sweep_goes_on() {
    let dir = tmp();
    let body = SWEEP
        .replace("[0.3, 0.05]", "[1e30, 0.3]")
        .replace("[1, 2]", "[1]");
    let spec = spec(dir.path(), "d.toml", &body);
    let db = dir.path().join("d.db");
    let out = runner(
        dir.path(),
        &[spec.to_str().unwrap(), "--db", db.to_str().unwrap()],
    );
    out.ok();
    assert!(out.stdout.contains("diverged at epoch 1"), "{}", out.stdout);
    let rows = query(
        &db,
        "SELECT status, diverged_epoch, epochs_done, weights_sha256 IS NOT NULL FROM runs ORDER BY id",
    );
    assert_eq!(rows[0], vec!["diverged", "1", "1", "1"]);
    assert_eq!(rows[1], vec!["completed", "NULL", "2", "1"]);
    assert_eq!(
        scalar(
            &db,
            "SELECT train_loss IS NULL FROM epochs WHERE run_id = 1"
        ),
        "1"
    );
    let ls = runner(dir.path(), &["ls", "--db", db.to_str().unwrap()]);
    assert!(ls.ok().stdout.contains("diverged"));
    // A diverged run is a deterministic outcome too: verify reproduces it.
    let v = runner(dir.path(), &["verify", "1", "--db", db.to_str().unwrap()]);
    assert!(v.ok().stdout.contains("identical"), "{}", v.stdout);
}

/// One epoch on the full 60 000 images, [784, 128, 10], batch 32, lr 0.1: test accuracy is about 0.95
/// (0.9500 measured); anything below 0.94 means training is broken.
#[test]
fn one_epoch_on_full_mnist_reaches_95_percent() {
    let dir = tmp();
    let spec = spec(
        dir.path(),
        "full.toml",
        "[data]\ndir = \"{MNIST}\"\n[model]\nsizes = [784, 128, 10]\n[train]\nseed = 1\nbatch_size = 32\nlearning_rate = 0.1\nepochs = 1\n",
    );
    let db = dir.path().join("f.db");
    runner(
        dir.path(),
        &[spec.to_str().unwrap(), "--db", db.to_str().unwrap()],
    )
    .ok();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (acc, loss): (f64, f64) = conn
        .query_row("SELECT test_acc, test_loss FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(acc > 0.94, "test accuracy {acc}");
    assert!(loss < 0.25, "test loss {loss}");
}

#[test]
fn plan_lists_runs_and_what_is_done_without_training() {
    let dir = tmp();
    let spec = spec(dir.path(), "mini.toml", SWEEP);
    let db = dir.path().join("p.db");
    let (s, d) = (spec.to_str().unwrap(), db.to_str().unwrap());
    let p = runner(dir.path(), &["plan", s, "--db", d]);
    assert_eq!(p.ok().stdout.matches("to train").count(), 4, "{}", p.stdout);
    assert!(!db.exists(), "plan must not create the database");
    let one = dir.path().join("one.toml");
    std::fs::write(
        &one,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("[1, 2]", "[1]"),
    )
    .unwrap();
    runner(dir.path(), &[one.to_str().unwrap(), "--db", d]).ok();
    let p = runner(dir.path(), &["plan", s, "--db", d]);
    assert_eq!(
        p.ok().stdout.matches("done: run").count(),
        2,
        "{}",
        p.stdout
    );
    assert_eq!(p.stdout.matches("to train").count(), 2);
}

#[test]
fn bench_reports_efficiency_against_its_own_gemm() {
    let dir = tmp();
    let data = crate::util::mnist();
    let out = runner(
        dir.path(),
        &[
            "bench",
            "--data",
            data.to_str().unwrap(),
            "--samples",
            "2000",
            "--reps",
            "1",
            "--batch",
            "32",
            "--dtype",
            "f32,f64",
            "--sizes",
            "784,32,10",
            "--json",
        ],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for k in [
            "s/epoch",
            "samples/s",
            "GFLOP/s",
            "GEMM GFLOP/s",
            "efficiency",
            "fusion_gain",
        ] {
            assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k} in {r}");
        }
    }
    // Every figure also as a fraction of the FMA peak measured in the same run (this CPU has FMA).
    for r in &rows {
        let f = r["of_peak"]
            .as_f64()
            .unwrap_or_else(|| panic!("of_peak in {r}"));
        assert!(f > 0.0 && f < 1.5, "{r}");
    }
    assert_eq!(rows[1]["dtype"], "f64");
    // Each row names the kernel the run used: the chain kernels, for both types.
    assert_eq!(rows[0]["what"], "train epoch, chain");
    assert_eq!(rows[1]["what"], "train epoch, chain");
}

#[test]
fn bench_kernels_times_each_product_against_the_peak() {
    let dir = tmp();
    let out = runner(
        dir.path(),
        &[
            "bench",
            "--kernels",
            "--sizes",
            "784,48,10",
            "--batch",
            "16",
            "--reps",
            "1",
            "--json",
        ],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.ok().stdout).unwrap();
    // Per dtype: the three products of a step at batch 16 with each kernel, and Z = A W^T on an
    // evaluation block with each.
    let names: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["product"].as_str().unwrap().to_string(),
                r["dtype"].as_str().unwrap().to_string(),
                r["rows_a"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, i64)> = ["f32", "f64"]
        .iter()
        .flat_map(|d| {
            [
                ("lanes Z = A W^T", 16),
                ("lanes update W", 16),
                ("lanes update W, then Z", 16),
                ("chain Z = A W^T", 16),
                ("chain update W", 16),
                ("chain update W, then Z", 16),
                ("lanes Z = A W^T", 1000),
                ("chain Z = A W^T", 1000),
            ]
            .map(|(p, n)| (p.to_string(), d.to_string(), n))
        })
        .collect();
    assert_eq!(names, want);
    for r in &rows {
        assert_eq!(
            (r["rows_w"].as_i64(), r["cols"].as_i64()),
            (Some(48), Some(784)),
            "{r}"
        );
        assert!(r["GFLOP/s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        let f = r["of_peak"].as_f64().unwrap_or(f64::NAN);
        assert!(f > 0.0 && f < 1.5, "{r}");
    }
    // A spec of one width has no product to time: refused, naming the flag.
    let bad = runner(dir.path(), &["bench", "--kernels", "--sizes", "784"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--sizes"), "{}", bad.stderr);
}
