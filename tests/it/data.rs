//! The readers on real data: the shipped gzipped IDX files, raw IDX, and the PNG-folder layout written by
//! `runner data export-png`.

use mlp_runner::core::data::{self, DataFormat};

use crate::util::{mnist, query, runner, small_idx_dir, spec, tmp};

#[test]
fn shipped_mnist_has_the_published_counts() {
    let ds = data::load(&mnist(), DataFormat::Auto).unwrap();
    assert_eq!(ds.format, DataFormat::Idx);
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    assert_eq!((ds.train.rows, ds.train.cols), (28, 28));
    let count = |labels: &[u8]| {
        let mut c = [0usize; 10];
        labels.iter().for_each(|&l| c[l as usize] += 1);
        c
    };
    assert_eq!(
        count(&ds.train.labels),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        count(&ds.test.labels),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn raw_and_gzipped_idx_decode_to_the_same_samples() {
    let dir = tmp();
    let raw = small_idx_dir(&dir.path().join("raw"), 500, 200);
    let a = data::load(&raw, DataFormat::Idx).unwrap();
    let b = data::load(&mnist(), DataFormat::Idx).unwrap();
    assert_eq!(a.train.images[..], b.train.images[..500 * 784]);
    assert_eq!(a.test.labels[..], b.test.labels[..200]);
    // The dataset hash covers exactly the samples used.
    assert_eq!(
        a.sha256(None, None, None),
        b.sha256(Some(500), None, Some(200))
    );
    assert_ne!(
        a.sha256(None, None, None),
        b.sha256(Some(499), None, Some(200))
    );
}

#[test]
fn png_export_round_trips_and_trains() {
    let dir = tmp();
    let idx = small_idx_dir(&dir.path().join("idx"), 600, 200);
    let png = dir.path().join("png");
    let out = runner(
        dir.path(),
        &[
            "data",
            "export-png",
            idx.to_str().unwrap(),
            png.to_str().unwrap(),
        ],
    );
    assert!(
        out.ok()
            .stdout
            .contains("wrote 600 training and 200 test images"),
        "{}",
        out.stdout
    );

    // The PNG layout holds the same images: grouped by label folder, in file order within each label.
    let from_idx = data::load(&idx, DataFormat::Idx).unwrap();
    let from_png = data::load(&png, DataFormat::Auto).unwrap();
    assert_eq!(from_png.format, DataFormat::Png);
    for (a, b) in [
        (&from_idx.train, &from_png.train),
        (&from_idx.test, &from_png.test),
    ] {
        let mut order: Vec<usize> = (0..a.len()).collect();
        order.sort_by_key(|&i| a.labels[i]); // stable: file order within a label
        let expect: Vec<u8> = order
            .iter()
            .flat_map(|&i| a.images[i * 784..(i + 1) * 784].to_vec())
            .collect();
        assert_eq!(b.images, expect);
        let mut labels = a.labels.clone();
        labels.sort();
        assert_eq!(b.labels, labels);
    }

    // And a spec can train on it.
    let s = spec(
        dir.path(),
        "png.toml",
        &format!(
            "[data]\ndir = \"{}\"\nformat = \"png\"\n[model]\nsizes = [784, 16, 10]\n[train]\nbatch_size = 20\nepochs = 1\n",
            png.display()
        ),
    );
    let db = dir.path().join("png.db");
    runner(
        dir.path(),
        &[s.to_str().unwrap(), "--db", db.to_str().unwrap()],
    )
    .ok();
    assert_eq!(
        query(&db, "SELECT status, data_format FROM runs"),
        vec![vec!["completed", "png"]]
    );
}
