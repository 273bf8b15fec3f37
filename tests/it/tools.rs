//! The tools around a stored sweep: compare, export to safetensors, predict.

use std::path::Path;

use safetensors::SafeTensors;

use crate::util::{mnist_idx, query, runner, spec, tmp};

const SPEC: &str = "name = \"tools\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 10000\nlimit_test = 1000\n\
                    [model]\nsizes = [784, 64, 10]\n[train]\nbatch_size = 20\nepochs = 2\n[sweep]\n\
                    \"train.learning_rate\" = [0.3, 0.01]\n\"train.seed\" = [1, 2]\n";

fn trained(dir: &Path) -> std::path::PathBuf {
    let s = spec(dir, "tools.toml", SPEC);
    let db = dir.join("t.db");
    runner(dir, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]).ok();
    db
}

#[test]
fn compare_groups_seeds_and_marks_the_best() {
    let dir = tmp();
    let db = trained(dir.path());
    let out = runner(
        dir.path(),
        &["compare", "--db", db.to_str().unwrap(), "--json"],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["best"], true);
    assert_eq!(rows[1]["best"], false);
    assert_eq!(rows[0]["learning_rate"], 0.3);
    assert_eq!(rows[0]["runs"], 2);
    // The mean is the mean of the two seeds' stored accuracies.
    let accs = query(&db, "SELECT test_acc FROM runs WHERE learning_rate = 0.3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mean: f64 = conn
        .query_row(
            "SELECT avg(test_acc) FROM runs WHERE learning_rate = 0.3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(accs.len(), 2);
    assert!((rows[0]["mean_test_acc"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(rows[0]["std_test_acc"].as_f64().unwrap() >= 0.0);
    // The 95% interval of the mean with two seeds: mean +- t(0.975, 1) * std / sqrt(2), t = 12.7062...
    let (m, sd) = (
        rows[0]["mean_test_acc"].as_f64().unwrap(),
        rows[0]["std_test_acc"].as_f64().unwrap(),
    );
    let half = 12.706204736174694 * sd / 2f64.sqrt();
    assert!((rows[0]["ci95_low"].as_f64().unwrap() - (m - half)).abs() < 1e-9);
    assert!((rows[0]["ci95_high"].as_f64().unwrap() - (m + half)).abs() < 1e-9);
    let text = runner(
        dir.path(),
        &["compare", "tools", "--db", db.to_str().unwrap()],
    );
    assert!(text.ok().stdout.starts_with("experiment tools:"));
    // Against a baseline, paired over the two seeds: the difference is the mean of the paired differences.
    let out = runner(
        dir.path(),
        &[
            "compare",
            "--baseline",
            "learning_rate=0.01",
            "--json",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.ok().stdout).unwrap();
    let lr03 = rows.iter().find(|r| r["learning_rate"] == 0.3).unwrap();
    let base = rows.iter().find(|r| r["learning_rate"] == 0.01).unwrap();
    assert_eq!(base["verdict"], "baseline");
    assert_eq!(
        (lr03["test"].as_str(), lr03["seeds"].as_i64()),
        (Some("paired"), Some(2))
    );
    let pairs = query(
        &db,
        "SELECT a.test_acc, b.test_acc FROM runs a JOIN runs b ON a.seed = b.seed
         WHERE a.learning_rate = 0.3 AND b.learning_rate = 0.01",
    );
    assert_eq!(pairs.len(), 2);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let diff: f64 = conn
        .query_row(
            "SELECT avg(a.test_acc - b.test_acc) FROM runs a JOIN runs b ON a.seed = b.seed
             WHERE a.learning_rate = 0.3 AND b.learning_rate = 0.01",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((lr03["diff_points"].as_f64().unwrap() - 100.0 * diff).abs() < 1e-9);
    let verdict = lr03["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("2 paired seeds") && verdict.contains("95% CI ["),
        "{verdict}"
    );
    let bad = runner(
        dir.path(),
        &[
            "compare",
            "--baseline",
            "learning_rate=7",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("learning_rate=0.01; learning_rate=0.3"),
        "{}",
        bad.stderr
    );
    let typo = runner(
        dir.path(),
        &["compare", "tool", "--db", db.to_str().unwrap()],
    );
    assert!(
        typo.stderr.contains("did you mean `tools`?"),
        "{}",
        typo.stderr
    );
}

#[test]
fn export_writes_safetensors_equal_to_the_stored_weights() {
    let dir = tmp();
    let db = trained(dir.path());
    // Initial weights are kept as their hash only, and drawn again for an export: they must equal, bit for
    // bit, those of the same sweep trained with `[store] initial_weights = true`.
    let kept = spec(
        dir.path(),
        "kept.toml",
        &format!("{SPEC}[store]\ninitial_weights = true\n"),
    );
    let kept_db = dir.path().join("kept.db");
    runner(
        dir.path(),
        &[kept.to_str().unwrap(), "--db", kept_db.to_str().unwrap()],
    )
    .ok();
    assert_eq!(
        query(&db, "SELECT count(*) FROM weights WHERE kind = 'initial'"),
        [["0"]]
    );
    assert_eq!(
        query(&db, "SELECT init_weights_sha256 FROM runs ORDER BY id"),
        query(&kept_db, "SELECT init_weights_sha256 FROM runs ORDER BY id")
    );
    for kind in ["final", "initial"] {
        let file = dir.path().join(format!("{kind}.safetensors"));
        runner(
            dir.path(),
            &[
                "export",
                "1",
                "--weights",
                kind,
                "-o",
                file.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ],
        )
        .ok();
        let bytes = std::fs::read(&file).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["sizes"], "[784,64,10]");
        assert_eq!(meta["activation"], "relu");
        assert_eq!(meta["weights"], kind);
        let conn = rusqlite::Connection::open(&kept_db).unwrap();
        let mut stmt = conn
            .prepare("SELECT layer, param, data FROM weights WHERE run_id = 1 AND kind = ?1")
            .unwrap();
        let stored: Vec<(i64, String, Vec<u8>)> = stmt
            .query_map([kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(stored.len(), 4);
        assert_eq!(st.len(), 4);
        for (layer, param, data) in stored {
            let t = st.tensor(&format!("layer{layer}.{param}")).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            assert_eq!(t.data(), &data[..], "layer{layer}.{param}");
        }
        assert_eq!(st.tensor("layer1.weight").unwrap().shape(), &[64, 784]);
    }
}

/// Write a grayscale PNG.
fn png(path: &Path, w: u32, h: u32, pixels: Vec<u8>) {
    image::GrayImage::from_raw(w, h, pixels)
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
fn predict_classifies_real_digits_at_any_size_and_polarity() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d);
    let images = mnist_idx("t10k-images-idx3-ubyte");
    let labels = mnist_idx("t10k-labels-idx1-ubyte");
    let mut args = vec![
        "predict".to_string(),
        "1".into(),
        "--json".into(),
        "--db".into(),
        db.display().to_string(),
    ];
    for i in 0..20 {
        let px = images[16 + i * 784..16 + (i + 1) * 784].to_vec();
        let plain = d.join(format!("{i}.png"));
        png(&plain, 28, 28, px.clone());
        // Five times larger, dark digit on white, off centre: as a photo or drawing might be.
        let (w, h) = (28 * 5 + 60, 28 * 5 + 20);
        let mut big = vec![255u8; (w * h) as usize];
        for y in 0..140 {
            for x in 0..140 {
                big[((y + 5) * w + x + 50) as usize] = 255 - px[(y / 5 * 28 + x / 5) as usize];
            }
        }
        let large = d.join(format!("{i}-large.png"));
        png(&large, w, h, big);
        args.push(plain.display().to_string());
        args.push(large.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = runner(d, &args);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(rows.len(), 40);
    let class = |i: usize| rows[i]["class"].as_i64().unwrap();
    let correct = (0..20)
        .filter(|&i| class(2 * i) == labels[8 + i] as i64)
        .count();
    let large_correct = (0..20)
        .filter(|&i| class(2 * i + 1) == labels[8 + i] as i64)
        .count();
    assert!(correct >= 18, "{correct}/20 of the plain test images right");
    assert!(
        large_correct >= 17,
        "{large_correct}/20 of the large inverted images right"
    );
    assert!(
        rows.iter()
            .all(|r| (0.0..=1.0).contains(&r["probability"].as_f64().unwrap()))
    );

    let top3 = runner(
        d,
        &[
            "predict",
            "1",
            "--top",
            "3",
            "--db",
            db.to_str().unwrap(),
            args[5],
        ],
    );
    assert_eq!(top3.ok().stdout.lines().count(), 2 + 3);
    let bad = runner(
        d,
        &[
            "predict",
            "1",
            "--db",
            db.to_str().unwrap(),
            db.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stdout.contains("not a readable PNG"), "{}", bad.stdout);

    // Dark ink on a transparent background, as drawing programs export it: the transparent pixels are
    // black with alpha 0, so ignoring alpha would make the whole image black. Ten digits, as RGBA.
    let mut rgba_args = vec!["predict", "1", "--json", "--db", db.to_str().unwrap()];
    let mut paths = Vec::new();
    for i in 0..10 {
        let px = &images[16 + i * 784..16 + (i + 1) * 784];
        let rgba = image::RgbaImage::from_fn(28, 28, |x, y| {
            image::Rgba([0, 0, 0, px[(y * 28 + x) as usize]])
        });
        let path = d.join(format!("{i}-transparent.png"));
        rgba.save(&path).unwrap();
        paths.push(path.display().to_string());
    }
    rgba_args.extend(paths.iter().map(String::as_str));
    let out = runner(d, &rgba_args);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.ok().stdout).unwrap();
    let right = (0..10)
        .filter(|&i| rows[i]["class"].as_i64() == Some(labels[8 + i] as i64))
        .count();
    assert!(right >= 9, "{right}/10 transparent-background digits right");
    // A blank image holds no digit: said so, not answered with a made-up class.
    let blank = d.join("blank.png");
    image::GrayImage::from_pixel(40, 40, image::Luma([255]))
        .save(&blank)
        .unwrap();
    let out = runner(
        d,
        &[
            "predict",
            "1",
            "--db",
            db.to_str().unwrap(),
            blank.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("no digit found in"), "{}", out.stdout);
    // With good images beside it, they get their answers and the blank one its own row; the exit code
    // says that one failed.
    let seven = mlp_runner_root().join("data/examples/seven.png");
    let out = runner(
        d,
        &[
            "predict",
            "1",
            "--json",
            "--db",
            db.to_str().unwrap(),
            seven.to_str().unwrap(),
            blank.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["class"], 7, "{rows:?}");
    assert!(rows[0]["note"].as_str().unwrap().is_empty());
    assert!(rows[1]["class"].is_null());
    assert!(rows[1]["note"].as_str().unwrap().contains("no digit found"));
}

fn mlp_runner_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_terminal_gets_progress_bars_and_a_pipe_gets_lines() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "p.toml", &SPEC.replace("[0.3, 0.01]", "[0.3]"));
    let db = d.join("p.db");
    // Through a pipe: one plain line per epoch, and a summary with the swept parameter as a column.
    let out = runner(d, &[s.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    let stdout = &out.ok().stdout;
    assert_eq!(stdout.matches(" epoch ").count(), 4, "{stdout}");
    assert!(!stdout.contains("samples/s"));
    assert!(
        stdout.contains("run_id  learning_rate  seed  status"),
        "{stdout}"
    );

    // In a terminal (a pseudo-terminal made by util-linux `script`): bars with the running loss and speed.
    // A pause after each stored epoch (the test hook) keeps the bars on screen for a redraw once steps
    // were timed, however fast the epochs train.
    let db2 = d.join("p2.db");
    let cmd = format!(
        "stty cols 80 rows 24; MLP_RUNNER_PAUSE_AFTER_EPOCH_MS=600 {} {} --db {}",
        env!("CARGO_BIN_EXE_runner"),
        s.display(),
        db2.display()
    );
    let log = d.join("tty.log");
    let status = std::process::Command::new("script")
        .args(["-qec", &cmd, log.to_str().unwrap()])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("util-linux `script` is installed (Debian's bsdutils)");
    assert!(status.success());
    let tty = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    for needle in ["loss ", "runs done", "epoch 2/2", "ETA"] {
        assert!(
            tty.contains(needle),
            "no {needle:?} in the terminal output:\n{tty}"
        );
    }
    // Every bar fits the terminal's 80 columns (the per-run message is cut to fit), and the sweep's
    // ETA appears once steps were timed.
    let plain: String = {
        let mut out = String::new();
        let mut chars = tty.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // An escape sequence: ESC [ parameters final-byte; colours vanish, others break a line.
                let mut seq = String::new();
                for n in chars.by_ref() {
                    seq.push(n);
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
                if !seq.ends_with('m') {
                    out.push('\n');
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut bars = 0;
    let mut estimates = 0;
    for piece in plain.split(['\r', '\n']) {
        // Lines are padded to the terminal's width, so one line's end runs into the next's start.
        let mut starts: Vec<(usize, &str)> = ["sweep [", "run 1 [", "run 2 ["]
            .iter()
            .flat_map(|s| piece.match_indices(*s))
            .collect();
        starts.sort();
        for (i, &(at, start)) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(piece.len(), |n| n.0);
            {
                let bar = piece[at..end].trim_end();
                bars += 1;
                assert!(
                    bar.chars().count() <= 80,
                    "{} columns: {bar}",
                    bar.chars().count()
                );
                // Before any step is timed the sweep shows no estimate, never a false "0s".
                if start == "sweep [" && bar.contains("]   0%") {
                    assert!(!bar.contains("ETA   0s"), "{bar}");
                }
                if start == "sweep [" && !bar.contains("ETA  ...") {
                    estimates += 1;
                }
            }
        }
    }
    assert!(
        bars > 0 && estimates > 0,
        "{bars} bars, {estimates} estimates:\n{plain}"
    );
    assert_eq!(
        query(&db2, "SELECT count(*) FROM runs WHERE status = 'completed'"),
        vec![vec!["2"]]
    );
}

#[test]
fn plot_writes_learning_curves_and_the_lr_sweep_as_png_and_svg() {
    let dir = tmp();
    let d = dir.path();
    let db = trained(d);
    let dbs = db.to_str().unwrap();
    let png = d.join("curves.png");
    let out = runner(
        d,
        &[
            "plot",
            "--experiment",
            "tools",
            "-o",
            png.to_str().unwrap(),
            "--db",
            dbs,
        ],
    );
    assert!(out.ok().stdout.contains("(4 runs)"), "{}", out.stdout);
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1200, 500));
    let colored = img
        .pixels()
        .filter(|p| !(p[0] == p[1] && p[1] == p[2]))
        .count();
    assert!(
        colored > 2000,
        "the curves are drawn in colour ({colored} coloured pixels)"
    );

    let svg = d.join("lr.svg");
    runner(
        d,
        &["plot", "--lr", "-o", svg.to_str().unwrap(), "--db", dbs],
    )
    .ok();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100]);
    for needle in [
        "learning rate (log scale)",
        "seed 1",
        "seed 2",
        "mean over seeds",
        "tools: final test accuracy",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the SVG");
    }
    assert_eq!(
        text.matches("<circle").count(),
        4 + 2,
        "a point per run, and one per seed in the legend"
    );

    runner(
        d,
        &[
            "plot",
            "1",
            "2",
            "-o",
            d.join("two.svg").to_str().unwrap(),
            "--db",
            dbs,
        ],
    )
    .ok();
    let bad = runner(
        d,
        &[
            "plot",
            "1",
            "-o",
            d.join("x.jpg").to_str().unwrap(),
            "--db",
            dbs,
        ],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("must end in .png or .svg"),
        "{}",
        bad.stderr
    );
}
