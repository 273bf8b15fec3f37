//! Splitting a sweep across machines: a run belongs to shard `hash(config) mod N`, so every machine
//! computes the same partition, whatever it runs on. The shard comes from `--shard I/N` or from the
//! scheduler's environment (a Slurm job array, a Kubernetes Indexed Job).

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

    /// The shard a cluster scheduler assigned through the environment, and where it was read:
    /// Slurm job arrays (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`) or
    /// Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`, of `MLP_RUNNER_SHARD_COUNT`).
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> crate::Result<Option<(Shard, String)>> {
        Self::from_env_text(get).map_err(crate::Error::Usage)
    }

    fn from_env_text(
        get: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Option<(Shard, String)>, String> {
        let num = |k: &str| -> std::result::Result<Option<u64>, String> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| format!("{k}={v} is not a number"))
                })
                .transpose()
        };
        if let (Some(id), Some(count)) =
            (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?)
        {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id
                .checked_sub(min)
                .ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
            let shard = Shard::parse(&format!("{index}/{count}"))?;
            let from = format!(
                "SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_COUNT={count}"
            );
            return Ok(Some((shard, from)));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = num("MLP_RUNNER_SHARD_COUNT")?.ok_or(
                "JOB_COMPLETION_INDEX is set but MLP_RUNNER_SHARD_COUNT is not: set it to the Job's completions",
            )?;
            let shard = Shard::parse(&format!("{index}/{count}"))?;
            return Ok(Some((
                shard,
                format!("JOB_COMPLETION_INDEX={index}, MLP_RUNNER_SHARD_COUNT={count}"),
            )));
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
    fn shards_come_from_the_scheduler_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let slurm = Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]));
        assert_eq!(slurm.unwrap().unwrap().0, Shard { index: 2, count: 4 });
        let k8s = Shard::from_env(env(&[
            ("JOB_COMPLETION_INDEX", "0"),
            ("MLP_RUNNER_SHARD_COUNT", "2"),
        ]));
        assert_eq!(k8s.unwrap().unwrap().0, Shard { index: 0, count: 2 });
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
        assert!(matches!(Shard::from_env(env(&[])), Ok(None)));
    }
}
