//! `[optimizer]`: momentum, Nesterov, weight decay, Adam/AdamW and the schedules, trained on the shipped
//! MNIST by the real binary. Their bits survive SIGKILL and resume, `--threads`, the kernel
//! implementations, shards and merges; their state is stored with each checkpoint and checked; bad
//! values are refused at their key and line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{query, runner, runner_env, scalar, spec, tmp};

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

fn wait_for_epochs(db: &Path, n: usize) {
    let start = Instant::now();
    while !(db.exists()
        && rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT count(*) FROM epochs", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|g| g as usize >= n))
    {
        assert!(start.elapsed() < Duration::from_secs(60), "no epoch {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
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
        (
            "adamw",
            "kind = \"adamw\"\nweight_decay = 0.05\nschedule = \"cosine\"\nmin_lr = 0.0001\nwarmup_steps = 200",
            0.002,
            4,
        ),
    ] {
        let s = spec(d, &format!("{name}.toml"), &one_run(section, lr));
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([s, "--db", db.to_str().unwrap()])
            .current_dir(d)
            .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "20000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_epochs(&db, 1);
        child.kill().unwrap();
        child.wait().unwrap();
        // The checkpoint of epoch 1 holds the rule's state: per layer, its slots of W and of b.
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) || ' ' || min(epoch) FROM checkpoint_state"
            ),
            format!("{} 1", slots * 2),
            "{name}"
        );
        assert_eq!(
            scalar(&db, "SELECT checkpoint_state_sha256 IS NOT NULL FROM runs"),
            "1"
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
                [train]\nseed = 9\nbatch_size = 20\nlearning_rate = 0.003\nepochs = 2\n[optimizer]\nkind = \"adam\"\n\
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([s, "--db", db.to_str().unwrap()])
        .current_dir(d)
        .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "20000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_epochs(&db, 1);
    child.kill().unwrap();
    child.wait().unwrap();
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
