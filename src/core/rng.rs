//! Seeded random streams: one ChaCha20 stream per purpose, and the few samplers the pipeline needs.
//!
//! A run's randomness is a pure function of its `train.seed`. Each consumer gets its own ChaCha20 stream
//! (same key, different stream id), so adding a consumer or changing the architecture never shifts the bits
//! another consumer sees: the data order does not depend on how many weights the init drew.
//!
//! The samplers are written here rather than taken from `rand`/`rand_distr` so that their output is fixed by
//! this crate's version alone: a dependency upgrade cannot silently change which numbers a seed produces.

use crate::core::math::Math;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

/// The purposes that draw random numbers. The discriminant is the ChaCha stream id; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Weight and bias initialisation.
    Init = 1,
    /// The per-epoch permutation of the training set.
    Shuffle = 2,
    /// Sampling the points of a random sweep (seeded by the spec, not by a run).
    Sweep = 3,
    /// Sampling the candidates of Hyperband's brackets: one stream per bracket (see
    /// [`StreamRng::bracket`]), so that a bracket's draws do not depend on the others'.
    Brackets = 4,
    /// Dropout masks: one stream per hidden layer and a stretch of it per step (see
    /// [`dropout_bits`]), so a mask depends on (seed, step, layer) alone.
    Dropout = 5,
}

/// The random bits of the dropout masks of hidden layer `layer` (1-based) at 0-based global step `step`,
/// one u32 per unit, into `out`: ChaCha8 (the masks need many draws a step, and 8 rounds are plenty
/// for dropout) keyed by the seed as the other streams, stream id `Dropout << 32 | layer`, from word
/// `step * 2^36` (room for 2^36 draws a step, more than any batch of any layer the config limits allow),
/// read as little-endian words. A mask depends on (seed, step, layer) alone: threads, resume and shards
/// draw the same.
pub fn dropout_bits(seed: u64, step: u64, layer: u32, out: &mut [u32]) {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(((Stream::Dropout as u64) << 32) | u64::from(layer));
    rng.set_word_pos(u128::from(step) << 36);
    let mut bytes = [0u8; 4096];
    for chunk in out.chunks_mut(bytes.len() / 4) {
        let b = &mut bytes[..chunk.len() * 4];
        rng.fill_bytes(b);
        for (w, c) in chunk.iter_mut().zip(b.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
}

/// A seeded ChaCha20 generator bound to one [`Stream`].
#[derive(Debug, Clone)]
pub struct StreamRng {
    rng: ChaCha20Rng,
    /// The functions of [`StreamRng::normal`] (ln, cos): [`Math::Owned`] unless
    /// [`StreamRng::with_math`] says otherwise.
    math: Math,
}

/// Where a stream stands: enough to continue it exactly (seed, stream id, 32-bit word position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub seed: u64,
    pub stream: u64,
    pub word_pos: u128,
}

impl StreamRng {
    /// The stream `stream` of the generator keyed by `seed`. The 256-bit ChaCha key is the seed's eight
    /// little-endian bytes followed by zeros (fixed here, independent of `rand_core`'s `seed_from_u64`).
    pub fn new(seed: u64, stream: Stream) -> Self {
        Self::from_state(StreamState {
            seed,
            stream: stream as u64,
            word_pos: 0,
        })
    }

    /// The candidates' stream of Hyperband bracket `index`: stream id `Brackets << 32 | index`, apart
    /// from every other purpose's.
    pub fn bracket(seed: u64, index: u32) -> Self {
        Self::from_state(StreamState {
            seed,
            stream: ((Stream::Brackets as u64) << 32) | u64::from(index),
            word_pos: 0,
        })
    }

    /// Continue a stream from a saved [`StreamState`].
    pub fn from_state(state: StreamState) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&state.seed.to_le_bytes());
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(state.stream);
        rng.set_word_pos(state.word_pos);
        Self {
            rng,
            math: Math::Owned,
        }
    }

    /// Draw normals with `math`'s ln and cos (a stored run's, to regenerate its initial weights).
    pub fn with_math(mut self, math: Math) -> Self {
        self.math = math;
        self
    }

    /// The state to save to continue this stream later.
    pub fn state(&self) -> StreamState {
        let key = self.rng.get_seed();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&key[..8]);
        StreamState {
            seed: u64::from_le_bytes(seed),
            stream: self.rng.get_stream(),
            word_pos: self.rng.get_word_pos(),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal by the Box-Muller transform (one draw per pair of uniforms, the cosine branch),
    /// sqrt(-2 ln u1) cos(2 pi u2).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln(u1) is finite
        let u2 = self.uniform();
        (-2.0 * self.math.ln(u1)).sqrt() * self.math.cos(std::f64::consts::TAU * u2)
    }

    /// Uniform integer in [0, n), without bias (Lemire's multiply-and-reject). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Shuffle in place by Fisher-Yates, drawing from this stream.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_is_reproducible() {
        let mut a = StreamRng::new(7, Stream::Shuffle);
        let mut b = StreamRng::new(7, Stream::Shuffle);
        let xa: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        assert_eq!(xa, xb);
    }

    #[test]
    fn streams_and_seeds_are_independent() {
        let first = |seed, s| StreamRng::new(seed, s).next_u64();
        assert_ne!(first(7, Stream::Init), first(7, Stream::Shuffle));
        assert_ne!(first(7, Stream::Init), first(8, Stream::Init));
        // Drawing from the init stream does not move the shuffle stream.
        let mut init = StreamRng::new(7, Stream::Init);
        for _ in 0..1000 {
            init.normal();
        }
        assert_eq!(
            StreamRng::new(7, Stream::Shuffle).next_u64(),
            first(7, Stream::Shuffle)
        );
    }

    #[test]
    fn state_round_trips_mid_stream() {
        let mut a = StreamRng::new(3, Stream::Shuffle);
        for _ in 0..37 {
            a.next_u64();
        }
        a.next_u32_for_test();
        let mut b = StreamRng::from_state(a.state());
        assert_eq!(a.state(), b.state());
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    impl StreamRng {
        fn next_u32_for_test(&mut self) -> u32 {
            self.rng.next_u32()
        }
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = StreamRng::new(1, Stream::Init);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = StreamRng::new(1, Stream::Shuffle);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[r.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = StreamRng::new(1, Stream::Shuffle);
        let mut v: Vec<usize> = (0..1000).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..1000).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }
}
