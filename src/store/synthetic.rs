//! A synthetic store for benchmarks (`runner bench --ui`): many completed runs written straight into a new
//! store, as fast as SQLite takes them, with no training and no weights. Benchmark code only; a store made
//! so holds made-up results (its runs carry no hashes and do not verify).

use std::path::Path;

use rusqlite::params;

use super::Store;
use crate::core::config::RunConfig;
use crate::error::{Error, Result};

/// Fill a new store at `path` with `runs` completed runs of `epochs` epochs each (no weights), in 100-run
/// experiments, as fast as SQLite takes them: a store of the size a long-lived project reaches.
pub fn fill(path: &Path, runs: usize, epochs: usize) -> Result<()> {
    Store::open(path)?.close()?;
    let mut conn = rusqlite::Connection::open(path).map_err(|e| Error::from(e).on_file(path))?;
    let tx = conn.transaction()?;
    let mut experiment = 0;
    for i in 0..runs {
        if i % 100 == 0 {
            tx.execute(
                "INSERT INTO experiments (name, description, spec_path, spec_toml, created_at, invocation,
                    metric)
                 VALUES (?1, 'synthetic', 'synthetic.toml', '', '2026-01-01T00:00:00Z', ?2, 'test_acc')",
                params![format!("synthetic-{}", i / 100), format!("bench:{i}")],
            )?;
            experiment = tx.last_insert_rowid();
        }
        let mut c = RunConfig::default();
        c.train.seed = (i % 5) as u64;
        c.train.learning_rate = [1.0, 0.3, 0.1, 0.03, 0.01][(i / 5) % 5];
        c.train.batch_size = [10, 32, 100, 128][(i / 25) % 4];
        c.train.epochs = epochs;
        let acc = 0.9 + 0.09 * ((i * 7919) % 1000) as f64 / 1000.0;
        tx.execute(
            "INSERT INTO runs (experiment_id, name, status, seed, sizes, activation, init, dtype, batch_size,
                learning_rate, epochs, drop_last, data_dir, data_format, overrides, config_toml, config_hash,
                seed_group, created_at, epochs_done, train_loss, train_acc, test_loss, test_acc, seconds,
                finished_at)
             VALUES (?1, ?2, 'completed', ?3, '[784,512,10]', 'relu', 'he', 'f32', ?4, ?5, ?6, 1, 'data/mnist',
                'auto', ?7, ?8, ?9, ?10, '2026-01-01T00:00:00Z', ?6, ?11, ?12, ?11, ?12, ?13,
                '2026-01-01T00:00:00Z')",
            params![
                experiment,
                format!("synthetic-{}/run={i}", i / 100),
                c.train.seed as i64,
                c.train.batch_size as i64,
                c.train.learning_rate,
                epochs as i64,
                serde_json::json!({ "train.seed": c.train.seed, "train.learning_rate": c.train.learning_rate,
                    "train.batch_size": c.train.batch_size }).to_string(),
                format!("[train]\nseed = {}\nepochs = {epochs}\n", c.train.seed),
                format!("{i:064x}"),
                c.seed_group(),
                1.0 - acc,
                acc,
                epochs as f64 * 1.5,
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO members (experiment, run_id, name, overrides, added_at)
             SELECT e.name, r.id, r.name, r.overrides, r.created_at FROM runs r
             JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?1",
            [id],
        )?;
        let mut ep = tx.prepare_cached(
            "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds)
             VALUES (?1, ?2, ?3, ?4, ?3, ?4, 1.5, 1.0)",
        )?;
        for e in 1..=epochs {
            let a = acc * (1.0 - 0.5 / (e as f64 + 1.0));
            ep.execute(params![id, e as i64, 1.0 - a, a])?;
        }
        // A test confusion matrix of 10 000 samples at about that accuracy, and its misclassified samples.
        let mut cell = tx.prepare_cached(
            "INSERT INTO confusion (run_id, split, actual, predicted, count) VALUES (?1, 'test', ?2, ?3, ?4)",
        )?;
        let mut miss = tx.prepare_cached(
            "INSERT INTO misclassified (run_id, sample, actual, predicted, confidence) VALUES (?1, ?2, ?3, ?4, 0.9)",
        )?;
        let wrong = ((1.0 - acc) * 1000.0) as i64;
        for k in 0..10i64 {
            let other = (k + 1 + (i as i64 % 9)) % 10;
            cell.execute(params![id, k, k, 1000 - wrong])?;
            cell.execute(params![id, k, other, wrong])?;
            for j in 0..wrong {
                miss.execute(params![id, k * 1000 + j, k, other])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
