//! `[optimizer]`: momentum, Nesterov, weight decay, Adam/AdamW and the schedules, trained on the shipped
//! MNIST by the real binary. Their bits survive SIGKILL and resume, `--threads`, the kernel
//! implementations, shards and merges; their state is stored with each checkpoint and checked; bad
//! values are refused at their key and line.

use std::path::Path;

use crate::util::{kill_after_epoch_1, query, runner, runner_env, scalar, spec, tmp};

/// A run of 3 epochs on 6 000 training images (a validation split of 1 000), with `optimizer` as its
/// `[optimizer]` section.
fn one_run(optimizer: &str, lr: f64) -> String {
    format!(
        "[data]\ndir = \"{{MNIST}}\"\nlimit_train = 6000\nvalidation = 1000\nlimit_test = 1000\n\
         [model]\nsizes = [784, 48, 10]\n[train]\nseed = 4\nbatch_size = 10\nlearning_rate = {lr}\n\
         epochs = 3\n[optimizer]\n{optimizer}\n"
    )
}

/// Every epoch's metrics and learning rate as bit patterns, and each run's final weights hash.
fn fingerprint(db: &Path) -> (Vec<Vec<String>>, String) {
    (
        query(
            db,
            "SELECT run_id, epoch, train_loss, train_acc, test_loss, test_acc, \
             val_loss, val_acc, learning_rate FROM epochs ORDER BY run_id, epoch",
        ),
        scalar(
            db,
            "SELECT group_concat(weights_sha256) FROM (SELECT weights_sha256 FROM runs ORDER BY id)",
        ),
    )
}

/// Killed with SIGKILL after its first epoch, a run of each stateful rule resumes from its checkpoint
/// (weights, shuffle stream and the optimizer's state) and ends with the bits of the run left alone;
/// `verify` re-trains it to the same bits; the state is gone once the run is finished.
#[test]
fn every_optimizer_resumes_after_sigkill_with_the_bits_of_an_uninterrupted_run() {
    let dir = tmp();
    let d = dir.path();
    for (name, section, lr, slots) in [
        (
            "nesterov",
            "momentum = 0.9\nnesterov = true\nweight_decay = 0.0005",
            0.02,
            2,
        ),
        (
            "adam",
            "kind = \"adam\"\nschedule = \"step\"\ngamma = 0.5",
            0.001,
            4,
        ),
        // Decay alone keeps no state, and is not plain SGD either.
        (
            "decay",
            "weight_decay = 0.001\nschedule = \"exponential\"\ngamma = 0.7",
            0.05,
            0,
        ),
        (
            "adamw",
            "kind = \"adamw\"\nweight_decay = 0.05\nschedule = \"cosine\"\nmin_lr = 0.0001\nwarmup_steps = 200",
            0.002,
            4,
        ),
    ] {
        let mut body = one_run(section, lr);
        if name == "adam" {
            // ... with dropout: its masks are keyed by the step, so a resumed run draws the same.
            body = body.replace(
                "sizes = [784, 48, 10]",
                "sizes = [784, 48, 10]\ndropout = 0.25",
            );
        }
        let s = spec(d, &format!("{name}.toml"), &body);
        let s = s.to_str().unwrap();
        let reference = d.join(format!("{name}-ref.db"));
        runner(d, &[s, "--db", reference.to_str().unwrap()]).ok();
        let expected = fingerprint(&reference);
        assert_eq!(expected.0.len(), 3, "{name}");
        assert_eq!(
            scalar(&reference, "SELECT count(*) FROM checkpoint_state"),
            "0",
            "{name}: a finished run keeps no optimizer state"
        );

        let db = d.join(format!("{name}.db"));
        kill_after_epoch_1(d, s, &db, &[]);
        // The checkpoint of epoch 1 holds the rule's state: per layer, its slots of W and of b.
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) || ' ' || coalesce(min(epoch), 1) FROM checkpoint_state"
            ),
            format!("{} 1", slots * 2),
            "{name}"
        );
        assert_eq!(
            scalar(&db, "SELECT checkpoint_state_sha256 IS NOT NULL FROM runs"),
            if slots > 0 { "1" } else { "0" }
        );
        let out = runner(d, &[s, "--db", db.to_str().unwrap()]);
        assert!(
            out.ok().stdout.contains("resuming after epoch 1/3"),
            "{name}: {}",
            out.stdout
        );
        assert_eq!(
            fingerprint(&db),
            expected,
            "{name}: the resumed run differs from the run left alone"
        );
        let v = runner(d, &["verify", "1", "--db", db.to_str().unwrap()]);
        assert!(v.ok().stdout.contains("identical"), "{name}: {}", v.stdout);
        runner(d, &["check", "--db", db.to_str().unwrap()]).ok();
    }
}

/// The learning rate of each epoch is stored in its row: the schedule's value at the epoch's first step.
#[test]
fn each_epoch_stores_the_rate_of_its_schedule() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "step.toml",
        &one_run("schedule = \"step\"\ngamma = 0.5\nstep_epochs = 2", 0.04),
    );
    let db = d.join("r.db");
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    assert_eq!(
        query(
            &db,
            "SELECT epoch, learning_rate FROM epochs ORDER BY epoch"
        ),
        [(1, 0.04f64), (2, 0.04), (3, 0.02)]
            .map(|(e, lr)| vec![e.to_string(), format!("{:#018x}", lr.to_bits())])
            .to_vec()
    );
    assert_eq!(
        scalar(&db, "SELECT optimizer FROM run_summary"),
        "sgd step(step_epochs=2,gamma=0.5)"
    );
    // `show` lists the rates when they differ from the config's.
    let out = runner(d, &["show", "1", "--db", db.to_str().unwrap()]);
    assert!(out.ok().stdout.contains("learning_rate"), "{}", out.stdout);
}

/// A sweep over optimizers: the same bits with one thread and two, on the portable implementation
/// and the CPU's fastest, and in two shards merged.
#[test]
fn optimizer_bits_are_the_same_across_threads_implementations_and_shards() {
    let dir = tmp();
    let d = dir.path();
    let body = "[data]\ndir = \"{MNIST}\"\nlimit_train = 2000\nlimit_test = 500\n[model]\nsizes = [784, 24, 10]\n\
                dropout = 0.2\n[train]\nseed = 9\nbatch_size = 20\nlearning_rate = 0.003\nepochs = 2\n[optimizer]\nkind = \"adam\"\n\
                warmup_steps = 30\nschedule = \"cosine\"\n[sweep]\n\"optimizer.kind\" = [\"adam\", \"adamw\"]\n\
                \"optimizer.weight_decay\" = [0.0, 0.1]\n";
    let s = spec(d, "sweep.toml", body);
    let s = s.to_str().unwrap();
    let one = d.join("one.db");
    runner(d, &[s, "--db", one.to_str().unwrap()]).ok();
    let expected = fingerprint(&one);
    assert_eq!(expected.0.len(), 8);
    // adam and adamw differ once there is a decay to apply.
    let hashes: Vec<Vec<String>> = query(&one, "SELECT weights_sha256 FROM runs ORDER BY id");
    assert_eq!(
        hashes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "{hashes:?}"
    );

    let two = d.join("two.db");
    runner(d, &[s, "--db", two.to_str().unwrap(), "--threads", "2"]).ok();
    assert_eq!(fingerprint(&two), expected, "--threads 2");

    let portable = d.join("portable.db");
    runner_env(
        d,
        &[s, "--db", portable.to_str().unwrap()],
        &[("MLP_RUNNER_KERNEL_IMPL", "portable")],
    )
    .ok();
    assert_eq!(fingerprint(&portable), expected, "portable");

    let shards: Vec<String> = (0..2)
        .map(|i| {
            let db = d.join(format!("shard{i}.db"));
            runner(
                d,
                &[
                    s,
                    "--db",
                    db.to_str().unwrap(),
                    "--shard",
                    &format!("{i}/2"),
                ],
            )
            .ok();
            db.to_str().unwrap().to_string()
        })
        .collect();
    let merged = d.join("merged.db");
    runner(
        d,
        &[
            "merge",
            &shards[0],
            &shards[1],
            "-o",
            merged.to_str().unwrap(),
        ],
    )
    .ok();
    // Run ids follow the merge's order; compare per config.
    let by_config = |db: &Path| {
        query(
            db,
            "SELECT r.config_hash, r.weights_sha256, group_concat(e.learning_rate || ':' || e.test_loss)
             FROM runs r JOIN epochs e ON e.run_id = r.id GROUP BY r.id ORDER BY r.config_hash",
        )
    };
    assert_eq!(by_config(&merged), by_config(&one), "shards merged");
    runner(d, &["check", "--db", merged.to_str().unwrap()]).ok();
}

/// Edited optimizer state is found by `check` and refused by resume (the run is left as it was).
#[test]
fn corrupt_optimizer_state_is_found_and_never_resumed_from() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "m.toml", &one_run("momentum = 0.9", 0.02));
    let s = s.to_str().unwrap();
    let db = d.join("m.db");
    kill_after_epoch_1(d, s, &db, &[]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE checkpoint_state SET data = zeroblob(length(data)) WHERE layer = 1 AND param = 'weight.velocity'",
        [],
    )
    .unwrap();
    drop(conn);
    let out = runner(d, &["check", "--db", db.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("optimizer state does not match its hash"),
        "{}",
        out.stdout
    );
    let out = runner(d, &[s, "--db", db.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("optimizer state"), "{}", out.stderr);
    assert_eq!(scalar(&db, "SELECT epochs_done FROM runs"), "1");
}

/// Bad values are refused before anything is stored, naming the key, its line and the allowed range.
#[test]
fn bad_optimizer_values_are_refused_at_their_key_and_line() {
    let dir = tmp();
    let d = dir.path();
    for (section, key, says) in [
        ("momentum = 1.0", "optimizer.momentum", "[0, 1)"),
        ("momentum = -0.1", "optimizer.momentum", "[0, 1)"),
        ("kind = \"adam\"\nbeta1 = 1.5", "optimizer.beta1", "[0, 1)"),
        ("kind = \"adam\"\nbeta2 = 1.0", "optimizer.beta2", "[0, 1)"),
        ("weight_decay = -0.01", "optimizer.weight_decay", ">= 0"),
        (
            "schedule = \"cosine\"\nmin_lr = 0.5",
            "optimizer.min_lr",
            "below its start",
        ),
        ("nesterov = true", "optimizer.nesterov", "momentum > 0"),
        (
            "kind = \"adam\"\nmomentum = 0.9",
            "optimizer.momentum",
            "beta1",
        ),
        ("kind = \"rmsprop\"", "optimizer.kind", "`adamw`"),
        ("gamma = 0", "optimizer.gamma", "(0, 1]"),
        ("schedle = \"cosine\"", "schedle", "schedule"),
    ] {
        let s = spec(d, "bad.toml", &one_run(section, 0.1));
        let db = d.join("bad.db");
        let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{section}: {}{}", out.stdout, out.stderr);
        let short = key.trim_start_matches("optimizer.");
        assert!(
            out.stderr.contains(short) && out.stderr.contains(says),
            "{section}: {}",
            out.stderr
        );
        // The line of the offending key (the section starts at line 13 of the spec).
        let line = 13 + section.lines().count();
        assert!(
            out.stderr.contains(&format!("line {line}"))
                || out.stderr.contains(&format!(":{line}")),
            "{section}: no line {line} in {}",
            out.stderr
        );
        assert!(!db.exists(), "{section}: nothing is written");
    }
}

/// A run with early stopping, `train` being its extra `[train]` keys.
fn stopping_run(train: &str, epochs: usize) -> String {
    format!(
        "[data]\ndir = \"{{MNIST}}\"\nlimit_train = 4000\nvalidation = 1000\nlimit_test = 1000\n\
         [model]\nsizes = [784, 32, 10]\n[train]\nseed = 5\nbatch_size = 20\nlearning_rate = 0.05\n\
         epochs = {epochs}\n{train}\n[optimizer]\nmomentum = 0.9\n"
    )
}

/// Early stopping ends a run as completed at the epoch its patience runs out, with its reason; with
/// restore_best its final weights are the best epoch's (the bits of the same run trained to that epoch);
/// killed before the stop, the resumed run stops at the same epoch with the same bits, and verify
/// re-trains it to them.
#[test]
fn early_stopping_stops_at_the_same_epoch_resumed_or_verified() {
    let dir = tmp();
    let d = dir.path();
    // No accuracy improves by 0.5: epoch 1 sets the best, epoch 2 ends the wait of 1.
    let s = spec(
        d,
        "stop.toml",
        &stopping_run("patience = 1\nmin_delta = 0.5\nrestore_best = true", 6),
    );
    let db = d.join("stop.db");
    let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert!(
        out.ok()
            .stdout
            .contains("completed at epoch 2: early stopping"),
        "{}",
        out.stdout
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT status || ' ' || epochs_done || ' ' || stopped_epoch FROM runs"
        ),
        "completed 2 2"
    );
    let reason = scalar(&db, "SELECT stop_reason FROM runs");
    assert!(
        reason.contains("val_acc did not improve by more than 0.5 for 1 epoch")
            && reason.contains("at epoch 1"),
        "{reason}"
    );
    // The final weights are epoch 1's: those of the same run trained for one epoch.
    let one = spec(d, "one.toml", &stopping_run("", 1));
    let one_db = d.join("one.db");
    runner(
        d,
        &[one.to_str().unwrap(), "--db", one_db.to_str().unwrap()],
    )
    .ok();
    assert_eq!(
        scalar(&db, "SELECT weights_sha256 FROM runs"),
        scalar(&one_db, "SELECT weights_sha256 FROM runs")
    );
    runner(d, &["check", "--db", db.to_str().unwrap()]).ok();
    let v = runner(d, &["verify", "1", "--db", db.to_str().unwrap()]);
    assert!(v.ok().stdout.contains("identical"), "{}", v.stdout);

    // Killed after epoch 1 of a run that stops at epoch 3: resumed, it stops there with the same bits.
    let s = spec(
        d,
        "wait.toml",
        &stopping_run("patience = 2\nmin_delta = 0.5\nmonitor = \"val_loss\"", 6),
    );
    let reference = d.join("wait-ref.db");
    runner(
        d,
        &[s.to_str().unwrap(), "--db", reference.to_str().unwrap()],
    )
    .ok();
    assert_eq!(scalar(&reference, "SELECT stopped_epoch FROM runs"), "3");
    let killed = d.join("wait.db");
    kill_after_epoch_1(d, s.to_str().unwrap(), &killed, &[]);
    assert_eq!(
        scalar(
            &killed,
            "SELECT count(*) FROM checkpoint_state WHERE param = 'early_stop'"
        ),
        "1"
    );
    runner(d, &[s.to_str().unwrap(), "--db", killed.to_str().unwrap()]).ok();
    assert_eq!(fingerprint(&killed), fingerprint(&reference));
    assert_eq!(
        scalar(
            &killed,
            "SELECT stopped_epoch || ' ' || stop_reason FROM runs"
        ),
        scalar(
            &reference,
            "SELECT stopped_epoch || ' ' || stop_reason FROM runs"
        )
    );
}

/// Early stopping without a validation split, on the test set, or inside an adaptive search is refused
/// before anything is written.
#[test]
fn early_stopping_is_refused_where_it_cannot_work() {
    let dir = tmp();
    let d = dir.path();
    let no_split = stopping_run("patience = 2", 3).replace("validation = 1000\n", "");
    let on_test = stopping_run("patience = 2\nmonitor = \"test_acc\"", 3);
    let search = format!(
        "{}[sweep]\nmethod = \"halving\"\nmin_epochs = 1\n\"train.learning_rate\" = [0.1, 0.01]\n",
        stopping_run("patience = 2", 3)
    );
    for (body, key, says) in [
        (no_split, "train.patience", "validation = N"),
        (on_test, "train.monitor", "val_acc"),
        (search, "train.patience", "adaptive search"),
    ] {
        let s = spec(d, "bad.toml", &body);
        let db = d.join("bad.db");
        let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{key}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(key) && out.stderr.contains(says),
            "{}",
            out.stderr
        );
        assert!(!db.exists());
    }
}

/// A halving search over optimizers with a cosine schedule (which depends on the run's epochs): runs
/// paused at a rung keep their state; every run, pruned ones included, re-trains to its bits.
#[test]
fn a_search_over_optimizers_keeps_state_at_rungs_and_verifies() {
    let dir = tmp();
    let d = dir.path();
    let body = "[data]\ndir = \"{MNIST}\"\nlimit_train = 3000\nvalidation = 500\nlimit_test = 500\n\
                [model]\nsizes = [784, 24, 10]\n[train]\nbatch_size = 25\nepochs = 4\n\
                [optimizer]\nschedule = \"cosine\"\nwarmup_steps = 20\n[sweep]\nmethod = \"halving\"\n\
                eta = 2\nmin_epochs = 1\n\"optimizer\" = [{ kind = \"sgd\", momentum = 0.9, \
                \"train.learning_rate\" = 0.02 }, { kind = \"adam\", \"train.learning_rate\" = 0.002 }]\n\
                \"train.seed\" = [1, 2]\n";
    let s = spec(d, "search.toml", body);
    let db = d.join("s.db");
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    assert_eq!(
        scalar(
            &db,
            "SELECT group_concat(status, ',') FROM (SELECT status FROM runs ORDER BY status)"
        ),
        "completed,pruned,pruned,pruned"
    );
    let v = runner(d, &["verify", "--all", "--db", db.to_str().unwrap()]);
    assert_eq!(
        v.ok().stdout.matches("identical").count(),
        4,
        "{}",
        v.stdout
    );
    runner(d, &["check", "--db", db.to_str().unwrap()]).ok();
}

/// Dropout rates outside [0, 1), or a list that does not give one per hidden layer, are refused at
/// `model.dropout` and its line.
#[test]
fn bad_dropout_is_refused_at_its_key_and_line() {
    let dir = tmp();
    let d = dir.path();
    for (dropout, says) in [
        ("1.0", "[0, 1)"),
        ("-0.1", "[0, 1)"),
        ("[0.2, 0.5]", "one rate per hidden layer"),
    ] {
        let body = one_run("", 0.1).replace(
            "sizes = [784, 48, 10]",
            &format!("sizes = [784, 48, 10]\ndropout = {dropout}"),
        );
        let s = spec(d, "bad.toml", &body);
        let db = d.join("bad.db");
        let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{dropout}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("model.dropout")
                && out.stderr.contains(says)
                && out.stderr.contains("line 8"),
            "{dropout}: {}",
            out.stderr
        );
        assert!(!db.exists());
    }
}
