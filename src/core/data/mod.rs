//! MNIST in memory: the two splits as u8 pixels and labels, the layouts on disk ([`idx`], [`png`]), the
//! dataset's SHA-256, and a per-process cache of loaded folders.
//!
//! Pixels stay `u8` in memory (47 MB for the 60 000 training images); they are scaled by 1/255 only when a
//! batch is gathered (see [`crate::core::loader`]). Every header field is checked, and every error names the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::text::hex;

pub mod idx;
pub mod png;

pub use idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx_images, parse_idx_labels};
pub use png::{decode_gray, decode_picture, export_png, read_png_split};

/// MNIST images are 28 x 28.
pub const MNIST_SIDE: usize = 28;
/// The most pixels an image may have: the widest input layer a model may have (`config::MAX_WIDTH`).
pub const MAX_IMAGE_PIXELS: usize = 100_000;
/// Digits 0..=9.
pub const NUM_CLASSES: usize = 10;

/// How a data folder is laid out. `auto` looks for IDX files first, then for `training/` and `testing/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    #[default]
    Auto,
    /// `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-...` as published.
    Idx,
    /// `training/<digit>/*.png` and `testing/<digit>/*.png`, the tutorial's layout.
    Png,
}

impl DataFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Auto => "auto",
            DataFormat::Idx => "idx",
            DataFormat::Png => "png",
        }
    }
}

/// One split (training or test) in memory: `len` images of `rows * cols` u8 pixels, row-major, and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The first `n` samples (all of them when `n` is `None`), without copying.
    pub fn prefix(&self, n: Option<usize>) -> SplitRef<'_> {
        let n = n.unwrap_or(self.len()).min(self.len());
        self.range(0, n)
    }

    /// Samples `start..end` (clamped to the split), without copying.
    pub fn range(&self, start: usize, end: usize) -> SplitRef<'_> {
        let end = end.min(self.len());
        let start = start.min(end);
        SplitRef {
            images: &self.images[start * self.pixels()..end * self.pixels()],
            labels: &self.labels[start..end],
            pixels: self.pixels(),
        }
    }
}

/// A borrowed view of the first samples of a [`Split`]: what training and evaluation read.
#[derive(Debug, Clone, Copy)]
pub struct SplitRef<'a> {
    /// [len, pixels] u8, row-major.
    pub images: &'a [u8],
    /// \[len\], each < 10.
    pub labels: &'a [u8],
    pub pixels: usize,
}

impl<'a> SplitRef<'a> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &'a [u8] {
        &self.images[i * self.pixels..(i + 1) * self.pixels]
    }
}

/// The training and test splits of one data folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub format: DataFormat,
    pub train: Split,
    pub test: Split,
}

/// The samples one run uses: what it trains on, what it validates on (if it holds samples out), what it
/// tests on.
#[derive(Debug, Clone, Copy)]
pub struct RunSplits<'a> {
    pub train: SplitRef<'a>,
    pub validation: Option<SplitRef<'a>>,
    pub test: SplitRef<'a>,
}

impl Dataset {
    /// The splits of a run: the first `limit_train` training samples (all by default), of which the last
    /// `validation` are held out for validation and never trained on; the first `limit_test` test samples.
    /// The held-out samples are the same for every run of a spec whatever its seed (file order, as Keras'
    /// `validation_split` takes them; on the full MNIST with 10 000, the split of Nielsen's mnist.pkl.gz).
    pub fn splits(
        &self,
        limit_train: Option<usize>,
        validation: Option<usize>,
        limit_test: Option<usize>,
    ) -> RunSplits<'_> {
        let n = limit_train
            .unwrap_or(self.train.len())
            .min(self.train.len());
        let held = validation.unwrap_or(0).min(n);
        RunSplits {
            train: self.train.range(0, n - held),
            validation: validation.map(|_| self.train.range(n - held, n)),
            test: self.test.prefix(limit_test),
        }
    }

    /// SHA-256 of the decoded samples a run uses: for the training then the test split, the sample count
    /// and image side lengths as u32 little-endian, the pixels, the labels; with a validation split, the
    /// training part covers the samples trained on, and the validation samples follow the test split the
    /// same way after a `b"validation"` marker (without one, the hash is as it was before splits existed).
    pub fn sha256(
        &self,
        limit_train: Option<usize>,
        validation: Option<usize>,
        limit_test: Option<usize>,
    ) -> String {
        let views = self.splits(limit_train, validation, limit_test);
        let mut h = Sha256::new();
        let add = |h: &mut Sha256, view: SplitRef<'_>, split: &Split| {
            for v in [view.len(), split.rows, split.cols] {
                h.update((v as u32).to_le_bytes());
            }
            h.update(view.images);
            h.update(view.labels);
        };
        add(&mut h, views.train, &self.train);
        add(&mut h, views.test, &self.test);
        if let Some(v) = views.validation {
            h.update(b"validation");
            add(&mut h, v, &self.train);
        }
        hex(&h.finalize())
    }
}

/// Load both splits of `dir`, detecting the layout when `format` is `Auto`.
pub fn load(dir: &Path, format: DataFormat) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            "data folder not found; set `[data] dir` to a folder holding the MNIST IDX files \
             (as the repository's data/mnist) or the PNG layout training/<digit>/*.png, testing/<digit>/*.png",
        ));
    }
    let format = match format {
        DataFormat::Auto => detect(dir)?,
        f => f,
    };
    // The layout asked for must be there; say which one the folder holds instead.
    let detected = detect(dir).ok();
    if format == DataFormat::Png && !dir.join("training").is_dir() {
        return Err(Error::data(
            dir,
            format!(
                "format \"png\" reads training/<digit>/*.png and testing/<digit>/*.png, but there is no \
                 training/ folder here{}",
                match detected {
                    Some(DataFormat::Idx) => {
                        "; this folder holds the MNIST IDX files: set format = \"idx\" (or \"auto\")"
                    }
                    _ => "",
                }
            ),
        ));
    }
    if format == DataFormat::Idx && detected != Some(DataFormat::Idx) {
        return Err(Error::data(
            dir,
            format!(
                "format \"idx\" reads train-images-idx3-ubyte[.gz] and the other MNIST IDX files, but they are \
                 not here{}",
                match detected {
                    Some(DataFormat::Png) => {
                        "; this folder holds the PNG layout: set format = \"png\" (or \"auto\")"
                    }
                    _ => "",
                }
            ),
        ));
    }
    let (train, test) = match format {
        DataFormat::Idx => {
            let sums = idx::read_sha256sums(dir)?;
            (
                idx::read_split(dir, "train", &sums)?,
                idx::read_split(dir, "t10k", &sums)?,
            )
        }
        DataFormat::Png => (
            read_png_split(&dir.join("training"))?,
            read_png_split(&dir.join("testing"))?,
        ),
        DataFormat::Auto => return Err(Error::internal("the data format was resolved above")),
    };
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(Error::data(
            dir,
            format!(
                "training images are {}x{} but test images are {}x{}",
                train.rows, train.cols, test.rows, test.cols
            ),
        ));
    }
    Ok(Dataset {
        dir: dir.to_path_buf(),
        format,
        train,
        test,
    })
}

fn detect(dir: &Path) -> Result<DataFormat> {
    let has_idx = idx::idx_names("train-images-idx3-ubyte")
        .iter()
        .any(|f| dir.join(f).is_file());
    if has_idx {
        Ok(DataFormat::Idx)
    } else if dir.join("training").is_dir() {
        Ok(DataFormat::Png)
    } else {
        Err(Error::data(
            dir,
            "no MNIST data here: expected train-images-idx3-ubyte[.gz] (IDX) or a training/ folder (PNG)",
        ))
    }
}

/// Why a subset of a split's labels is not a sample of the split, if it is not: a few of its classes hold
/// most of it where the whole split is balanced (the first N files of the PNG layout, which groups samples
/// by label, are one or two digits), or, for a subset of 200 samples or more, a class of the split is
/// missing from it. `None` for a subset that looks like the split.
pub fn unbalanced(split: &[u8], subset: &[u8]) -> Option<String> {
    let count = |labels: &[u8]| {
        let mut c = [0usize; NUM_CLASSES];
        for &l in labels {
            if (l as usize) < NUM_CLASSES {
                c[l as usize] += 1;
            }
        }
        c
    };
    let (all, part) = (count(split), count(subset));
    let share = |c: &[usize; NUM_CLASSES], n: usize| {
        c.iter().copied().max().unwrap_or(0) as f64 / n.max(1) as f64
    };
    let (whole, sub) = (share(&all, split.len()), share(&part, subset.len()));
    let missing: Vec<usize> = (0..NUM_CLASSES)
        .filter(|&k| all[k] > 0 && part[k] == 0)
        .collect();
    let lopsided = subset.len() >= 10 && sub > (2.5 * whole).max(0.5);
    if !lopsided && (subset.len() < 200 || missing.is_empty()) {
        return None;
    }
    let per: Vec<String> = part.iter().map(usize::to_string).collect();
    Some(format!(
        "its {} samples hold labels 0-9 {} times ({:.0}% one digit, where the whole split has at most \
         {:.0}% of any){}",
        subset.len(),
        per.join("/"),
        100.0 * sub,
        100.0 * whole,
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                "; no sample of {}",
                missing
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ))
}

/// Datasets loaded once per process and shared by every run that names the same folder and format, with
/// the SHA-256 of each (folder, limits) view computed once.
#[derive(Default)]
pub struct DataCache {
    sets: HashMap<(String, DataFormat), Dataset>,
    hashes: HashMap<ViewKey, String>,
}

/// A folder, its format, and the limits and split of a run's view of it.
type ViewKey = (
    String,
    DataFormat,
    Option<usize>,
    Option<usize>,
    Option<usize>,
);

impl DataCache {
    /// The dataset in `dir` (relative to the working directory), loading it on first use.
    pub fn get(&mut self, dir: &str, format: DataFormat) -> Result<&Dataset> {
        let key = (dir.to_string(), format);
        if !self.sets.contains_key(&key) {
            let ds = load(Path::new(dir), format)?;
            self.sets.insert(key.clone(), ds);
        }
        Ok(&self.sets[&key])
    }

    /// The dataset in `dir` if it is loaded already (lets threads share a filled cache).
    pub fn loaded(&self, dir: &str, format: DataFormat) -> Option<&Dataset> {
        self.sets.get(&(dir.to_string(), format))
    }

    /// SHA-256 of the samples a run uses (see [`Dataset::sha256`]).
    pub fn sha256(
        &mut self,
        dir: &str,
        format: DataFormat,
        limit_train: Option<usize>,
        validation: Option<usize>,
        limit_test: Option<usize>,
    ) -> Result<String> {
        let key = (dir.to_string(), format, limit_train, validation, limit_test);
        if let Some(h) = self.hashes.get(&key) {
            return Ok(h.clone());
        }
        let h = self
            .get(dir, format)?
            .sha256(limit_train, validation, limit_test);
        self.hashes.insert(key, h.clone());
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_limits_without_copying() {
        let s = Split {
            images: (0..12).collect(),
            labels: vec![1, 2, 3],
            rows: 2,
            cols: 2,
        };
        let v = s.prefix(Some(2));
        assert_eq!(v.len(), 2);
        assert_eq!(v.image(1), &[4, 5, 6, 7]);
        assert_eq!(s.prefix(Some(99)).len(), 3);
        assert_eq!(s.range(1, 3).image(0), &[4, 5, 6, 7]);
        assert_eq!(s.range(2, 9).len(), 1);
    }

    #[test]
    fn a_validation_split_is_the_last_samples_of_the_training_part_and_changes_the_hash() {
        let split = |n: usize| Split {
            images: (0..n as u8).collect(),
            labels: (0..n as u8).map(|l| l % 10).collect(),
            rows: 1,
            cols: 1,
        };
        let ds = Dataset {
            dir: PathBuf::from("x"),
            format: DataFormat::Idx,
            train: split(10),
            test: split(4),
        };
        let s = ds.splits(Some(8), Some(3), None);
        assert_eq!(s.train.labels, &[0, 1, 2, 3, 4]);
        assert_eq!(s.validation.unwrap().labels, &[5, 6, 7]);
        assert_eq!(s.test.len(), 4);
        assert!(ds.splits(None, None, None).validation.is_none());
        // No split: the hash as before splits existed; a split changes it.
        let plain = ds.sha256(Some(8), None, None);
        assert_ne!(plain, ds.sha256(Some(8), Some(3), None));
        assert_ne!(
            ds.sha256(Some(8), Some(3), None),
            ds.sha256(Some(8), Some(2), None)
        );
        assert_eq!(plain, ds.sha256(Some(8), None, None));
    }
}
