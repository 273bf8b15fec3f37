//! What the tool concludes: the best configuration chosen by the experiment's selection metric (never by
//! test accuracy when a validation split exists), experiments that share runs each seeing exactly their
//! own, `--force` as a new attempt that supersedes the old one, plan on a store of other runs, merges of
//! two kernel eras, the result fingerprint across re-runs, shards and merges, and verify from another
//! folder.

use std::path::Path;

use crate::util::{Out, query, runner, runner_env, scalar, spec, tmp};

/// Learning rates where, on these 2 000 + 1 000 held-out samples, the best mean validation accuracy and
/// the best mean test accuracy fall on different configurations (asserted below, so that the test keeps
/// its teeth if the bits ever change).
const SELECT: &str = "name = \"sel\"
[data]
dir = \"{MNIST}\"
limit_train = 3000
validation = 1000
limit_test = 1000
[model]
sizes = [784, 32, 10]
[train]
batch_size = 20
epochs = 2
[sweep]
\"train.learning_rate\" = [0.5, 0.3, 0.2, 0.1]
\"train.seed\" = [1, 2]
";

fn run(d: &Path, db: &Path, args: &[&str]) -> Out {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--db", db.to_str().unwrap()]);
    runner(d, &all)
}

fn json(out: &Out) -> serde_json::Value {
    serde_json::from_str(&out.ok().stdout).unwrap()
}

/// The learning rate whose mean of `metric` over its completed runs is the highest, read from the runs
/// table directly (not through any view or command of the tool).
fn argmax(db: &Path, metric: &str, experiment: &str) -> String {
    scalar(
        db,
        &format!(
            "SELECT learning_rate FROM runs r JOIN members m ON m.run_id = r.id
             WHERE m.experiment = '{experiment}' AND r.status = 'completed' AND r.superseded_by IS NULL
             GROUP BY learning_rate ORDER BY avg({metric}) DESC LIMIT 1"
        ),
    )
}

fn lr(bits: &str) -> f64 {
    f64::from_bits(u64::from_str_radix(bits.trim_start_matches("0x"), 16).unwrap())
}

#[test]
fn the_best_is_chosen_on_validation_and_its_test_figure_only_reported() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "sel.toml", SELECT);
    let db = d.join("s.db");
    let out = run(d, &db, &[s.to_str().unwrap()]);
    out.ok();
    let by_val = lr(&argmax(&db, "val_acc", "sel"));
    let by_test = lr(&argmax(&db, "test_acc", "sel"));
    assert_ne!(
        by_val, by_test,
        "the fixture no longer separates validation from test: pick other learning rates"
    );
    assert_eq!(scalar(&db, "SELECT metric FROM experiments"), "val_acc");
    // The end-of-sweep summary, compare (text and JSON), best_runs and the dashboard all name the
    // configuration that is best on validation.
    assert!(
        out.stdout.contains(&format!(
            "best configuration (by mean val_acc over its 2 runs):\n  learning_rate={by_val}\n"
        )),
        "{}",
        out.stdout
    );
    let compare = json(&run(d, &db, &["compare", "--json"]));
    let best: Vec<&serde_json::Value> = compare
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["best"] == true)
        .collect();
    assert_eq!(best.len(), 1, "{compare}");
    assert_eq!(best[0]["learning_rate"].as_f64(), Some(by_val), "{compare}");
    let text = run(d, &db, &["compare"]);
    assert!(
        text.ok()
            .stdout
            .contains("best: by mean val_acc over seeds"),
        "{}",
        text.stdout
    );
    let best_run = query(
        &db,
        "SELECT learning_rate, selected_by FROM best_runs WHERE experiment = 'sel'",
    );
    assert_eq!(best_run.len(), 1);
    assert_eq!(best_run[0][1], "val_acc");
    let best_single = lr(&scalar(
        &db,
        "SELECT learning_rate FROM runs WHERE status = 'completed' ORDER BY val_acc DESC, id LIMIT 1",
    ));
    assert_eq!(lr(&best_run[0][0]), best_single);
    let api = mlp_runner::report::ui::api::experiments(
        &mlp_runner::store::Store::open_read_only(&db).unwrap(),
    )
    .unwrap();
    let e = &api["experiments"][0];
    assert_eq!(e["selected_by"], "val_acc", "{api}");
    let run_lr = scalar(
        &db,
        &format!(
            "SELECT learning_rate FROM runs WHERE id = {}",
            e["best_run"].as_i64().unwrap()
        ),
    );
    assert_eq!(lr(&run_lr), best_single);

    // Without a validation split the best is chosen on test accuracy, and every best says so.
    let s = spec(
        d,
        "plain.toml",
        &SELECT
            .replace("name = \"sel\"", "name = \"plain\"")
            .replace("validation = 1000\n", ""),
    );
    let out = run(d, &db, &[s.to_str().unwrap()]);
    assert!(
        out.ok().stdout.contains("chosen on the test set"),
        "{}",
        out.stdout
    );
    let plain = run(d, &db, &["compare", "plain"]);
    assert!(
        plain
            .ok()
            .stdout
            .contains("No validation split was held out: the best is chosen on the test set"),
        "{}",
        plain.stdout
    );
    let compare = json(&run(d, &db, &["compare", "plain", "--json"]));
    let first = &compare.as_array().unwrap()[0];
    assert_eq!(first["best"], true);
    assert_eq!(
        first["learning_rate"].as_f64(),
        Some(lr(&argmax(&db, "test_acc", "plain")))
    );
    // A validation metric named for runs without a split is refused at its key, nothing written.
    let bad = spec(
        d,
        "bad.toml",
        &SELECT
            .replace("validation = 1000\n", "")
            .replace("[sweep]\n", "[sweep]\nmetric = \"val_loss\"\n"),
    );
    let fresh = d.join("fresh.db");
    let out = run(d, &fresh, &[bad.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("key `sweep.metric`: val_loss is measured on a validation split"),
        "{}",
        out.stderr
    );
    assert!(!fresh.exists());
    // A loss as the metric: the lowest mean is the best.
    let loss = spec(
        d,
        "loss.toml",
        &SELECT
            .replace("name = \"sel\"", "name = \"loss\"")
            .replace("[sweep]\n", "[sweep]\nmetric = \"val_loss\"\n"),
    );
    run(d, &db, &[loss.to_str().unwrap()]).ok();
    let compare = json(&run(d, &db, &["compare", "loss", "--json"]));
    let lowest = scalar(
        &db,
        "SELECT learning_rate FROM runs r JOIN members m ON m.run_id = r.id WHERE m.experiment = 'loss'
         GROUP BY learning_rate ORDER BY avg(val_loss) LIMIT 1",
    );
    assert_eq!(
        compare.as_array().unwrap()[0]["learning_rate"].as_f64(),
        Some(lr(&lowest))
    );
    // The three experiments share every run: trained once.
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "16");
}

/// A successive-halving search over 9 candidates, and the grid of the same 9 trained in full.
const HALVING: &str = "name = \"halving\"
[data]
dir = \"{MNIST}\"
limit_train = 2000
validation = 500
limit_test = 500
[model]
sizes = [784, 16, 10]
[train]
batch_size = 50
epochs = 3
[sweep]
method = \"halving\"
eta = 3
\"train.learning_rate\" = [0.5, 0.2, 0.05]
\"model.sizes\" = [[784, 16, 10], [784, 24, 10], [784, 32, 10]]
";

#[test]
fn experiments_that_share_runs_each_see_exactly_their_own() {
    let dir = tmp();
    let d = dir.path();
    let search = spec(d, "halving.toml", HALVING);
    let grid = spec(
        d,
        "grid.toml",
        &HALVING
            .replace("name = \"halving\"", "name = \"grid\"")
            .replace("method = \"halving\"\neta = 3\n", ""),
    );
    let db = d.join("s.db");
    run(d, &db, &[search.to_str().unwrap()]).ok();
    let searched = query(&db, "SELECT id, status, epochs_done FROM runs ORDER BY id");
    let finalists: Vec<&Vec<String>> = searched.iter().filter(|r| r[1] == "completed").collect();
    assert_eq!(searched.len(), 9);
    assert_eq!(finalists.len(), 3, "{searched:?}");
    run(d, &db, &[grid.to_str().unwrap()]).ok();
    // The grid trains the 6 pruned candidates in full and shares the 3 finalists.
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "15");
    let grid_compare = json(&run(d, &db, &["compare", "grid", "--json"]));
    let rows = grid_compare.as_array().unwrap();
    assert_eq!(rows.len(), 9, "{grid_compare}");
    assert!(
        rows.iter().all(|r| r["runs"] == 1 && r["pruned"].is_null()),
        "{grid_compare}"
    );
    // Its best is the best of the 9 trained in full, by mean validation accuracy.
    let full = scalar(
        &db,
        "SELECT r.id FROM runs r JOIN members m ON m.run_id = r.id WHERE m.experiment = 'grid'
         ORDER BY r.val_acc DESC, r.val_loss LIMIT 1",
    );
    let best_grid = scalar(
        &db,
        "SELECT run_id FROM best_runs WHERE experiment = 'grid'",
    );
    assert_eq!(best_grid, full);
    // The search still sees its own 9: 6 pruned, 3 completed; its rungs name its own runs only.
    let search_compare = json(&run(d, &db, &["compare", "halving", "--json"]));
    let pruned: i64 = search_compare
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pruned"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(pruned, 6, "{search_compare}");
    let own: Vec<String> = searched.iter().map(|r| r[0].clone()).collect();
    for row in query(
        &db,
        "SELECT run_id, name FROM rungs WHERE experiment = 'halving'",
    ) {
        assert!(
            own.contains(&row[0]),
            "rung member {row:?} is not the search's"
        );
        assert!(row[1].starts_with("halving/"), "{row:?}");
    }
    let store = mlp_runner::store::Store::open_read_only(&db).unwrap();
    let searches = store.searches_of("halving").unwrap();
    for rung in store.rungs(&searches[0]).unwrap() {
        for m in rung.members {
            assert!(own.contains(&m.run_id.unwrap().to_string()), "{m:?}");
        }
    }
    // Each experiment's runs by name, and `ls --experiment` lists exactly its own.
    let ls = json(&run(d, &db, &["ls", "--experiment", "grid", "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 9);
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"].as_str().unwrap().starts_with("grid/")
                && r["status"] == "completed")
    );
    // The dashboard's experiment page and seed statistics agree.
    let page = mlp_runner::report::ui::api::experiment(&store, "grid").unwrap();
    assert_eq!(page["runs"], 9, "{}", page["runs"]);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM seed_stats WHERE experiment = 'grid'"
        ),
        "9"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM seed_stats WHERE experiment = 'halving'"
        ),
        "3"
    );
}

const TWO_SEEDS: &str = "name = \"two\"
[data]
dir = \"{MNIST}\"
limit_train = 1000
limit_test = 500
[model]
sizes = [784, 16, 10]
[train]
batch_size = 50
epochs = 2
[sweep]
\"train.seed\" = [1, 2]
";

#[test]
fn force_supersedes_the_earlier_attempt_in_every_view_and_statistic() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "two.toml", TWO_SEEDS);
    let db = d.join("f.db");
    run(d, &db, &[s.to_str().unwrap()]).ok();
    let before = json(&run(d, &db, &["compare", "--json"]));
    run(d, &db, &[s.to_str().unwrap(), "--force"]).ok();
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "4");
    assert_eq!(
        query(&db, "SELECT id, superseded_by FROM runs ORDER BY id"),
        vec![
            vec!["1", "3"],
            vec!["2", "4"],
            vec!["3", "NULL"],
            vec!["4", "NULL"]
        ]
    );
    // Two seeds, as before: the same mean and spread, not four copies.
    let after = json(&run(d, &db, &["compare", "--json"]));
    assert_eq!(after[0]["runs"], 2, "{after}");
    assert_eq!(after[0]["std_test_acc"], before[0]["std_test_acc"]);
    assert_eq!(after[0]["mean_test_acc"], before[0]["mean_test_acc"]);
    assert_eq!(scalar(&db, "SELECT seeds FROM seed_stats"), "2");
    assert_eq!(scalar(&db, "SELECT count(*) FROM run_summary"), "2");
    // A name names the current attempt; ls lists it once, and the history with --all.
    let show = run(d, &db, &["show", "two/seed=1"]);
    assert!(show.ok().stdout.starts_with("run 3:"), "{}", show.stdout);
    assert_eq!(
        json(&run(d, &db, &["ls", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let all = json(&run(d, &db, &["ls", "--all", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 4);
    // The attempts are bit-identical: the same result fingerprint.
    assert_eq!(
        scalar(&db, "SELECT count(DISTINCT result_sha256) FROM runs"),
        "2"
    );
    // gc of a removed attempt makes the one before it current again.
    run(d, &db, &["rm", "3"]).ok();
    run(d, &db, &["gc"]).ok();
    assert_eq!(
        query(&db, "SELECT id, superseded_by FROM runs ORDER BY id"),
        vec![vec!["1", "NULL"], vec!["2", "4"], vec!["4", "NULL"]]
    );
    assert_eq!(json(&run(d, &db, &["compare", "--json"]))[0]["runs"], 2);
}

#[test]
fn plan_reads_a_store_that_holds_other_runs() {
    let dir = tmp();
    let d = dir.path();
    let db = d.join("x.db");
    run(d, &db, &[spec(d, "two.toml", TWO_SEEDS).to_str().unwrap()]).ok();
    let search = spec(d, "halving.toml", HALVING);
    let out = run(d, &db, &["plan", search.to_str().unwrap()]);
    out.ok();
    assert!(out.stdout.contains("to come"), "{}", out.stdout);
    let to_train = out
        .stdout
        .lines()
        .filter(|l| l.trim_end().ends_with("to train"));
    assert_eq!(to_train.count(), 9, "{}", out.stdout);
}

#[test]
fn the_result_fingerprint_is_the_same_across_re_runs_shards_and_merges() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "two.toml", TWO_SEEDS);
    let one = d.join("one.db");
    run(d, &one, &[s.to_str().unwrap()]).ok();
    let fingerprints = |db: &Path| {
        query(
            db,
            "SELECT config_hash, result_sha256 FROM runs WHERE superseded_by IS NULL ORDER BY config_hash",
        )
    };
    let expect = fingerprints(&one);
    assert_eq!(expect.len(), 2);
    // As the README defines it (an independent computation), and never over timings.
    for id in [1, 2] {
        assert_eq!(
            crate::util::result_fingerprint(&one, id),
            scalar(
                &one,
                &format!("SELECT result_sha256 FROM runs WHERE id = {id}")
            )
        );
    }
    assert_eq!(
        scalar(&one, "SELECT count(DISTINCT metrics_sha256) FROM runs"),
        "2"
    );
    // Shards in two stores, merged.
    let shards: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            let db = d.join(format!("shard{i}.db"));
            run(d, &db, &[s.to_str().unwrap(), "--shard", &format!("{i}/2")]).ok();
            db
        })
        .collect();
    let merged = d.join("merged.db");
    runner(
        d,
        &[
            "merge",
            shards[0].to_str().unwrap(),
            shards[1].to_str().unwrap(),
            "-o",
            merged.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(fingerprints(&merged), expect);
    // Trained again with --force (and with two threads): the same.
    run(d, &one, &[s.to_str().unwrap(), "--force", "--threads", "2"]).ok();
    assert_eq!(fingerprints(&one), expect);
    // Shown by show and verify.
    let show = run(d, &one, &["show", "3"]);
    assert!(show.ok().stdout.contains(&expect[0][1]) || show.stdout.contains(&expect[1][1]));
    let v = json(&run(d, &merged, &["verify", "--all", "--json"]));
    for row in v.as_array().unwrap() {
        assert!(
            expect
                .iter()
                .any(|e| Some(e[1].as_str()) == row["result_sha256"].as_str()),
            "{row}"
        );
    }
}

#[test]
fn a_merge_of_two_kernel_eras_keeps_both_and_says_why() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "two.toml", TWO_SEEDS);
    let lanes = d.join("lanes.db");
    let chain = d.join("chain.db");
    let out = runner_env(
        d,
        &[s.to_str().unwrap(), "--db", lanes.to_str().unwrap()],
        &[("MLP_RUNNER_TRAIN_KERNEL", "lanes")],
    );
    out.ok();
    run(d, &chain, &[s.to_str().unwrap()]).ok();
    assert_ne!(
        scalar(&lanes, "SELECT group_concat(weights_sha256) FROM runs"),
        scalar(&chain, "SELECT group_concat(weights_sha256) FROM runs")
    );
    let out_db = d.join("out.db");
    let merge = |prefer: &str, out: &Path| {
        runner(
            d,
            &[
                "merge",
                chain.to_str().unwrap(),
                lanes.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--prefer",
                prefer,
            ],
        )
    };
    let out = merge("output", &out_db);
    out.ok();
    assert!(
        !out.stdout.contains("REPRODUCIBILITY FAILURE"),
        "{}",
        out.stdout
    );
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("kernels differ:"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    for l in &lines {
        assert!(l.contains(lanes.to_str().unwrap()), "{l}");
        assert!(l.contains(chain.to_str().unwrap()), "{l}");
        assert!(
            l.contains("mlp-runner-lanes") && l.contains("mlp-runner-chain"),
            "{l}"
        );
        assert!(!l.contains("Some("), "{l}");
    }
    // Both copies kept; the output's (the chain era's, merged first) current, the other history.
    assert_eq!(scalar(&out_db, "SELECT count(*) FROM runs"), "4");
    assert_eq!(
        scalar(
            &out_db,
            "SELECT group_concat(DISTINCT gemm_kernel) FROM runs WHERE superseded_by IS NULL"
        )
        .split('/')
        .next()
        .unwrap(),
        "mlp-runner-chain"
    );
    assert_eq!(json(&run(d, &out_db, &["compare", "--json"]))[0]["runs"], 2);
    // Merging again is idempotent; --prefer input keeps the input's kernel current.
    let again = merge("output", &out_db);
    assert!(
        again.ok().stdout.contains("0 runs added, 4 already there"),
        "{}",
        again.stdout
    );
    let other = d.join("other.db");
    merge("input", &other).ok();
    assert!(
        scalar(
            &other,
            "SELECT group_concat(DISTINCT gemm_kernel) FROM runs WHERE superseded_by IS NULL"
        )
        .starts_with("mlp-runner-lanes")
    );
    // Both verify, each with its own kernel.
    let v = run(d, &out_db, &["verify", "1", "3"]);
    assert_eq!(
        v.ok().stdout.matches(": identical").count(),
        2,
        "{}",
        v.stdout
    );
}

#[test]
fn verify_finds_the_data_from_another_folder_or_says_how() {
    let dir = tmp();
    let d = dir.path();
    // The data in a folder of the test's own, named relatively in the spec.
    crate::util::small_idx_dir(&d.join("data"), 600, 200);
    let s = d.join("rel.toml");
    std::fs::write(
        &s,
        "[data]\ndir = \"data\"\n[model]\nsizes = [784, 16, 10]\n[train]\nbatch_size = 50\nepochs = 2\n",
    )
    .unwrap();
    let db = d.join("v.db");
    run(d, &db, &[s.to_str().unwrap()]).ok();
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let v = run(&elsewhere, &db, &["verify", "1"]);
    assert!(
        v.ok().stdout.contains("run 1 rel: identical"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("run 1: epoch 2/2 re-trained"),
        "progress lines: {}",
        v.stdout
    );
    // Moved away: the error names the run, where it was trained, and --data-dir.
    std::fs::rename(d.join("data"), d.join("moved")).unwrap();
    let v = run(&elsewhere, &db, &["verify", "1"]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("run 1 (rel)"), "{}", v.stderr);
    assert!(
        v.stderr.contains(&format!(
            "nor at {}",
            d.join("data")
                .canonicalize()
                .unwrap_or(d.join("data"))
                .display()
        )) || v.stderr.contains("where it was trained"),
        "{}",
        v.stderr
    );
    assert!(v.stderr.contains("--data-dir"), "{}", v.stderr);
    let moved = d.join("moved");
    let v = run(
        &elsewhere,
        &db,
        &["verify", "1", "--data-dir", moved.to_str().unwrap()],
    );
    assert!(v.ok().stdout.contains("identical"), "{}", v.stdout);
    // Other data in that folder: its hash says so.
    crate::util::small_idx_dir(&d.join("other"), 700, 200);
    let v = run(
        &elsewhere,
        &db,
        &[
            "verify",
            "1",
            "--data-dir",
            d.join("other").to_str().unwrap(),
        ],
    );
    assert_eq!(v.code, 1);
    assert!(v.stdout.contains("MISMATCH: dataset"), "{}", v.stdout);
}
