//! Run management on real stores: tags, notes, soft deletes and gc, runs named by id, name or prefix,
//! unique names, `ls` filters, `diff`, initial weights kept as their hash, and the migration of a
//! version-2 store.

use std::path::{Path, PathBuf};

use crate::util::{Out, file_sha, query, rehash_result, runner, scalar, spec, tmp};

/// Two learning rates and two seeds on 3 000 images: four runs in about a second.
const SPEC: &str = "name = \"m\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 3000\nlimit_test = 500\n\
                    [model]\nsizes = [784, 32, 10]\n[train]\nepochs = 2\nbatch_size = 20\n[sweep]\n\
                    \"train.learning_rate\" = [0.3, 0.03]\n\"train.seed\" = [1, 2]\n";

fn trained(d: &Path, body: &str) -> (PathBuf, PathBuf) {
    let s = spec(d, "m.toml", body);
    let db = d.join("m.db");
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    (s, db)
}

fn run(d: &Path, db: &Path, args: &[&str]) -> Out {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--db", db.to_str().unwrap()]);
    runner(d, &a)
}

fn json(out: &Out) -> serde_json::Value {
    serde_json::from_str(&out.ok().stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn tags_notes_soft_deletes_and_gc() {
    let dir = tmp();
    let d = dir.path();
    let (s, db) = trained(d, SPEC);
    let spec_path = s.to_str().unwrap();

    // Tags and a note, by id and by name; shown by ls (as a JSON list), show and compare.
    let out = run(
        d,
        &db,
        &["tag", "1", "m/learning_rate=0.3,seed=2", "good", "v1"],
    );
    assert!(
        out.ok().stdout.contains("tagged good, v1 on runs 1, 2"),
        "{}",
        out.stdout
    );
    run(d, &db, &["tag", "2", "--remove", "v1"]).ok();
    run(d, &db, &["note", "1", "lr 0.3, seed 1: the reference"]).ok();
    let rows = json(&run(d, &db, &["ls", "--tag", "good", "--json"]));
    let ids: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(rows[0]["tags"], serde_json::json!(["good", "v1"]));
    assert_eq!(rows[1]["tags"], serde_json::json!(["good"]));
    assert_eq!(rows[0]["note"], "lr 0.3, seed 1: the reference");
    let show = run(d, &db, &["show", "1"]);
    assert!(show.ok().stdout.contains("the reference") && show.stdout.contains("good,v1"));
    let cmp = json(&run(d, &db, &["compare", "--json"]));
    let lr03 = cmp
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["learning_rate"] == 0.3)
        .unwrap();
    assert_eq!(lr03["tags"], serde_json::json!(["good", "v1"]));
    let bad = run(d, &db, &["tag", "1", "has space"]);
    assert_eq!(bad.code, 2);
    let bad = run(d, &db, &["tag", "1", "a,b"]);
    assert!(
        bad.stderr.contains("without blanks, commas"),
        "{}",
        bad.stderr
    );

    // rm hides runs from ls, compare and the views, and the spec does not train them again.
    let before_epochs = query(
        &db,
        "SELECT run_id, epoch, test_acc FROM epochs ORDER BY 1, 2",
    );
    let out = run(d, &db, &["rm", "4"]);
    assert!(
        out.ok().stdout.contains("deleted 1 run (4)"),
        "{}",
        out.stdout
    );
    let ls = json(&run(d, &db, &["ls", "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 3);
    assert_eq!(scalar(&db, "SELECT count(*) FROM run_summary"), "3");
    assert_eq!(scalar(&db, "SELECT count(*) FROM run_summary_all"), "4");
    assert_eq!(
        scalar(&db, "SELECT sum(seeds) FROM seed_stats"),
        "3",
        "seed_stats leaves deleted runs out"
    );
    let cmp = json(&run(d, &db, &["compare", "--json"]));
    let counts: i64 = cmp
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runs"].as_i64().unwrap())
        .sum();
    assert_eq!(counts, 3);
    let deleted = json(&run(d, &db, &["ls", "--deleted", "--json"]));
    assert_eq!(deleted[0]["run_id"], 4);
    assert!(deleted[0]["deleted_at"].is_string());
    let again = run(d, &db, &[spec_path]);
    assert!(
        again.ok().stdout.contains("1 deleted, not trained again"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("completed (deleted)"),
        "{}",
        again.stdout
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "4");
    assert_eq!(
        query(
            &db,
            "SELECT run_id, epoch, test_acc FROM epochs ORDER BY 1, 2"
        ),
        before_epochs
    );

    // restore brings it back; rm by experiment and status; a running run is never removed.
    run(d, &db, &["restore", "4"]).ok();
    assert_eq!(scalar(&db, "SELECT count(*) FROM run_summary"), "4");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE runs SET status = 'running' WHERE id = 3", [])
        .unwrap();
    let sha = file_sha(&db);
    let refused = run(d, &db, &["rm", "--experiment", "m"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("run 3 is running"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM runs WHERE deleted_at IS NOT NULL"
        ),
        "0"
    );
    assert_eq!(file_sha(&db), sha, "a refused rm changed the store");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE runs SET status = 'completed' WHERE id = 3", [])
        .unwrap();
    run(
        d,
        &db,
        &["rm", "--experiment", "m", "--status", "completed"],
    )
    .ok();
    assert_eq!(scalar(&db, "SELECT count(*) FROM run_summary"), "0");

    // --force trains a deleted run again, as a new row.
    run(d, &db, &["restore", "--experiment", "m"]).ok();
    run(d, &db, &["rm", "1", "2"]).ok();
    run(d, &db, &[spec_path, "--force"]).ok();
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "8");

    // gc removes deleted runs and their weights for good and gives the bytes back.
    let size = std::fs::metadata(&db).unwrap().len();
    let gc = run(d, &db, &["gc"]);
    assert!(
        gc.ok().stdout.contains("removed 2 deleted runs"),
        "{}",
        gc.stdout
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "6");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM weights WHERE run_id IN (1, 2)"),
        "0"
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM tags"), "0");
    assert!(std::fs::metadata(&db).unwrap().len() < size);
    run(d, &db, &["check"]).ok();
}

#[test]
fn runs_are_named_by_id_name_or_unique_prefix_and_names_stay_unique() {
    let dir = tmp();
    let d = dir.path();
    let (s, db) = trained(d, SPEC);
    let name = |out: Out| json(&out)["run"]["name"].as_str().unwrap().to_string();
    assert_eq!(
        name(run(
            d,
            &db,
            &["show", "m/learning_rate=0.03,seed=1", "--json"]
        )),
        "m/learning_rate=0.03,seed=1"
    );
    assert_eq!(
        name(run(
            d,
            &db,
            &["show", "m/learning_rate=0.3,seed=2", "--json"]
        )),
        "m/learning_rate=0.3,seed=2"
    );
    // A prefix of exactly one run's name.
    assert_eq!(
        json(&run(
            d,
            &db,
            &["show", "m/learning_rate=0.03,seed=2", "--json"]
        ))["run"]["id"],
        4
    );
    let ambiguous = run(d, &db, &["show", "m/learning_rate=0.0"]);
    assert_eq!(ambiguous.code, 2);
    assert!(
        ambiguous.stderr.contains("names 2 runs")
            && ambiguous.stderr.contains("m/learning_rate=0.03,seed=1")
            && ambiguous.stderr.contains("m/learning_rate=0.03,seed=2"),
        "{}",
        ambiguous.stderr
    );
    let missing = run(d, &db, &["verify", "m/learning_rate=9"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no run with the id or name"),
        "{}",
        missing.stderr
    );
    // verify and export take names too.
    let v = run(d, &db, &["verify", "m/learning_rate=0.3,seed=1"]);
    assert!(
        v.ok()
            .stdout
            .contains("run 1 m/learning_rate=0.3,seed=1: identical"),
        "{}",
        v.stdout
    );

    // The spec changes outside its sweep: the new runs get names of their own.
    let changed = std::fs::read_to_string(&s)
        .unwrap()
        .replace("batch_size = 20", "batch_size = 25");
    std::fs::write(&s, changed).unwrap();
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    let names = query(&db, "SELECT name, config_hash FROM runs ORDER BY id");
    assert_eq!(names.len(), 8);
    let unique: std::collections::HashSet<&String> = names.iter().map(|r| &r[0]).collect();
    assert_eq!(unique.len(), 8, "{names:?}");
    assert_eq!(
        names[4][0],
        format!("m/learning_rate=0.3,seed=1~{}", &names[4][1][..8])
    );
}

#[test]
fn ls_filters_sorts_and_limits_with_sql_on_run_summary() {
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d, SPEC);
    let rows = json(&run(
        d,
        &db,
        &[
            "ls",
            "--where",
            "test_acc > 0.5 AND learning_rate < 0.1",
            "--sort",
            "-test_acc",
            "--json",
        ],
    ));
    let expect = query(
        &db,
        "SELECT run_id FROM run_summary WHERE test_acc > 0.5 AND learning_rate < 0.1 ORDER BY test_acc DESC, run_id",
    );
    let got: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].to_string())
        .collect();
    assert_eq!(
        got,
        expect.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    );
    assert!(!got.is_empty());
    let accs: Vec<f64> = json(&run(d, &db, &["ls", "--sort", "-test_acc", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["test_acc"].as_f64().unwrap())
        .collect();
    assert!(accs.windows(2).all(|w| w[0] >= w[1]), "{accs:?}");
    let one = json(&run(
        d,
        &db,
        &["ls", "--sort", "test_acc", "--limit", "1", "--json"],
    ));
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["test_acc"].as_f64().unwrap(), *accs.last().unwrap());
    let status = json(&run(d, &db, &["ls", "--status", "completed", "--json"]));
    assert_eq!(status.as_array().unwrap().len(), 4);

    // Bad SQL: SQLite's message, the column meant, the columns there are; nothing changes.
    let sha = file_sha(&db);
    let bad = run(d, &db, &["ls", "--where", "tset_acc > 0.9"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("no such column: tset_acc")
            && bad.stderr.contains("did you mean `test_acc`?")
            && bad.stderr.contains("learning_rate"),
        "{}",
        bad.stderr
    );
    for hostile in ["1); DROP TABLE runs; --", "1) UNION SELECT 1 --"] {
        let out = run(d, &db, &["ls", "--where", hostile]);
        assert_eq!(out.code, 2, "{hostile}: {}", out.stdout);
    }
    let bad_sort = run(d, &db, &["ls", "--sort", "-acc"]);
    assert!(
        bad_sort.stderr.contains("--sort: no column `acc`"),
        "{}",
        bad_sort.stderr
    );
    assert_eq!(file_sha(&db), sha);
}

#[test]
fn diff_shows_config_envelope_epochs_and_weights() {
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d, SPEC);
    let dj = json(&run(d, &db, &["diff", "1", "2", "--json"]));
    let config = dj["config"].as_array().unwrap();
    assert_eq!(config.len(), 1, "{config:?}");
    assert_eq!(config[0]["key"], "train.seed");
    assert_eq!(
        (config[0]["a"].as_str(), config[0]["b"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(dj["envelope"].as_array().unwrap().len(), 0);
    assert_eq!(dj["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(dj["epochs"][0]["identical"], false);
    let weights = dj["weights"].as_array().unwrap();
    // Final and (drawn again) initial weights, four tensors each; He initialises biases to zero, so
    // the initial biases of two seeds are the only identical tensors.
    assert_eq!(weights.len(), 8);
    for w in weights {
        let zero_bias = w["kind"] == "initial" && w["param"] == "bias";
        assert_eq!(w["identical"], zero_bias, "{w}");
        assert_eq!(w["max_abs_diff"].as_f64().unwrap() > 0.0, !zero_bias, "{w}");
    }
    // A run against itself: nothing differs.
    let same = json(&run(
        d,
        &db,
        &["diff", "3", "m/learning_rate=0.03,seed=1", "--json"],
    ));
    assert_eq!(same["config"].as_array().unwrap().len(), 0);
    assert!(
        same["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["identical"] == true)
    );
    assert!(
        same["weights"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["identical"] == true)
    );
    let text = run(d, &db, &["diff", "1", "3"]);
    assert!(
        text.ok().stdout.contains("train.learning_rate"),
        "{}",
        text.stdout
    );
}

#[test]
fn initial_weights_are_kept_as_a_hash_and_drawn_again_exactly() {
    let dir = tmp();
    let d = dir.path();
    let (_, db) = trained(d, SPEC);
    let kept_dir = d.join("kept");
    std::fs::create_dir(&kept_dir).unwrap();
    let (_, kept) = trained(
        &kept_dir,
        &format!("{SPEC}[store]\ninitial_weights = true\n"),
    );
    let bytes = |db: &Path| {
        scalar(db, "SELECT sum(length(data)) FROM weights")
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(
        bytes(&kept),
        2 * bytes(&db),
        "initial + final against final only"
    );
    // verify re-trains and compares the initial weights' hash either way.
    for db in [&db, &kept] {
        let v = run(d, db, &["verify", "--all"]);
        assert_eq!(
            v.ok().stdout.matches("identical").count(),
            4,
            "{}",
            v.stdout
        );
    }
    // An edited hash of weights kept only as their hash is a corrupt store (the result fingerprint
    // covers it), found by check, export and verify, and nothing is written.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE runs SET init_weights_sha256 = 'ab' || substr(init_weights_sha256, 3) WHERE id = 1", [])
        .unwrap();
    let export = ["export", "1", "--weights", "initial", "-o", "i.safetensors"];
    let out = run(d, &db, &export);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("the hash was edited"), "{}", out.stderr);
    assert!(!d.join("i.safetensors").exists());
    let c = run(d, &db, &["check", "1"]);
    assert_eq!(c.code, 3);
    assert!(
        c.stdout.contains("its result fingerprint does not match"),
        "{}",
        c.stdout
    );
    let v = run(d, &db, &["verify", "1"]);
    assert_eq!(v.code, 3);
    assert!(
        v.stdout.contains("MISMATCH: initial weights"),
        "{}",
        v.stdout
    );
    // Consistent with every other stored hash, the same difference is what another build would give:
    // a clear error, not a silent export.
    rehash_result(&db, 1);
    let out = run(d, &db, &export);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("drawing them again from its config gives other weights"),
        "{}",
        out.stderr
    );
    assert!(!d.join("i.safetensors").exists());
    let v = run(d, &db, &["verify", "1"]);
    assert_eq!(v.code, 1);
}

#[test]
fn a_version_2_store_is_read_as_it_is_and_migrated_when_written() {
    let dir = tmp();
    let d = dir.path();
    // Trained with the C library's elementary functions, as a version-2 build did.
    let s = spec(
        d,
        "m.toml",
        &format!("{SPEC}[store]\ninitial_weights = true\n"),
    );
    let db = d.join("m.db");
    crate::util::runner_env(
        d,
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
        &[("MLP_RUNNER_MATH", "platform")],
    )
    .ok();
    // Make it the store a version-2 build wrote: the version-3 tables, columns and views taken away
    // (the epochs' learning rates first, with the hashes a build without them wrote).
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE epochs SET learning_rate = NULL")
        .unwrap();
    for run in 1..=4 {
        crate::util::rehash_metrics(&db, run);
    }
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DROP VIEW seed_stats; DROP VIEW best_runs; DROP VIEW run_summary; DROP VIEW run_summary_all;
             DROP VIEW rungs; DROP VIEW experiment_metrics; DROP TABLE members;
             ALTER TABLE experiments DROP COLUMN metric; ALTER TABLE runs DROP COLUMN superseded_by;
             ALTER TABLE runs DROP COLUMN result_sha256; ALTER TABLE runs DROP COLUMN data_path;
             DROP TABLE rung_members; DROP TABLE searches; DROP INDEX experiments_by_name;
             ALTER TABLE epochs DROP COLUMN val_loss; ALTER TABLE epochs DROP COLUMN val_acc;
             ALTER TABLE runs DROP COLUMN validation; ALTER TABLE runs DROP COLUMN val_loss;
             ALTER TABLE runs DROP COLUMN val_acc; ALTER TABLE runs DROP COLUMN search;
             DROP TABLE tags;
             ALTER TABLE runs DROP COLUMN note; ALTER TABLE runs DROP COLUMN deleted_at;
             ALTER TABLE runs DROP COLUMN initial_stored;
             ALTER TABLE epochs DROP COLUMN learning_rate; ALTER TABLE runs DROP COLUMN optimizer;
             ALTER TABLE runs DROP COLUMN checkpoint_state_sha256; DROP TABLE checkpoint_state;
             ALTER TABLE runs DROP COLUMN dropout; ALTER TABLE runs DROP COLUMN stopped_epoch;
             ALTER TABLE runs DROP COLUMN stop_reason; ALTER TABLE runs DROP COLUMN math;
             DROP VIEW class_accuracy; DROP TABLE confusion; DROP TABLE misclassified;
             DROP TABLE epoch_classes;
             CREATE VIEW run_summary AS
             SELECT r.id AS run_id, e.name AS experiment, r.name, r.status, r.seed, r.sizes, r.activation, r.init,
                    r.dtype, r.batch_size, r.learning_rate, r.epochs, r.epochs_done, r.train_loss, r.train_acc,
                    r.test_loss, r.test_acc, r.seconds, r.finished_at
             FROM runs r JOIN experiments e ON e.id = r.experiment_id;
             CREATE VIEW best_runs AS SELECT * FROM run_summary;
             CREATE VIEW seed_stats AS SELECT * FROM run_summary;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    let sha = file_sha(&db);
    // Read-only commands read it as it is and change nothing.
    let ls = json(&run(d, &db, &["ls", "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 4);
    run(d, &db, &["show", "m/learning_rate=0.3,seed=1"]).ok();
    run(d, &db, &["compare"]).ok();
    run(d, &db, &["check"]).ok();
    assert_eq!(file_sha(&db), sha);
    // A write migrates it; every run keeps its bits.
    run(d, &db, &["tag", "1", "old"]).ok();
    assert_eq!(scalar(&db, "PRAGMA user_version"), "9");
    // Versions 8 and 9: no run before them stored where it errs, nor its epochs' counts per class.
    assert_eq!(scalar(&db, "SELECT count(*) FROM confusion"), "0");
    assert_eq!(scalar(&db, "SELECT count(*) FROM epoch_classes"), "0");
    // Version 7: no run before it recorded its elementary functions (the C library's).
    assert_eq!(scalar(&db, "SELECT count(math) FROM runs"), "0");
    // Version 6: every run before it trained plain SGD; their epochs have no stored learning rate.
    assert_eq!(
        scalar(&db, "SELECT group_concat(DISTINCT optimizer) FROM runs"),
        "sgd"
    );
    assert_eq!(scalar(&db, "SELECT count(learning_rate) FROM epochs"), "0");
    // Version 5 gives every run its membership, a selection metric and a result fingerprint.
    assert_eq!(scalar(&db, "SELECT count(*) FROM members"), "4");
    assert_eq!(
        scalar(&db, "SELECT group_concat(DISTINCT metric) FROM experiments"),
        "test_acc"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM runs WHERE length(result_sha256) = 64"
        ),
        "4"
    );
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM runs WHERE initial_stored = 1"),
        "4"
    );
    assert_eq!(
        scalar(&db, "SELECT tags FROM run_summary WHERE run_id = 1"),
        "old"
    );
    let v = run(d, &db, &["verify", "--all"]);
    assert_eq!(
        v.ok().stdout.matches("identical").count(),
        4,
        "{}",
        v.stdout
    );
}
