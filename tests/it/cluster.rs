//! Sharded sweeps and merged stores: 3 shards as 3 real processes into 3 databases, merged, must equal the
//! unsharded sweep; merging twice changes nothing; a disagreeing copy is reported, never merged.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{file_sha, query, rehash_metrics, runner, spec, tmp};

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
    assert_eq!(
        query(&all, "SELECT count(*) FROM experiments"),
        vec![vec!["3"]]
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
fn the_shard_comes_from_slurm_or_kubernetes_when_not_given() {
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
        (
            "slurm",
            vec![
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
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
}
