//! Bad input, one case per row: each gets a clear error (what, where, how to fix), exit code 2, and leaves
//! the results database exactly as it was.

use std::path::{Path, PathBuf};

use crate::util::{file_sha, idx_prefix, mnist, query, runner, small_idx_dir, spec, tmp};

const GOOD: &str = "[data]\ndir = \"{DATA}\"\nlimit_train = 100\nlimit_test = 50\n[model]\nsizes = [784, 8, 10]\n\
                    [train]\nbatch_size = 10\nepochs = 1\n";

/// A database holding one completed run, to check that bad input leaves it untouched.
fn seeded_db(dir: &Path) -> PathBuf {
    let db = dir.join("results.db");
    let s = spec(dir, "good.toml", &GOOD.replace("{DATA}", "{MNIST}"));
    runner(dir, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    db
}

fn expect_error(dir: &Path, args: &[&str], db: &Path, needles: &[&str]) {
    let before = file_sha(db);
    let out = runner(dir, args);
    assert_eq!(
        out.code, 2,
        "{args:?}: expected exit 2\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "{args:?}: stderr lacks {n:?}:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(file_sha(db), before, "{args:?} changed the database");
}

#[test]
fn bad_specs_name_file_line_and_key() {
    let dir = tmp();
    let d = dir.path();
    let db = seeded_db(d);
    let good = GOOD.replace("{DATA}", "{MNIST}");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "malformed TOML",
            good.replace("epochs = 1", "epochs = = 1"),
            vec!["bad.toml, line 9", "expected"],
        ),
        (
            "unknown key",
            good.replace("epochs = 1", "epoch = 1"),
            vec!["line 9", "unknown field `epoch`", "did you mean `epochs`?"],
        ),
        (
            "wrong type",
            good.replace("batch_size = 10", "batch_size = \"10\""),
            vec!["line 8", "invalid type"],
        ),
        (
            "lr zero",
            format!("{good}learning_rate = 0.0\n"),
            vec!["line 10", "key `train.learning_rate`", "finite number > 0"],
        ),
        (
            "lr not finite",
            format!("{good}learning_rate = inf\n"),
            vec!["key `train.learning_rate`"],
        ),
        (
            "batch 0",
            good.replace("batch_size = 10", "batch_size = 0"),
            vec!["line 8", "key `train.batch_size`", ">= 1"],
        ),
        (
            "batch > data",
            good.replace("batch_size = 10", "batch_size = 101"),
            vec!["line 8", "larger than the training set (100 samples)"],
        ),
        (
            "epochs 0",
            good.replace("epochs = 1", "epochs = 0"),
            vec!["line 9", "key `train.epochs`"],
        ),
        (
            "input size",
            good.replace("[784, 8, 10]", "[780, 8, 10]"),
            vec!["line 6", "key `model.sizes`", "must be 784"],
        ),
        (
            "class count",
            good.replace("[784, 8, 10]", "[784, 8, 9]"),
            vec!["line 6", "must be 10"],
        ),
        (
            "bad activation",
            good.replace("sizes", "activation = \"rleu\"\nsizes"),
            vec!["unknown variant `rleu`", "did you mean `relu`?"],
        ),
        (
            "empty sweep list",
            format!("{good}[sweep]\n\"train.seed\" = []\n"),
            vec!["line 11", "empty list"],
        ),
        (
            "unknown sweep key",
            format!("{good}[sweep]\n\"train.seeds\" = [1]\n"),
            vec!["line 11", "did you mean \"train.seed\"?"],
        ),
        (
            "bad sweep value",
            format!("{good}[sweep]\n\"train.batch_size\" = [10, 0]\n"),
            vec!["line 11", "sweep value 0"],
        ),
        (
            "zero trials",
            format!("{good}[sweep]\nmethod = \"random\"\ntrials = 0\n\"train.seed\" = [1]\n"),
            vec!["line 12", "trials"],
        ),
        (
            "missing data",
            good.replace("{MNIST}", "/nonexistent/mnist"),
            vec!["/nonexistent/mnist", "data folder not found"],
        ),
    ];
    for (name, body, needles) in cases {
        let s = spec(d, "bad.toml", &body);
        let fresh = d.join(format!("fresh-{}.db", name.replace(' ', "-")));
        expect_error(
            d,
            &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
            &db,
            &needles,
        );
        expect_error(
            d,
            &[s.to_str().unwrap(), "--db", fresh.to_str().unwrap()],
            &fresh,
            &needles,
        );
        assert!(
            !fresh.exists(),
            "{name}: a database was created for a spec that cannot run"
        );
    }
    expect_error(
        d,
        &["no/such/spec.toml", "--db", db.to_str().unwrap()],
        &db,
        &["no/such/spec.toml", "cannot read the spec"],
    );
    expect_error(
        d,
        &["verfy", "7", "--db", db.to_str().unwrap()],
        &db,
        &["did you mean `runner verify`?"],
    );
}

/// Write a data folder from the real first samples, then break one file with `corrupt`.
fn broken_data(root: &Path, name: &str, corrupt: impl FnOnce(&Path)) -> PathBuf {
    let dir = small_idx_dir(&root.join(name), 100, 50);
    corrupt(&dir);
    dir
}

#[test]
fn bad_data_names_the_file() {
    let dir = tmp();
    let d = dir.path();
    let db = seeded_db(d);
    let images = "train-images-idx3-ubyte";
    let labels = "train-labels-idx1-ubyte";
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            broken_data(d, "truncated", |p| {
                std::fs::write(
                    p.join(images),
                    &idx_prefix(images, 100)[..16 + 784 * 50 + 3],
                )
                .unwrap()
            }),
            vec![images, "truncated IDX image data", "100 images"],
        ),
        (
            broken_data(d, "magic", |p| {
                let mut b = idx_prefix(images, 100);
                b[3] = 0x01;
                std::fs::write(p.join(images), b).unwrap()
            }),
            vec![images, "wrong IDX magic 0x00000801"],
        ),
        (
            broken_data(d, "gzip", |p| {
                std::fs::remove_file(p.join(images)).unwrap();
                let gz = std::fs::read(mnist().join(format!("{images}.gz"))).unwrap();
                std::fs::write(p.join(format!("{images}.gz")), &gz[..gz.len() / 2]).unwrap()
            }),
            vec!["train-images-idx3-ubyte.gz", "corrupt gzip"],
        ),
        (
            broken_data(d, "count", |p| {
                std::fs::write(p.join(labels), idx_prefix(labels, 99)).unwrap()
            }),
            vec![labels, "99 labels but", "has 100 images"],
        ),
        (
            broken_data(d, "missing", |p| {
                std::fs::remove_file(p.join(labels)).unwrap()
            }),
            vec!["missing IDX file", labels],
        ),
        (
            broken_data(d, "checksum", |p| {
                std::fs::write(
                    p.join("SHA256SUMS"),
                    format!("{}  {labels}\n", "0".repeat(64)),
                )
                .unwrap()
            }),
            vec![labels, "checksum mismatch"],
        ),
    ];
    for (data_dir, needles) in cases {
        let s = spec(
            d,
            "data.toml",
            &GOOD.replace("{DATA}", data_dir.to_str().unwrap()),
        );
        expect_error(
            d,
            &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
            &db,
            &needles,
        );
    }

    // The PNG layout: an image of another size, a file that is not an image, a folder that is not a digit.
    let png = d.join("png");
    runner(
        d,
        &[
            "data",
            "export-png",
            small_idx_dir(&d.join("src"), 30, 10).to_str().unwrap(),
            png.to_str().unwrap(),
        ],
    )
    .ok();
    let s = spec(
        d,
        "png.toml",
        &GOOD
            .replace("{DATA}", png.to_str().unwrap())
            .replace("limit_train = 100", "limit_train = 20")
            .replace("limit_test = 50", "limit_test = 5"),
    );
    let small = image::GrayImage::new(20, 20);
    let odd = png.join("training/3/zz-small.png");
    small.save(&odd).unwrap();
    expect_error(
        d,
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
        &db,
        &["zz-small.png", "image is 20x20 but the others are 28x28"],
    );
    std::fs::write(&odd, "not an image").unwrap();
    expect_error(
        d,
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
        &db,
        &["zz-small.png", "not a readable PNG"],
    );
    std::fs::remove_file(&odd).unwrap();
    std::fs::create_dir(png.join("testing/ten")).unwrap();
    expect_error(
        d,
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
        &db,
        &["testing/ten", "not a label folder"],
    );
}

#[test]
fn bad_databases_and_queries_are_refused() {
    let dir = tmp();
    let d = dir.path();
    let db = seeded_db(d);
    let s = spec(
        d,
        "good2.toml",
        &GOOD
            .replace("{DATA}", "{MNIST}")
            .replace("epochs = 1", "epochs = 2"),
    );
    let s = s.to_str().unwrap();

    // A mistyped folder for a new store: refused, not created.
    let out = runner(d, &[s, "--db", "no-such-folder/sub/x.db"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("the folder no-such-folder/sub does not exist; create it (mkdir -p"),
        "{}",
        out.stderr
    );
    assert!(!d.join("no-such-folder").exists());
    // An experiment that does not exist is named, with those that do; a checkpoint of a finished run
    // points to its final weights.
    let dbs = db.to_str().unwrap();
    expect_error(
        d,
        &["ls", "--experiment", "goood", "--db", dbs],
        &db,
        &["no experiment `goood`", "did you mean `good`?"],
    );
    expect_error(
        d,
        &[
            "export",
            "1",
            "--weights",
            "checkpoint",
            "-o",
            "c.safetensors",
            "--db",
            dbs,
        ],
        &db,
        &["keeps no checkpoint", "--weights final"],
    );

    // A directory, a text file, a newer schema, a folder path that is a file.
    let folder = d.join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    expect_error(
        d,
        &[s, "--db", folder.to_str().unwrap()],
        &folder,
        &["a-folder", "is a directory"],
    );
    let text = d.join("notes.txt");
    std::fs::write(
        &text,
        "these are my notes, not a database, and they are long enough to be checked ".repeat(20),
    )
    .unwrap();
    expect_error(
        d,
        &[s, "--db", text.to_str().unwrap()],
        &text,
        &["notes.txt", "is not a SQLite database"],
    );
    let newer = d.join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t(x); PRAGMA application_id = 1296846930; PRAGMA user_version = 99;",
        )
        .unwrap();
    expect_error(
        d,
        &[s, "--db", newer.to_str().unwrap()],
        &newer,
        &["newer mlp-runner", "schema version 99"],
    );
    expect_error(
        d,
        &["ls", "--db", newer.to_str().unwrap()],
        &newer,
        &["newer mlp-runner"],
    );
    // A place no one may write, not even root (the tests may run as root, which ignores file modes).
    let unwritable = Path::new("/proc/results.db");
    expect_error(
        d,
        &[s, "--db", "/proc/results.db"],
        unwritable,
        &["cannot open or create", "writable folder"],
    );
    let under_file = text.join("results.db");
    expect_error(
        d,
        &[s, "--db", under_file.to_str().unwrap()],
        &text,
        &["cannot create the folder"],
    );

    // Read-side commands on the good database.
    let dbs = db.to_str().unwrap();
    expect_error(
        d,
        &["verify", "99", "--db", dbs],
        &db,
        &["no run with id 99", "from 1 to 1"],
    );
    expect_error(d, &["show", "99", "--db", dbs], &db, &["no run with id 99"]);
    expect_error(
        d,
        &["sql", "DROP TABLE runs", "--db", dbs],
        &db,
        &["SQL error", "readonly"],
    );
    expect_error(
        d,
        &["sql", "SELEC 1", "--db", dbs],
        &db,
        &["SQL error", "syntax error"],
    );
    assert_eq!(query(&db, "SELECT count(*) FROM runs"), vec![vec!["1"]]);
    let missing = d.join("missing.db");
    expect_error(
        d,
        &["ls", "--db", missing.to_str().unwrap()],
        &missing,
        &["does not exist"],
    );
    assert!(!missing.exists());
}
