//! MNIST on disk and in memory: the IDX reader (raw or gzipped), the PNG-folder reader, the PNG exporter,
//! and the dataset's SHA-256.
//!
//! Pixels stay `u8` in memory (47 MB for the 60 000 training images); they are scaled by 1/255 only when a
//! batch is gathered (see [`crate::loader`]). Every header field is checked, and every error names the file.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// MNIST images are 28 x 28.
pub const MNIST_SIDE: usize = 28;
/// Digits 0..=9.
pub const NUM_CLASSES: usize = 10;
/// IDX magic for unsigned-byte data with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic for unsigned-byte data with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

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
        SplitRef {
            images: &self.images[..n * self.pixels()],
            labels: &self.labels[..n],
            pixels: self.pixels(),
        }
    }
}

/// A borrowed view of the first samples of a [`Split`]: what training and evaluation read.
#[derive(Debug, Clone, Copy)]
pub struct SplitRef<'a> {
    /// [len, pixels] u8, row-major.
    pub images: &'a [u8],
    /// [len], each < 10.
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

impl Dataset {
    /// SHA-256 of the decoded samples a run uses (the first `limit_train` / `limit_test`): for the training then
    /// the test split, the sample count and image side lengths as u32 little-endian, the pixels, the labels.
    pub fn sha256(&self, limit_train: Option<usize>, limit_test: Option<usize>) -> String {
        let mut h = Sha256::new();
        for (split, limit) in [(&self.train, limit_train), (&self.test, limit_test)] {
            let view = split.prefix(limit);
            for v in [view.len(), split.rows, split.cols] {
                h.update((v as u32).to_le_bytes());
            }
            h.update(view.images);
            h.update(view.labels);
        }
        hex(&h.finalize())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    let (train, test) = match format {
        DataFormat::Idx => {
            let sums = read_sha256sums(dir)?;
            (
                read_idx_split(dir, "train", &sums)?,
                read_idx_split(dir, "t10k", &sums)?,
            )
        }
        DataFormat::Png => (
            read_png_split(&dir.join("training"))?,
            read_png_split(&dir.join("testing"))?,
        ),
        DataFormat::Auto => unreachable!("resolved above"),
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
    let has_idx = ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
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

/// The path of `<name>` or `<name>.gz` in `dir`.
fn find_idx_file(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [name.to_string(), format!("{name}.gz")] {
        let p = dir.join(&candidate);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::data(
        dir.join(format!("{name}.gz")),
        format!("missing IDX file: neither {name} nor {name}.gz exists in this folder"),
    ))
}

/// `SHA256SUMS` (as `sha256sum` writes it), if the folder has one: file name -> hex digest.
fn read_sha256sums(dir: &Path) -> Result<HashMap<String, String>> {
    let path = dir.join("SHA256SUMS");
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut sums = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(hash), Some(name)) if hash.len() == 64 => {
                sums.insert(
                    name.trim_start_matches('*').to_string(),
                    hash.to_lowercase(),
                );
            }
            _ => {
                return Err(Error::data(
                    &path,
                    format!(
                        "line {}: expected `<sha256>  <file>`, found {line:?}",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(sums)
}

/// Read a file whole, gunzipping it when it starts with the gzip magic bytes; check it against `sums`.
fn read_maybe_gz(path: &Path, sums: &HashMap<String, String>) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| Error::io(path, e))?;
    if let Some(expected) = path
        .file_name()
        .and_then(|n| sums.get(n.to_string_lossy().as_ref()))
    {
        let actual = hex(&Sha256::digest(&raw));
        if &actual != expected {
            return Err(Error::data(
                path,
                format!(
                    "checksum mismatch: SHA256SUMS says {expected}, the file hashes to {actual}; \
                     the file is corrupt or was replaced (restore it, e.g. `git checkout -- data/mnist`)"
                ),
            ));
        }
    }
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 6);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parse IDX image bytes: magic 0x00000803, then count, rows, cols (big-endian u32), then the pixels.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<Split> {
    if bytes.len() < 16 {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX header: {} bytes, an image file needs 16",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != IDX_IMAGES_MAGIC {
        return Err(Error::data(
            path,
            format!(
                "wrong IDX magic {magic:#010x}: an image file (u8, 3 dimensions) has {IDX_IMAGES_MAGIC:#010x}"
            ),
        ));
    }
    let (n, rows, cols) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    if rows == 0 || cols == 0 {
        return Err(Error::data(
            path,
            format!("IDX header gives an empty image size {rows}x{cols}"),
        ));
    }
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| Error::data(path, "IDX header sizes overflow"))?;
    let body = &bytes[16..];
    if body.len() != expected {
        return Err(Error::data(
            path,
            format!(
                "{} IDX image data: header says {n} images of {rows}x{cols} = {expected} bytes, found {}",
                if body.len() < expected {
                    "truncated"
                } else {
                    "oversized"
                },
                body.len()
            ),
        ));
    }
    Ok(Split {
        images: body.to_vec(),
        labels: Vec::new(),
        rows,
        cols,
    })
}

/// Parse IDX label bytes: magic 0x00000801, count (big-endian u32), then one byte per label, each < 10.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX header: {} bytes, a label file needs 8",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != IDX_LABELS_MAGIC {
        return Err(Error::data(
            path,
            format!(
                "wrong IDX magic {magic:#010x}: a label file (u8, 1 dimension) has {IDX_LABELS_MAGIC:#010x}"
            ),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(Error::data(
            path,
            format!(
                "{} IDX label data: header says {n} labels, found {} bytes",
                if body.len() < n {
                    "truncated"
                } else {
                    "oversized"
                },
                body.len()
            ),
        ));
    }
    if let Some(i) = body.iter().position(|&l| l as usize >= NUM_CLASSES) {
        return Err(Error::data(
            path,
            format!("label {} at index {i} is not a digit 0-9", body[i]),
        ));
    }
    Ok(body.to_vec())
}

/// Read `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` and check they agree.
fn read_idx_split(dir: &Path, prefix: &str, sums: &HashMap<String, String>) -> Result<Split> {
    let images_path = find_idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let mut split = parse_idx_images(&read_maybe_gz(&images_path, sums)?, &images_path)?;
    split.labels = parse_idx_labels(&read_maybe_gz(&labels_path, sums)?, &labels_path)?;
    let n_images = split.images.len() / split.pixels();
    if n_images != split.labels.len() {
        return Err(Error::data(
            &labels_path,
            format!(
                "{} labels but {} has {n_images} images; the two files must come from the same split",
                split.labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(split)
}

/// Read `<dir>/<digit>/*.png`: label folders 0..=9 in order, files sorted by name within each, decoded to
/// 8-bit grayscale. Every image must have the size of the first. Names starting with '.' are skipped.
pub fn read_png_split(dir: &Path) -> Result<Split> {
    let mut label_dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let label = match name.parse::<u8>() {
            Ok(l) if (l as usize) < NUM_CLASSES && name.len() == 1 && path.is_dir() => l,
            _ => {
                return Err(Error::data(
                    &path,
                    "not a label folder: the PNG layout holds only folders named 0 to 9, one per digit",
                ));
            }
        };
        label_dirs.push((label, path));
    }
    label_dirs.sort();
    let mut files = Vec::new();
    for (label, path) in &label_dirs {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                names.push(entry.path());
            }
        }
        names.sort();
        files.extend(names.into_iter().map(|p| (*label, p)));
    }
    if files.is_empty() {
        return Err(Error::data(
            dir,
            "no images: expected <digit>/*.png files below this folder",
        ));
    }
    let mut split = Split {
        images: Vec::new(),
        labels: Vec::with_capacity(files.len()),
        rows: 0,
        cols: 0,
    };
    for (label, path) in files {
        let img = decode_gray(&path)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if split.labels.is_empty() {
            split.rows = h;
            split.cols = w;
            split
                .images
                .reserve(split.pixels() * split.labels.capacity());
        } else if (h, w) != (split.rows, split.cols) {
            return Err(Error::data(
                &path,
                format!(
                    "image is {w}x{h} but the others are {}x{}; all images must have one size",
                    split.cols, split.rows
                ),
            ));
        }
        split.images.extend_from_slice(img.as_raw());
        split.labels.push(label);
    }
    Ok(split)
}

/// Decode one image file to 8-bit grayscale, naming the file on failure.
pub fn decode_gray(path: &Path) -> Result<image::GrayImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let img = reader
        .decode()
        .map_err(|e| Error::data(path, format!("not a readable PNG image: {e}")))?;
    Ok(img.into_luma8())
}

/// Write `ds` in the PNG-folder layout: `<out>/training/<label>/<index>.png` and `<out>/testing/...`, the
/// index zero-padded so that sorting by name gives file order back.
pub fn export_png(ds: &Dataset, out: &Path) -> Result<(usize, usize)> {
    for (split, sub) in [(&ds.train, "training"), (&ds.test, "testing")] {
        for label in 0..NUM_CLASSES {
            let d = out.join(sub).join(label.to_string());
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let view = split.prefix(None);
        for i in 0..view.len() {
            let path = out
                .join(sub)
                .join(view.labels[i].to_string())
                .join(format!("{i:05}.png"));
            image::save_buffer(
                &path,
                view.image(i),
                split.cols as u32,
                split.rows as u32,
                image::ExtendedColorType::L8,
            )
            .map_err(|e| Error::data(&path, format!("cannot write PNG: {e}")))?;
        }
    }
    Ok((ds.train.len(), ds.test.len()))
}

/// Datasets loaded once per process and shared by every run that names the same folder and format, with
/// the SHA-256 of each (folder, limits) view computed once.
#[derive(Default)]
pub struct DataCache {
    sets: HashMap<(String, DataFormat), Dataset>,
    hashes: HashMap<(String, DataFormat, Option<usize>, Option<usize>), String>,
}

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
        limit_test: Option<usize>,
    ) -> Result<String> {
        let key = (dir.to_string(), format, limit_train, limit_test);
        if let Some(h) = self.hashes.get(&key) {
            return Ok(h.clone());
        }
        let h = self.get(dir, format)?.sha256(limit_train, limit_test);
        self.hashes.insert(key, h.clone());
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_bytes(n: u32, rows: u32, cols: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IDX_IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn parses_a_valid_image_file() {
        let bytes = images_bytes(2, 2, 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let s = parse_idx_images(&bytes, Path::new("x")).unwrap();
        assert_eq!((s.rows, s.cols), (2, 3));
        assert_eq!(s.images.len(), 12);
    }

    #[test]
    fn rejects_bad_image_headers() {
        let p = Path::new("imgs");
        let err = |b: &[u8]| parse_idx_images(b, p).unwrap_err().to_string();
        assert!(err(&[0, 0, 8]).contains("truncated IDX header"));
        let mut wrong = images_bytes(1, 1, 1, &[0]);
        wrong[3] = 0x01;
        assert!(err(&wrong).contains("wrong IDX magic 0x00000801"));
        assert!(err(&images_bytes(2, 2, 2, &[0; 7])).contains("truncated IDX image data"));
        assert!(err(&images_bytes(1, 2, 2, &[0; 5])).contains("oversized"));
        assert!(err(&images_bytes(1, 0, 2, &[])).contains("empty image size"));
        assert!(err(&images_bytes(u32::MAX, u32::MAX, u32::MAX, &[])).starts_with("imgs: "));
    }

    #[test]
    fn rejects_bad_labels() {
        let p = Path::new("labels");
        let mut v = IDX_LABELS_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(&[1, 2, 10]);
        let e = parse_idx_labels(&v, p).unwrap_err().to_string();
        assert!(e.contains("label 10 at index 2"), "{e}");
        v.pop();
        let e = parse_idx_labels(&v, p).unwrap_err().to_string();
        assert!(e.contains("truncated IDX label data"), "{e}");
    }

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
    }
}
