//! Crash safety, resume and concurrency, with real processes: SIGKILL mid-epoch and at an epoch boundary,
//! Ctrl-C, several runners on one database, `--jobs`. A resumed run must end bit-identical to the same run
//! left alone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{query, runner, runner_env, scalar, spec, tmp, wait_for_epochs};

/// 4 epochs of about 0.3 s each: long enough to kill in the middle of one.
const RUN: &str = "[data]\ndir = \"{MNIST}\"\nlimit_train = 20000\nlimit_test = 2000\n[model]\nsizes = [784, 64, 10]\n\
                   [train]\nseed = 3\nbatch_size = 10\nlearning_rate = 0.1\nepochs = 4\n";

/// Every epoch's metrics as exact bit patterns, and the final weights hash.
fn fingerprint(db: &Path) -> (Vec<Vec<String>>, String) {
    let epochs = query(
        db,
        "SELECT epoch, train_loss, train_acc, test_loss, test_acc FROM epochs ORDER BY run_id, epoch",
    );
    (
        epochs,
        scalar(
            db,
            "SELECT group_concat(weights_sha256) FROM (SELECT weights_sha256 FROM runs ORDER BY id)",
        ),
    )
}

fn spawn(dir: &Path, args: &[&str], pause_ms: Option<u64>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ms) = pause_ms {
        cmd.env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", ms.to_string());
    }
    cmd.spawn().unwrap()
}

fn reference(dir: &Path, spec_path: &Path) -> (Vec<Vec<String>>, String) {
    let db = dir.join("reference.db");
    runner(
        dir,
        &[spec_path.to_str().unwrap(), "--db", db.to_str().unwrap()],
    )
    .ok();
    fingerprint(&db)
}

#[test]
fn sigkill_mid_epoch_and_at_a_boundary_then_resume_is_bit_identical() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "run.toml", RUN);
    let expected = reference(d, &s);
    assert_eq!(expected.0.len(), 4);

    // Mid-epoch: kill a moment after epoch 1 is stored, while epoch 2 trains.
    // At a boundary: the test hook pauses after each stored epoch; kill during the pause after epoch 2.
    for (name, pause, kill_after) in [("mid", None, 1), ("boundary", Some(5000), 2)] {
        let db = d.join(format!("{name}.db"));
        let mut child = spawn(
            d,
            &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
            pause,
        );
        wait_for_epochs(&db, kill_after);
        if pause.is_none() {
            std::thread::sleep(Duration::from_millis(30)); // epoch 2 takes about 0.3 s
        }
        child.kill().unwrap(); // SIGKILL: no handler runs
        child.wait().unwrap();
        let stored = scalar(&db, "SELECT epochs_done FROM runs");
        assert_eq!(
            scalar(&db, "SELECT status FROM runs"),
            "running",
            "{name}: left as the kill found it"
        );
        assert_eq!(
            stored,
            kill_after.to_string(),
            "{name}: the kill landed in another epoch"
        );

        // The owner is dead: the next invocation resumes from the checkpoint, not from the start.
        let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert!(
            out.ok()
                .stdout
                .contains(&format!("resuming after epoch {kill_after}/4")),
            "{name}: {}",
            out.stdout
        );
        assert_eq!(
            scalar(&db, "SELECT status || ' ' || resumes FROM runs"),
            "completed 1"
        );
        assert_eq!(
            fingerprint(&db),
            expected,
            "{name}: the resumed run differs from the run left alone"
        );
        let v = runner(d, &["verify", "1", "--db", db.to_str().unwrap()]);
        assert!(v.ok().stdout.contains("identical"), "{}", v.stdout);
    }
}

#[test]
fn ctrl_c_stops_at_once_keeps_the_epochs_and_resume_finishes_identically() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "run.toml", RUN);
    let expected = reference(d, &s);
    let db = d.join("c.db");
    let child = spawn(
        d,
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
        None,
    );
    wait_for_epochs(&db, 1);
    std::thread::sleep(Duration::from_millis(100));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    let row = query(
        &db,
        "SELECT status, epochs_done, checkpoint_epoch FROM runs",
    );
    assert_eq!(row[0][0], "interrupted");
    assert_eq!(
        row[0][1], row[0][2],
        "the checkpoint is the last stored epoch"
    );
    assert!(row[0][1] != "4", "Ctrl-C did not stop the run: {row:?}");

    // `runner resume <run>` continues it from its stored config; a second resume has nothing to do.
    let out = runner(d, &["resume", "1", "--db", db.to_str().unwrap()]);
    assert!(
        out.ok().stdout.contains("resuming after epoch"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprint(&db), expected);
    let again = runner(d, &["resume", "1", "--db", db.to_str().unwrap()]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("is completed already"),
        "{}",
        again.stderr
    );
}

#[test]
fn concurrent_runners_train_each_run_once_and_match_jobs_1() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "many.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 2000\nlimit_test = 500\n[model]\nsizes = [784, 16, 10]\n\
         [train]\nbatch_size = 20\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2, 3, 4, 5, 6, 7, 8]\n",
    );
    let s = s.to_str().unwrap();

    // Four processes on one database at once.
    let shared = d.join("shared.db");
    let children: Vec<Child> = (0..4)
        .map(|_| spawn(d, &[s, "--db", shared.to_str().unwrap()], None))
        .collect();
    let mut trained = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(!stderr.contains("locked"), "{stderr}");
        trained += stdout.matches(": training").count();
    }
    assert_eq!(
        trained, 8,
        "every run trained exactly once across the processes"
    );
    assert_eq!(
        query(
            &shared,
            "SELECT count(*), count(DISTINCT config_hash) FROM runs"
        ),
        vec![vec!["8", "8"]]
    );
    assert_eq!(
        scalar(
            &shared,
            "SELECT count(*) FROM runs WHERE status = 'completed'"
        ),
        "8"
    );
    assert_eq!(scalar(&shared, "SELECT count(*) FROM epochs"), "16");

    // The same sweep in one process, one run at a time and two at a time: the same bits.
    let one = d.join("one.db");
    runner(d, &[s, "--db", one.to_str().unwrap(), "--jobs", "1"]).ok();
    let two = d.join("two.db");
    runner(d, &[s, "--db", two.to_str().unwrap(), "--jobs", "2"]).ok();
    let by_seed = "SELECT r.seed, r.weights_sha256, e.epoch, e.train_loss, e.test_acc
                   FROM runs r JOIN epochs e ON e.run_id = r.id ORDER BY r.seed, e.epoch";
    let reference = query(&one, by_seed);
    assert_eq!(
        query(&two, by_seed),
        reference,
        "--jobs 2 differs from --jobs 1"
    );
    assert_eq!(
        query(&shared, by_seed),
        reference,
        "four runners differ from one"
    );
}

#[test]
fn a_run_whose_owner_stopped_beating_is_taken_over() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "run.toml", &RUN.replace("epochs = 4", "epochs = 2"));
    let expected = reference(d, &s);
    let db = d.join("h.db");
    let mut child = spawn(
        d,
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
        Some(5000),
    );
    wait_for_epochs(&db, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    // Pretend the owner lives on another host, whose pid cannot be checked from here: only its heartbeat,
    // 10 minutes old, tells that it is gone.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE runs SET host = 'elsewhere', heartbeat_at = heartbeat_at - 600",
        [],
    )
    .unwrap();
    drop(conn);
    let args = [s.to_str().unwrap(), "--db", db.to_str().unwrap()];
    let out = runner(d, &[&args[..], &["--stale-after", "3600"]].concat());
    assert!(
        out.ok().stdout.contains("1 running elsewhere"),
        "{}",
        out.stdout
    );
    assert_eq!(
        scalar(&db, "SELECT status FROM runs"),
        "running",
        "a live-looking owner is left alone"
    );
    let out = runner(d, &[&args[..], &["--stale-after", "300"]].concat());
    assert!(
        out.ok().stdout.contains("resuming after epoch 1/2"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprint(&db), expected);
}

#[test]
fn two_gemm_threads_give_the_same_bits_as_one() {
    let dir = tmp();
    let d = dir.path();
    // Big enough products (eval blocks of 1000 x 784 x 256; steps of 16 and 128 x 784 x 256) to be split
    // over threads: in f32 by the lanes16 kernels' own, in f64 by matrixmultiply's.
    let s = spec(
        d,
        "t.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 5000\nlimit_test = 1000\n[model]\nsizes = [784, 256, 10]\n\
         [train]\nepochs = 2\n[sweep]\n\"train.batch_size\" = [16, 128]\n\"model.dtype\" = [\"f32\", \"f64\"]\n",
    );
    let (one, two) = (d.join("one.db"), d.join("two.db"));
    runner(
        d,
        &[
            s.to_str().unwrap(),
            "--db",
            one.to_str().unwrap(),
            "--threads",
            "1",
        ],
    )
    .ok();
    runner(
        d,
        &[
            s.to_str().unwrap(),
            "--db",
            two.to_str().unwrap(),
            "--threads",
            "2",
        ],
    )
    .ok();
    assert_eq!(
        scalar(&two, "SELECT group_concat(threads) FROM runs"),
        "2,2,2,2"
    );
    assert_eq!(fingerprint(&one), fingerprint(&two));
    let v = runner(d, &["verify", "1", "--db", two.to_str().unwrap()]);
    assert!(v.ok().stdout.contains("identical"), "{}", v.stdout);
    assert!(
        v.stdout
            .contains("envelope differs: threads: stored 2, now 1"),
        "{}",
        v.stdout
    );
}

/// The chain contract, and the lanes16/lanes8 contract that runs were trained with before it: every
/// implementation this CPU can run (portable, AVX2+FMA, AVX-512) trains the same bits under each, so a
/// run verifies on a machine without AVX-512; and a run of the lanes era keeps verifying with its own
/// kernel after the default changed.
#[test]
fn every_kernel_implementation_gives_the_same_bits() {
    let dir = tmp();
    let d = dir.path();
    // A hidden width of 37 exercises the edges (37 = 32 + 5 rows of W in f32 panels, 2 x 16 + 5 in f64;
    // 2 x 16 + 5 lanes in f32, 4 x 8 + 5 in f64) as well as the full blocks; both types.
    let s = spec(
        d,
        "p.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 3000\nlimit_test = 500\n[model]\nsizes = [784, 37, 10]\n\
         [train]\nbatch_size = 10\nepochs = 2\nlearning_rate = 0.1\n[sweep]\n\"model.dtype\" = [\"f32\", \"f64\"]\n",
    );
    let mut prints = Vec::new();
    for (contract, kernels) in [
        ("chain", ["mlp-runner-chain/", "mlp-runner-chain/"]),
        ("lanes", ["mlp-runner-lanes16", "mlp-runner-lanes8/"]),
    ] {
        let train = [("MLP_RUNNER_TRAIN_KERNEL", contract)];
        let fast = d.join(format!("{contract}.db"));
        runner_env(
            d,
            &[s.to_str().unwrap(), "--db", fast.to_str().unwrap()],
            &train,
        )
        .ok();
        let stored = crate::util::query(&fast, "SELECT dtype, gemm_kernel FROM runs ORDER BY id");
        assert_eq!(stored.len(), 2);
        for (row, (dtype, kernel)) in stored
            .iter()
            .zip([("f32", kernels[0]), ("f64", kernels[1])])
        {
            assert!(row[0] == dtype && row[1].starts_with(kernel), "{stored:?}");
        }
        // The runs learned: the bits compared are those of working models.
        assert_eq!(
            scalar(
                &fast,
                "SELECT min(test_acc > 0.8) FROM epochs WHERE epoch = 2"
            ),
            "1"
        );
        for imp in ["portable", "avx2-fma"] {
            let env = [("MLP_RUNNER_KERNEL_IMPL", imp), train[0]];
            let other = d.join(format!("{contract}-{imp}.db"));
            runner_env(
                d,
                &[s.to_str().unwrap(), "--db", other.to_str().unwrap()],
                &env,
            )
            .ok();
            let kernel = scalar(&other, "SELECT group_concat(gemm_kernel) FROM runs");
            // A CPU without AVX2 runs the portable path for "avx2-fma": still a valid comparison.
            assert!(
                kernel.contains(kernels[1].trim_end_matches('/')),
                "{kernel}"
            );
            assert_eq!(fingerprint(&fast), fingerprint(&other), "{kernel}");
            // Verifying the fast runs with this implementation (and the default kernel for new runs,
            // whatever the runs were trained with): identical, and no envelope difference for it.
            let v = runner_env(
                d,
                &["verify", "--all", "--db", fast.to_str().unwrap()],
                &env[..1],
            );
            assert_eq!(
                v.ok().stdout.matches(": identical").count(),
                2,
                "{}",
                v.stdout
            );
            assert!(!v.stdout.contains("gemm_kernel"), "{}", v.stdout);
        }
        prints.push(fingerprint(&fast));
    }
    // The two contracts are different arithmetic: the same configs give other bits.
    assert_ne!(prints[0].1, prints[1].1);
    // A name this CPU does not run is an error before anything is trained, not a silent fallback; so
    // is a kernel that does not exist.
    for (var, value, says) in [
        ("MLP_RUNNER_KERNEL_IMPL", "avx3", "portable"),
        ("MLP_RUNNER_TRAIN_KERNEL", "lanes32", "chain"),
    ] {
        let bad = runner_env(
            d,
            &[
                s.to_str().unwrap(),
                "--db",
                d.join("bad.db").to_str().unwrap(),
            ],
            &[(var, value)],
        );
        assert_eq!(bad.code, 2);
        assert!(
            bad.stderr.contains(&format!("{var}=\"{value}\"")) && bad.stderr.contains(says),
            "{}",
            bad.stderr
        );
        assert!(!d.join("bad.db").exists());
    }
}

/// A run of the lanes era (trained before the chain kernels became the default) that was interrupted
/// resumes with the lanes kernels, whatever new runs train with: it ends with the bits of the same run
/// left alone under lanes, not a mix of two contracts.
#[test]
fn an_interrupted_run_of_the_lanes_era_resumes_with_its_kernel() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "run.toml", RUN);
    let lanes = [("MLP_RUNNER_TRAIN_KERNEL", "lanes")];
    let alone = d.join("alone.db");
    runner_env(
        d,
        &[s.to_str().unwrap(), "--db", alone.to_str().unwrap()],
        &lanes,
    )
    .ok();
    let expected = fingerprint(&alone);
    assert!(scalar(&alone, "SELECT gemm_kernel FROM runs").starts_with("mlp-runner-lanes16/"));
    // Trained under lanes, killed in the pause after epoch 1.
    let db = d.join("cut.db");
    crate::util::kill_after_epoch_1(d, s.to_str().unwrap(), &db, &lanes);
    // Resumed by a runner whose new runs train with the chain kernels.
    let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    assert!(
        out.ok().stdout.contains("resuming after epoch 1/4"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprint(&db), expected);
    assert!(scalar(&db, "SELECT gemm_kernel FROM runs").starts_with("mlp-runner-lanes16/"));
    // The same config trained now: the chain kernels, other bits.
    let now = d.join("now.db");
    runner(d, &[s.to_str().unwrap(), "--db", now.to_str().unwrap()]).ok();
    assert!(scalar(&now, "SELECT gemm_kernel FROM runs").starts_with("mlp-runner-chain/"));
    assert_ne!(fingerprint(&now).1, expected.1);
    // verify re-trains the lanes run with its kernel, and says so.
    let v = runner(d, &["verify", "1", "--db", db.to_str().unwrap()]);
    let out = &v.ok().stdout;
    assert!(out.contains(": identical"), "{out}");
    assert!(
        out.contains("note: trained with the lanes kernels"),
        "{out}"
    );
}

/// Runs trained before schema 7 computed exp, ln, tanh and cos with the platform's C library; runs of
/// today with the owned `libm` functions (recorded as `math`). An interrupted run of the old math resumes
/// with it, both verify with their own functions, and the same configs give other bits under each.
#[test]
fn a_run_of_the_platform_math_era_resumes_and_verifies_with_its_functions() {
    let dir = tmp();
    let d = dir.path();
    // tanh in f32 and sigmoid in f64 (exp and tanh both), normal init (ln and cos in every draw).
    let s = spec(
        d,
        "m.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 3000\nlimit_test = 500\n[model]\nsizes = [784, 24, 10]\n\
         init = \"xavier\"\n[train]\nbatch_size = 10\nepochs = 2\nlearning_rate = 0.05\n[sweep]\n\
         \"model.activation\" = [{ activation = \"tanh\", dtype = \"f32\" },\n\
         { activation = \"sigmoid\", dtype = \"f64\", init = \"normal\" }]\n",
    );
    let platform = [("MLP_RUNNER_MATH", "platform")];
    let alone = d.join("alone.db");
    runner_env(
        d,
        &[s.to_str().unwrap(), "--db", alone.to_str().unwrap()],
        &platform,
    )
    .ok();
    // Stored as every run before schema 7: no math in the envelope.
    assert_eq!(
        scalar(&alone, "SELECT count(*) FROM runs WHERE math IS NULL"),
        "2"
    );
    let expected = fingerprint(&alone);
    // The same configs with the owned functions: recorded, and other bits.
    let now = d.join("now.db");
    runner(d, &[s.to_str().unwrap(), "--db", now.to_str().unwrap()]).ok();
    assert_eq!(
        scalar(&now, "SELECT group_concat(DISTINCT math) FROM runs"),
        "libm-0.2.16"
    );
    assert_ne!(fingerprint(&now).1, expected.1);
    // An old-math run killed after epoch 1, resumed by a runner whose new runs use the owned functions:
    // the bits of the old-math run left alone.
    let db = d.join("cut.db");
    // One run at a time (--jobs 1), so that run 2 has not started when run 1 pauses after its first
    // epoch and the process is killed (with two at once, run 2 may have stored an epoch too, and then
    // resumes with the old math as well: right, but not what this test is about).
    crate::util::kill_after_epoch_1_of(
        d,
        &[
            s.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--jobs",
            "1",
        ],
        &db,
        &platform,
    );
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    // Run 1 (resumed) has the bits of the old-math run left alone; run 2, not started when it was
    // killed, trained from the start as a new run: the owned functions, the bits of today's.
    let (cut, old, new) = (fingerprint(&db), &expected, fingerprint(&now));
    let hashes = |f: &(Vec<Vec<String>>, String)| -> Vec<String> {
        f.1.split(',').map(str::to_string).collect()
    };
    assert_eq!(cut.0[..2], old.0[..2]);
    assert_eq!(hashes(&cut)[0], hashes(old)[0]);
    assert_eq!(cut.0[2..], new.0[2..]);
    assert_eq!(hashes(&cut)[1], hashes(&new)[1]);
    assert_eq!(
        query(
            &db,
            "SELECT id, coalesce(math, 'platform') FROM runs ORDER BY id"
        ),
        [["1", "platform"], ["2", "libm-0.2.16"]]
    );
    // verify re-trains each store's runs with their own functions: identical, no envelope difference.
    for store in [&alone, &now, &db] {
        let v = runner(d, &["verify", "--all", "--db", store.to_str().unwrap()]);
        let out = &v.ok().stdout;
        assert_eq!(out.matches(": identical").count(), 2, "{out}");
        assert!(!out.contains("math"), "{out}");
    }
    // A name that is not a choice is refused before anything is trained.
    let bad = runner_env(
        d,
        &[
            s.to_str().unwrap(),
            "--db",
            d.join("bad.db").to_str().unwrap(),
        ],
        &[("MLP_RUNNER_MATH", "glibc")],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("MLP_RUNNER_MATH=\"glibc\""),
        "{}",
        bad.stderr
    );
    assert!(!d.join("bad.db").exists());
}

#[test]
fn an_f64_run_of_the_gemm_era_still_verifies_with_its_kernel() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(
        d,
        "g.toml",
        "[data]\ndir = \"{MNIST}\"\nlimit_train = 2000\nlimit_test = 300\n[model]\nsizes = [784, 24, 10]\n\
         dtype = \"f64\"\n[train]\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2]\n",
    );
    // Run 1 trained as versions before lanes8 trained f64 (matrixmultiply's GEMM); run 2 with the chain
    // kernels of today.
    let db = d.join("g.db");
    let gemm = [("MLP_RUNNER_F64_GEMM", "1")];
    let one = s.to_str().unwrap().replace("g.toml", "one.toml");
    std::fs::write(
        &one,
        std::fs::read_to_string(&s)
            .unwrap()
            .replace("[1, 2]", "[1]"),
    )
    .unwrap();
    runner_env(d, &[&one, "--db", db.to_str().unwrap()], &gemm).ok();
    runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    assert_eq!(
        crate::util::query(
            &db,
            "SELECT id, substr(gemm_kernel, 1, 17) FROM runs ORDER BY id"
        ),
        [["1", "matrixmultiply-0."], ["2", "mlp-runner-chain/"]]
    );
    // verify re-trains each with its own kernel: both identical, the GEMM one with a note saying why.
    let v = runner(d, &["verify", "--all", "--db", db.to_str().unwrap()]);
    let out = &v.ok().stdout;
    assert_eq!(out.matches(": identical").count(), 2, "{out}");
    assert!(
        out.contains("note: trained with matrixmultiply's GEMM"),
        "{out}"
    );
    assert!(!out.contains("envelope differs: gemm_kernel"), "{out}");
    // The two kernels are different arithmetic: the same config gives other bits.
    let w = crate::util::query(&db, "SELECT weights_sha256 FROM runs ORDER BY id");
    let again = d.join("again.db");
    runner(d, &[&one, "--db", again.to_str().unwrap()]).ok();
    assert_ne!(scalar(&again, "SELECT weights_sha256 FROM runs"), w[0][0]);
}
