//! The training-set loader: a fresh permutation per epoch from the run's shuffle stream, then batches of
//! `batch_size` indices in that order, the last partial batch dropped unless `drop_last = false`.

use crate::core::rng::StreamRng;

/// SGD steps in an epoch of `n` training samples: whole batches, and the last partial one unless it is
/// dropped.
pub fn batches(n: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        n / batch_size.max(1)
    } else {
        n.div_ceil(batch_size.max(1))
    }
}

pub struct Loader {
    batch_size: usize,
    drop_last: bool,
    /// The current epoch's order of sample indices: [n].
    order: Vec<usize>,
    rng: StreamRng,
}

impl Loader {
    pub fn new(n: usize, batch_size: usize, drop_last: bool, rng: StreamRng) -> Self {
        Loader {
            batch_size,
            drop_last,
            order: (0..n).collect(),
            rng,
        }
    }

    /// Draw the next epoch's order: a Fisher-Yates shuffle of 0..n (always from the identity, so an epoch's
    /// order depends only on the stream position).
    pub fn shuffle(&mut self) {
        for (i, o) in self.order.iter_mut().enumerate() {
            *o = i;
        }
        self.rng.shuffle(&mut self.order);
    }

    /// This epoch's batches of sample indices.
    pub fn batches(&self) -> impl Iterator<Item = &[usize]> {
        let full = self.order.len() / self.batch_size * self.batch_size;
        let end = if self.drop_last {
            full
        } else {
            self.order.len()
        };
        self.order[..end].chunks(self.batch_size)
    }

    pub fn num_batches(&self) -> usize {
        batches(self.order.len(), self.batch_size, self.drop_last)
    }

    /// The shuffle stream, to save its position with a checkpoint.
    pub fn rng(&self) -> &StreamRng {
        &self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rng::Stream;

    #[test]
    fn drops_the_last_partial_batch_by_default() {
        let mut l = Loader::new(23, 5, true, StreamRng::new(1, Stream::Shuffle));
        l.shuffle();
        let sizes: Vec<usize> = l.batches().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![5, 5, 5, 5]);
        assert_eq!(l.num_batches(), 4);
        let mut keep = Loader::new(23, 5, false, StreamRng::new(1, Stream::Shuffle));
        keep.shuffle();
        let sizes: Vec<usize> = keep.batches().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![5, 5, 5, 5, 3]);
        assert_eq!(keep.num_batches(), 5);
        let mut all: Vec<usize> = keep.batches().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
    }

    #[test]
    fn each_epoch_has_a_new_order_and_seeds_reproduce_it() {
        let mut a = Loader::new(100, 10, true, StreamRng::new(1, Stream::Shuffle));
        let mut b = Loader::new(100, 10, true, StreamRng::new(1, Stream::Shuffle));
        a.shuffle();
        b.shuffle();
        let first: Vec<usize> = a.batches().flatten().copied().collect();
        assert_eq!(first, b.batches().flatten().copied().collect::<Vec<_>>());
        a.shuffle();
        assert_ne!(first, a.batches().flatten().copied().collect::<Vec<_>>());
    }
}
