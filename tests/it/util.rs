//! Helpers: run the binary, write specs and data fixtures, read the SQLite file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "runner failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Run `runner args...` with `cwd` as working directory.
pub fn runner(cwd: &Path, args: &[&str]) -> Out {
    runner_env(cwd, args, &[])
}

/// [`runner`] with extra environment variables.
pub fn runner_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("the runner binary starts");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The MNIST copy shipped with the repository.
pub fn mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// Write a spec; `{MNIST}` in `body` becomes the shipped data folder.
pub fn spec(dir: &Path, file: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(
        &path,
        body.replace("{MNIST}", &mnist().display().to_string()),
    )
    .unwrap();
    path
}

/// All rows of a query, each column rendered as text (NULL as "NULL").
pub fn query(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "NULL".to_string(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    // Exact bits, so that comparisons are bit for bit.
                    rusqlite::types::ValueRef::Real(v) => format!("{:#018x}", v.to_bits()),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => hex(&Sha256::digest(b)),
                })
                .collect())
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// [`scalar`], or `None` while the store cannot answer it yet (a sweep creating it meanwhile), read
/// through a read-only connection.
pub fn try_scalar(db: &Path, sql: &str) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
        .ok()
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
}

pub fn scalar(db: &Path, sql: &str) -> String {
    query(db, sql).remove(0).remove(0)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a file's bytes, or None if it does not exist.
pub fn file_sha(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| hex(&Sha256::digest(b)))
}

/// Decompressed bytes of one of the shipped IDX files.
pub fn mnist_idx(name: &str) -> Vec<u8> {
    let gz = std::fs::read(mnist().join(format!("{name}.gz"))).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Raw IDX bytes with the first `n` samples of a shipped file (header count rewritten).
pub fn idx_prefix(name: &str, n: usize) -> Vec<u8> {
    let full = mnist_idx(name);
    let (header, item) = if name.contains("images") {
        (16, 784)
    } else {
        (8, 1)
    };
    let mut v = full[..header + n * item].to_vec();
    v[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    v
}

/// A data folder of raw IDX files holding the first `n_train` / `n_test` real samples.
pub fn small_idx_dir(dir: &Path, n_train: usize, n_test: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [
        ("train-images-idx3-ubyte", n_train),
        ("train-labels-idx1-ubyte", n_train),
        ("t10k-images-idx3-ubyte", n_test),
        ("t10k-labels-idx1-ubyte", n_test),
    ] {
        std::fs::write(dir.join(name), idx_prefix(name, n)).unwrap();
    }
    dir.to_path_buf()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Make a run whose epoch rows were edited consistent again, as a store that computed other values would
/// hold it: its summary columns from its last epoch, and its `metrics_sha256` as the README defines it
/// (SHA-256 over its epoch rows in order: the epoch as i64, then each of the six metrics as a 1 byte and
/// its f64 bits, or a 0 byte for NULL, all little-endian; then, for a row with validation metrics, a 3
/// byte and `val_loss`, `val_acc` the same way).
pub fn rehash_metrics(db: &Path, run_id: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE runs SET (train_loss, train_acc, test_loss, test_acc) = (SELECT train_loss, train_acc,
            test_loss, test_acc FROM epochs WHERE run_id = ?1 ORDER BY epoch DESC LIMIT 1) WHERE id = ?1",
        [run_id],
    )
    .unwrap();
    let mut h = Sha256::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds, val_loss,
                    val_acc, learning_rate FROM epochs WHERE run_id = ?1 ORDER BY epoch",
            )
            .unwrap();
        let mut rows = stmt.query([run_id]).unwrap();
        let value = |h: &mut Sha256, v: Option<f64>| match v {
            Some(v) => {
                h.update([1u8]);
                h.update(v.to_bits().to_le_bytes());
            }
            None => h.update([0u8]),
        };
        while let Some(r) = rows.next().unwrap() {
            h.update(r.get::<_, i64>(0).unwrap().to_le_bytes());
            for i in 1..7 {
                value(&mut h, r.get::<_, Option<f64>>(i).unwrap());
            }
            let val: [Option<f64>; 2] = [r.get(7).unwrap(), r.get(8).unwrap()];
            if val != [None, None] {
                h.update([3u8]);
                for v in val {
                    value(&mut h, v);
                }
            }
            // The epoch's learning rate (schema 6), when stored.
            if let Some(lr) = r.get::<_, Option<f64>>(9).unwrap() {
                h.update([5u8]);
                h.update(lr.to_bits().to_le_bytes());
            }
        }
    }
    conn.execute(
        "UPDATE runs SET metrics_sha256 = ?2 WHERE id = ?1",
        rusqlite::params![run_id, hex(&h.finalize())],
    )
    .unwrap();
    rehash_result(db, run_id);
}

/// The result fingerprint of a finished run, computed as the README states it (independently of the
/// tool's code): SHA-256 over `mlp-runner-result-1`, the config hash, the dataset hash, the status and
/// the initial weights' hash (each as its byte length, u64 little-endian, then its bytes), then per
/// epoch row its number (4, i64) and six metrics (1 and f64 bits, or 0 for NULL), then the final
/// weights' hash.
pub fn result_fingerprint(db: &Path, run_id: i64) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let head: [Option<String>; 5] = conn
        .query_row(
            "SELECT config_hash, dataset_sha256, status, init_weights_sha256, weights_sha256
             FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]),
        )
        .unwrap();
    let mut h = Sha256::new();
    for part in ["mlp-runner-result-1"]
        .into_iter()
        .chain(head[..4].iter().map(|p| p.as_deref().unwrap_or("")))
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let mut stmt = conn
        .prepare(
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc, val_loss, val_acc FROM epochs
             WHERE run_id = ?1 ORDER BY epoch",
        )
        .unwrap();
    let mut rows = stmt.query([run_id]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        h.update([4u8]);
        h.update(r.get::<_, i64>(0).unwrap().to_le_bytes());
        for i in 1..7 {
            match r.get::<_, Option<f64>>(i).unwrap() {
                Some(v) => {
                    h.update([1u8]);
                    h.update(v.to_bits().to_le_bytes());
                }
                None => h.update([0u8]),
            }
        }
    }
    h.update(head[4].as_deref().unwrap_or("").as_bytes());
    hex(&h.finalize())
}

/// Make a finished run's stored result fingerprint agree with its (edited) rows.
pub fn rehash_result(db: &Path, run_id: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let finished: bool = conn
        .query_row(
            "SELECT weights_sha256 IS NOT NULL FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .unwrap_or(false);
    if finished {
        conn.execute(
            "UPDATE runs SET result_sha256 = ?2 WHERE id = ?1",
            rusqlite::params![run_id, result_fingerprint(db, run_id)],
        )
        .unwrap();
    }
}

/// Wait until the store holds `n` epochs (polling a second connection, as another process would).
pub fn wait_for_epochs(db: &Path, n: usize) {
    let start = Instant::now();
    loop {
        // Only open an existing file: opening would create it.
        if db.exists()
            && let Ok(conn) = rusqlite::Connection::open(db)
            && conn
                .query_row("SELECT count(*) FROM epochs", [], |r| r.get::<_, i64>(0))
                .is_ok_and(|g| g as usize >= n)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no epoch {n} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Start `runner SPEC --db DB` with `env`, wait until its first epoch is stored (the test hook then
/// pauses it) and kill it with SIGKILL: no handler runs.
pub fn kill_after_epoch_1(d: &Path, spec: &str, db: &Path, env: &[(&str, &str)]) {
    kill_after_epoch_1_of(d, &[spec, "--db", db.to_str().unwrap()], db, env);
}

/// [`kill_after_epoch_1`] of `runner args...` (which must train into `db`).
pub fn kill_after_epoch_1_of(d: &Path, args: &[&str], db: &Path, env: &[(&str, &str)]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(d)
        .envs(env.iter().copied())
        .env("MLP_RUNNER_PAUSE_AFTER_EPOCH_MS", "20000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_epochs(db, 1);
    child.kill().unwrap();
    child.wait().unwrap();
}
