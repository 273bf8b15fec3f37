//! Sharded sweeps and merged stores: 3 shards as 3 real processes into 3 databases, merged, must equal the
//! unsharded sweep; merging twice changes nothing; a disagreeing copy is reported, never merged.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{file_sha, mnist, query, rehash_metrics, runner, runner_env, spec, tmp};

const SWEEP: &str = "[data]\ndir = \"{MNIST}\"\nlimit_train = 1000\nlimit_test = 300\n[model]\nsizes = [784, 16, 10]\n\
                     [train]\nbatch_size = 20\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2, 3]\n\
                     \"train.learning_rate\" = [0.3, 0.1, 0.03]\n";

/// Each finished run by config hash: its weights hash and every epoch's metrics as bit patterns.
fn fingerprint(db: &Path) -> Vec<Vec<String>> {
    query(
        db,
        "SELECT r.config_hash, r.status, r.weights_sha256, r.init_weights_sha256, r.dataset_sha256, e.epoch,
                e.train_loss, e.train_acc, e.test_loss, e.test_acc
         FROM runs r JOIN epochs e ON e.run_id = r.id ORDER BY r.config_hash, e.epoch",
    )
}

#[test]
fn three_shards_merged_equal_the_unsharded_sweep() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "sweep.toml", SWEEP);
    let s = s.to_str().unwrap();
    let full = d.join("full.db");
    runner(d, &[s, "--db", full.to_str().unwrap()]).ok();

    // Three shards at once, as a job array would start them.
    let shard_dbs: Vec<_> = (0..3).map(|i| d.join(format!("shard-{i}.db"))).collect();
    let children: Vec<_> = shard_dbs
        .iter()
        .enumerate()
        .map(|(i, db)| {
            Command::new(env!("CARGO_BIN_EXE_runner"))
                .args([
                    s,
                    "--db",
                    db.to_str().unwrap(),
                    "--shard",
                    &format!("{i}/3"),
                ])
                .current_dir(d)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("of the 9 runs"));
    }
    let counts: Vec<usize> = shard_dbs
        .iter()
        .map(|db| fingerprint(db).len() / 2)
        .collect();
    assert_eq!(
        counts.iter().sum::<usize>(),
        9,
        "every run in exactly one shard: {counts:?}"
    );

    let all = d.join("all.db");
    let paths: Vec<&str> = shard_dbs.iter().map(|p| p.to_str().unwrap()).collect();
    let merge_args = [&["merge"], &paths[..], &["-o", all.to_str().unwrap()]].concat();
    let out = runner(d, &merge_args);
    assert!(
        out.ok().stdout.contains("9 runs added, 0 already there"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprint(&all), fingerprint(&full));
    // Provenance: every merged run keeps its host, pid and envelope; experiments are kept per invocation.
    assert_eq!(
        query(
            &all,
            "SELECT count(*) FROM runs WHERE host = '' OR pid IS NULL"
        ),
        vec![vec!["0"]]
    );
    // One experiment row per shard invocation that queued runs (which shards get runs depends on the
    // config hashes, and so on where the data folder is).
    let invocations = counts.iter().filter(|&&c| c > 0).count();
    assert_eq!(
        query(&all, "SELECT count(*) FROM experiments"),
        vec![vec![invocations.to_string()]]
    );
    let v = runner(d, &["verify", "--all", "--db", all.to_str().unwrap()]);
    assert_eq!(v.ok().stdout.matches("identical").count(), 9);

    // Merging again changes nothing.
    let before = file_sha(&all);
    let again = runner(d, &merge_args);
    assert!(
        again
            .ok()
            .stdout
            .contains("0 runs added, 9 already there and identical"),
        "{}",
        again.stdout
    );
    assert_eq!(file_sha(&all), before);

    // A copy whose bits differ is a reproducibility failure, reported and not merged.
    let bad = d.join("bad.db");
    std::fs::copy(&shard_dbs[0], &bad).unwrap();
    let conn = rusqlite::Connection::open(&bad).unwrap();
    conn.execute(
        "UPDATE epochs SET test_acc = test_acc + 0.001 WHERE epoch = 2",
        [],
    )
    .unwrap();
    conn.execute("UPDATE runs SET host = 'node17'", []).unwrap();
    drop(conn);
    // As edited, the copy's epoch rows no longer match their hashes: a corrupt input, refused before
    // anything is merged.
    let out = runner(
        d,
        &["merge", bad.to_str().unwrap(), "-o", all.to_str().unwrap()],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("epoch rows do not match their hash"),
        "{}",
        out.stderr
    );
    assert_eq!(file_sha(&all), before);
    // A consistent copy (hashes recomputed) whose bits differ: a reproducibility failure.
    for run in 1..=9 {
        rehash_metrics(&bad, run);
    }
    let out = runner(
        d,
        &["merge", bad.to_str().unwrap(), "-o", all.to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("REPRODUCIBILITY FAILURE"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("host node17"), "{}", out.stdout);
    assert!(out.stdout.contains("epoch 2, test_acc"), "{}", out.stdout);
    assert_eq!(file_sha(&all), before);
}

#[test]
fn the_shard_comes_from_slurm_or_kubernetes_with_the_count_stated_once() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "sweep.toml", SWEEP);
    let s = s.to_str().unwrap();
    let run_set = |db: &Path| query(db, "SELECT config_hash FROM runs ORDER BY config_hash");

    let given = d.join("given.db");
    runner(d, &["plan", s]).ok();
    let out = runner(d, &[s, "--db", given.to_str().unwrap(), "--shard", "1/3"]);
    assert!(
        out.ok().stdout.contains("shard 1/3 (--shard)"),
        "{}",
        out.stdout
    );

    for (name, vars) in [
        // The whole array --array=0-2, and task 1 re-submitted alone (--array=1): the same shard.
        (
            "slurm",
            vec![
                ("SLURM_ARRAY_JOB_ID", "40"),
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
                ("MLP_RUNNER_SHARD_COUNT", "3"),
            ],
        ),
        (
            "slurm-resubmitted",
            vec![
                ("SLURM_ARRAY_JOB_ID", "52"),
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "1"),
                ("MLP_RUNNER_SHARD_COUNT", "3"),
            ],
        ),
        // A stepped array --array=10-14:2: task 12 is shard 1.
        (
            "slurm-stepped",
            vec![
                ("SLURM_ARRAY_TASK_ID", "12"),
                ("SLURM_ARRAY_TASK_MIN", "10"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
                ("MLP_RUNNER_SHARD_COUNT", "3"),
                ("MLP_RUNNER_SHARD_FIRST", "10"),
                ("MLP_RUNNER_SHARD_STEP", "2"),
            ],
        ),
        (
            "k8s",
            vec![
                ("JOB_COMPLETION_INDEX", "1"),
                ("MLP_RUNNER_SHARD_COUNT", "3"),
            ],
        ),
    ] {
        let db = d.join(format!("{name}.db"));
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([s, "--db", db.to_str().unwrap()])
            .envs(vars)
            .current_dir(d)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("shard 1/3 ("), "{name}: {stdout}");
        assert_eq!(run_set(&db), run_set(&given), "{name}");
    }
    // A Slurm array without the count stated: refused, nothing trained.
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([s, "--db", "unstated.db"])
        .envs([
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MLP_RUNNER_SHARD_COUNT is not set"));
    assert!(!d.join("unstated.db").exists());
}

#[test]
fn merge_names_the_runs_a_partial_array_still_owes_and_fails_without_allow_incomplete() {
    let dir = tmp();
    let d = dir.path();
    // The data folder by a relative path: which runs fall in which shard then does not depend on where
    // the repository is (config hashes include the data folder as written); shard 1 holds some.
    std::os::unix::fs::symlink(mnist(), d.join("mnist")).unwrap();
    let s = spec(d, "sweep.toml", &SWEEP.replace("{MNIST}", "mnist"));
    let s = s.to_str().unwrap();
    // Shards 0 and 2 of 3 finished; shard 1 never ran.
    for i in [0, 2] {
        runner(
            d,
            &[
                s,
                "--db",
                &format!("shard-{i}.db"),
                "--shard",
                &format!("{i}/3"),
            ],
        )
        .ok();
    }
    let owed = query(&d.join("shard-0.db"), "SELECT count(*) FROM runs")[0][0]
        .parse::<usize>()
        .unwrap()
        + query(&d.join("shard-2.db"), "SELECT count(*) FROM runs")[0][0]
            .parse::<usize>()
            .unwrap();
    let owed = 9 - owed;
    assert!(owed >= 2, "shard 1 holds {owed} runs");
    let args = [
        "merge",
        "shard-0.db",
        "shard-2.db",
        "-o",
        "all.db",
        "--spec",
        s,
        "--shards",
        "3",
    ];
    let out = runner(d, &args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout.matches("MISSING: run ").count(),
        owed,
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout
            .matches("owed by shard 1 of 3): in no input")
            .count(),
        owed,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "{owed} runs of the 9 runs of {s} are not finished"
        )),
        "{}",
        out.stdout
    );
    // Without the spec, an input's unfinished run is named with the file that holds it.
    runner_env(
        d,
        &[s, "--db", "shard-1.db", "--shard", "1/3"],
        &[("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "0")],
    )
    .ok();
    let conn = rusqlite::Connection::open(d.join("shard-1.db")).unwrap();
    conn.execute("UPDATE runs SET status = 'interrupted' WHERE id = 1", [])
        .unwrap();
    drop(conn);
    let out = runner(d, &["merge", "shard-1.db", "-o", "all.db"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("interrupted in shard-1.db"),
        "{}",
        out.stdout
    );
    let out = runner(
        d,
        &["merge", "shard-1.db", "-o", "all.db", "--allow-incomplete"],
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("(--allow-incomplete: exit 0)"),
        "{}",
        out.stdout
    );
    // Once the shard is trained to its end, the merge is complete.
    runner(d, &[s, "--db", "shard-1.db", "--shard", "1/3"]).ok();
    let all = [
        "merge",
        "shard-0.db",
        "shard-1.db",
        "shard-2.db",
        "-o",
        "all.db",
        "--spec",
        s,
        "--shards",
        "3",
    ];
    let out = runner(d, &all);
    assert!(out.ok().stdout.contains("already there"), "{}", out.stdout);
    assert!(!out.stdout.contains("MISSING"), "{}", out.stdout);
}

#[test]
fn a_retried_task_takes_over_its_own_runs_at_once_but_never_a_live_one() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "sweep.toml",
        &SWEEP
            .replace("[1, 2, 3]", "[1]")
            .replace("[0.3, 0.1, 0.03]", "[0.3]"),
    );
    let s = s.to_str().unwrap();
    let reference = d.join("reference.db");
    runner(d, &[s, "--db", reference.to_str().unwrap()]).ok();
    // A task killed (as by the out-of-memory killer) after its first epoch: its run stays `running`,
    // owned by a pid on "another node" whose heartbeat is fresh.
    let killed = |db: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([s, "--db", db.to_str().unwrap()])
            .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "5000")
            .current_dir(d)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        while !lines.next().unwrap().unwrap().contains("epoch 1/2") {}
        child.kill().unwrap();
        child.wait().unwrap();
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute(
            "UPDATE runs SET host = 'node-that-died', owner_task = 'slurm:77:0/1',
                heartbeat_at = CAST(strftime('%s', 'now') AS REAL)",
            [],
        )
        .unwrap();
    };
    // Another process sees a live owner elsewhere: it leaves the run alone.
    let db = d.join("shared.db");
    killed(&db);
    let out = runner(d, &[s, "--db", db.to_str().unwrap()]);
    assert!(
        out.ok().stdout.contains("1 running elsewhere"),
        "{}",
        out.stdout
    );
    assert_eq!(query(&db, "SELECT status FROM runs")[0][0], "running");
    // The same task retried on a new node (same job, same shard): its own run, taken over at once.
    let out = runner_env(
        d,
        &[s, "--db", db.to_str().unwrap()],
        &[
            ("SLURM_ARRAY_JOB_ID", "77"),
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("MLP_RUNNER_SHARD_COUNT", "1"),
        ],
    );
    assert!(
        out.ok().stdout.contains("resuming after epoch 1/2"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprint(&db), fingerprint(&reference));
    // A shard's private copy of its store (a re-submitted job, another job id): taken over at once too.
    let private = d.join("private.db");
    killed(&private);
    let out = runner(
        d,
        &[s, "--db", private.to_str().unwrap(), "--private-store"],
    );
    assert!(
        out.ok().stdout.contains("resuming after epoch 1/2"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprint(&private), fingerprint(&reference));
}
