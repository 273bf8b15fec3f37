//! A user's own data and the rough edges met on the way: a PNG-folder subset that is one or two digits,
//! Kaggle's IDX file names, checksums of a folder that is not the shipped one, a stray file among the
//! PNGs, and the two spec mistakes whose messages said little.

use std::path::Path;

use crate::util::{Out, runner, small_idx_dir, tmp};

fn train(d: &Path, spec_text: &str) -> Out {
    let s = d.join("own.toml");
    std::fs::write(&s, spec_text).unwrap();
    runner(
        d,
        &[
            s.to_str().unwrap(),
            "--db",
            d.join("own.db").to_str().unwrap(),
        ],
    )
}

const SMALL: &str = "[model]\nsizes = [784, 16, 10]\n[train]\nbatch_size = 20\nepochs = 1\n";

#[test]
fn a_png_subset_of_one_or_two_digits_is_refused_with_the_reason() {
    let dir = tmp();
    let d = dir.path();
    let idx = small_idx_dir(&d.join("idx"), 600, 200);
    let png = d.join("png");
    runner(
        d,
        &[
            "data",
            "export-png",
            idx.to_str().unwrap(),
            png.to_str().unwrap(),
        ],
    )
    .ok();
    // The PNG layout lists samples digit by digit: its first 300 are digits 0 to 4 only.
    let out = train(
        d,
        &format!(
            "[data]\ndir = \"{}\"\nlimit_train = 300\n{SMALL}",
            png.display()
        ),
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("key `data.limit_train`")
            && out.stderr.contains("not a sample of the data"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no sample of 5, 6, 7, 8, 9"),
        "{}",
        out.stderr
    );
    assert!(!d.join("own.db").exists());
    // A test subset the same; the whole split trains.
    let out = train(
        d,
        &format!(
            "[data]\ndir = \"{}\"\nlimit_test = 50\n{SMALL}",
            png.display()
        ),
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("key `data.limit_test`"),
        "{}",
        out.stderr
    );
    train(d, &format!("[data]\ndir = \"{}\"\n{SMALL}", png.display())).ok();
    // The same limit on the IDX files (MNIST's order is shuffled) is a sample, and trains.
    let out = train(
        d,
        &format!(
            "[data]\ndir = \"{}\"\nlimit_train = 300\n{SMALL}",
            idx.display()
        ),
    );
    out.ok();
}

#[test]
fn idx_files_under_kaggles_names_are_read_and_checksums_say_how_to_fix() {
    let dir = tmp();
    let d = dir.path();
    let idx = small_idx_dir(&d.join("idx"), 600, 200);
    let kaggle = d.join("kaggle");
    std::fs::create_dir(&kaggle).unwrap();
    for (from, to) in [
        ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
        ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
        ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
    ] {
        std::fs::copy(idx.join(from), kaggle.join(to)).unwrap();
    }
    let info = runner(d, &["data", "info", kaggle.to_str().unwrap()]);
    assert!(
        info.ok().stdout.contains("format idx, 600 training"),
        "{}",
        info.stdout
    );
    let same = runner(d, &["data", "info", idx.to_str().unwrap()]);
    let sha = |o: &str| {
        o.split("dataset sha256 ")
            .nth(1)
            .map(|s| s[..64].to_string())
    };
    assert_eq!(
        sha(&info.stdout),
        sha(&same.ok().stdout),
        "the same samples"
    );
    train(
        d,
        &format!("[data]\ndir = \"{}\"\n{SMALL}", kaggle.display()),
    )
    .ok();
    // A SHA256SUMS that a file no longer matches: the fix for this folder, not `git checkout`.
    std::fs::write(
        kaggle.join("SHA256SUMS"),
        format!("{}  train-images.idx3-ubyte\n", "0".repeat(64)),
    )
    .unwrap();
    let out = runner(d, &["data", "info", kaggle.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert!(!out.stderr.contains("git checkout"), "{}", out.stderr);
    assert!(
        out.stderr.contains("write its new hash in SHA256SUMS"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_stray_file_among_the_pngs_is_named_with_the_fix() {
    let dir = tmp();
    let d = dir.path();
    let idx = small_idx_dir(&d.join("idx"), 600, 200);
    let png = d.join("png");
    runner(
        d,
        &[
            "data",
            "export-png",
            idx.to_str().unwrap(),
            png.to_str().unwrap(),
        ],
    )
    .ok();
    std::fs::write(png.join("training/3/notes.txt"), "where these came from").unwrap();
    let out = train(d, &format!("[data]\ndir = \"{}\"\n{SMALL}", png.display()));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("training/3/notes.txt"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("move a file that is not one out of the folder"),
        "{}",
        out.stderr
    );
    // Hidden files are skipped, as the message says.
    std::fs::rename(
        png.join("training/3/notes.txt"),
        png.join("training/3/.notes.txt"),
    )
    .unwrap();
    train(d, &format!("[data]\ndir = \"{}\"\n{SMALL}", png.display())).ok();
}

#[test]
fn two_spec_mistakes_get_messages_that_say_what_to_write() {
    let dir = tmp();
    let d = dir.path();
    let out = train(d, "[train]\nepochs = \n");
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("line 2: `epochs =` has no value: give one (e.g. `epochs = 3`)"),
        "{}",
        out.stderr
    );
    let out = train(d, "[sweep]\ntrain.learning_rate = [0.1, 0.3]\n");
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("line 2, key `sweep.train`: a dotted sweep key must be quoted: write \"train.learning_rate\" = [...]"),
        "{}",
        out.stderr
    );
    assert!(!d.join("own.db").exists());
}
