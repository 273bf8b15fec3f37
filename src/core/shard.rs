//! Splitting a sweep across machines: a run belongs to shard `hash(config) mod N`, so every machine
//! computes the same partition, whatever it runs on. The shard comes from `--shard I/N` or from the
//! scheduler's environment (a Slurm job array, a Kubernetes Indexed Job).

/// A shard given by a scheduler: the shard, where it was read, and the scheduler task this process runs
/// as (a retried task of the same shard of the same job takes over its own runs at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub shard: Shard,
    pub from: String,
    pub task: Option<String>,
}

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parse `I/N` with 0 <= I < N.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 0/4"))?;
        let index: u64 = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: I must be a number"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: N must be a number"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "`{s}`: need 0 <= I < N (shards are numbered from 0)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard a cluster scheduler assigned through the environment, where it was read, and the task
    /// identity of this process (see [`crate::store::owner`]).
    ///
    /// The shard count is stated once, in `MLP_RUNNER_SHARD_COUNT`, never taken from what part of an array
    /// is running: a re-submitted task (`sbatch --array=2`) or a stepped array keeps its shard.
    /// - Slurm job arrays: shard `(SLURM_ARRAY_TASK_ID - MLP_RUNNER_SHARD_FIRST) / MLP_RUNNER_SHARD_STEP`
    ///   (defaults 0 and 1: `--array=0-(N-1)`; `--array=10-16:2` sets them to 10 and 2). The task is
    ///   `slurm:<SLURM_ARRAY_JOB_ID>:<I>/<N>`.
    /// - Kubernetes Indexed Jobs: shard `JOB_COMPLETION_INDEX`. The task is `k8s:<MLP_RUNNER_JOB_ID>:<I>/<N>`
    ///   when the Job passes its uid as `MLP_RUNNER_JOB_ID`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> crate::Result<Option<Assignment>> {
        Self::from_env_text(get).map_err(crate::Error::Usage)
    }

    fn from_env_text(
        get: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Option<Assignment>, String> {
        let num = |k: &str| -> std::result::Result<Option<u64>, String> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| format!("{k}={v:?} is not a number"))
                })
                .transpose()
        };
        let count = || {
            num("MLP_RUNNER_SHARD_COUNT")?.ok_or_else(|| {
                "MLP_RUNNER_SHARD_COUNT is not set: state the number of shards once (the size of the whole \
                 array or Job), so that a re-submitted task keeps its shard (see examples/slurm/sweep.sbatch)"
                    .to_string()
            })
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = count()?;
            let first = num("MLP_RUNNER_SHARD_FIRST")?.unwrap_or(0);
            let step = num("MLP_RUNNER_SHARD_STEP")?.unwrap_or(1).max(1);
            let offset = id.checked_sub(first).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID={id} is below MLP_RUNNER_SHARD_FIRST={first}")
            })?;
            if offset % step != 0 {
                return Err(format!(
                    "SLURM_ARRAY_TASK_ID={id} is not MLP_RUNNER_SHARD_FIRST={first} plus a multiple of \
                     MLP_RUNNER_SHARD_STEP={step}"
                ));
            }
            let shard = Shard::parse(&format!("{}/{count}", offset / step)).map_err(|e| {
                format!("SLURM_ARRAY_TASK_ID={id} (first {first}, step {step}) gives shard {e}")
            })?;
            let job = get("SLURM_ARRAY_JOB_ID").unwrap_or_else(|| "?".into());
            return Ok(Some(Assignment {
                shard,
                from: format!(
                    "SLURM_ARRAY_TASK_ID={id}, MLP_RUNNER_SHARD_FIRST={first}, MLP_RUNNER_SHARD_STEP={step}, \
                     MLP_RUNNER_SHARD_COUNT={count}"
                ),
                task: Some(format!("slurm:{}:{}/{count}", job.trim(), shard.index)),
            }));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = count()?;
            let shard = Shard::parse(&format!("{index}/{count}"))
                .map_err(|e| format!("JOB_COMPLETION_INDEX={index} gives shard {e}"))?;
            return Ok(Some(Assignment {
                shard,
                from: format!("JOB_COMPLETION_INDEX={index}, MLP_RUNNER_SHARD_COUNT={count}"),
                task: get("MLP_RUNNER_JOB_ID").map(|j| format!("k8s:{}:{index}/{count}", j.trim())),
            }));
        }
        Ok(None)
    }

    /// Does the run with this config hash belong to this shard? (First 64 bits of the hash, mod N.)
    pub fn contains(&self, config_hash: &str) -> bool {
        let prefix = config_hash.get(..16).unwrap_or("0");
        u64::from_str_radix(prefix, 16).unwrap_or(0) % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!(Shard::parse("1/3"), Ok(Shard { index: 1, count: 3 }));
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("x").is_err());
        use sha2::Digest;
        let hashes: Vec<String> = (0..300i32)
            .map(|i| crate::text::hex(&sha2::Sha256::digest(i.to_le_bytes())))
            .collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for h in &hashes {
            assert_eq!(shards.iter().filter(|s| s.contains(h)).count(), 1);
        }
        assert!(
            shards
                .iter()
                .all(|s| hashes.iter().filter(|h| s.contains(h)).count() > 50)
        );
    }

    #[test]
    fn shards_come_from_the_scheduler_environment_with_the_count_stated_once() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let shard = |pairs| Shard::from_env(env(pairs)).unwrap().unwrap();
        // The whole array, and one task of it re-submitted alone: the same shard.
        let whole = shard(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_JOB_ID", "41"),
            ("MLP_RUNNER_SHARD_COUNT", "3"),
        ]);
        let again = shard(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
            ("SLURM_ARRAY_JOB_ID", "57"),
            ("MLP_RUNNER_SHARD_COUNT", "3"),
        ]);
        assert_eq!(whole.shard, Shard { index: 2, count: 3 });
        assert_eq!(again.shard, whole.shard);
        assert_eq!(whole.task.as_deref(), Some("slurm:41:2/3"));
        // A stepped array: --array=10-16:2 is shards 0 to 3.
        for (id, index) in [("10", 0), ("12", 1), ("14", 2), ("16", 3)] {
            let a = Shard::from_env(move |k: &str| match k {
                "SLURM_ARRAY_TASK_ID" => Some(id.to_string()),
                "MLP_RUNNER_SHARD_COUNT" => Some("4".into()),
                "MLP_RUNNER_SHARD_FIRST" => Some("10".into()),
                "MLP_RUNNER_SHARD_STEP" => Some("2".into()),
                _ => None,
            });
            assert_eq!(a.unwrap().unwrap().shard, Shard { index, count: 4 });
        }
        // Without the count stated, or outside it: an error that says what to set.
        let e = Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("MLP_RUNNER_SHARD_COUNT is not set"), "{e}");
        assert!(
            Shard::from_env(env(&[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("MLP_RUNNER_SHARD_COUNT", "3")
            ]))
            .is_err()
        );
        let k8s = shard(&[
            ("JOB_COMPLETION_INDEX", "0"),
            ("MLP_RUNNER_SHARD_COUNT", "2"),
            ("MLP_RUNNER_JOB_ID", "uid-1"),
        ]);
        assert_eq!(k8s.shard, Shard { index: 0, count: 2 });
        assert_eq!(k8s.task.as_deref(), Some("k8s:uid-1:0/2"));
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
        assert!(matches!(Shard::from_env(env(&[])), Ok(None)));
    }
}
