//! The IDX reader (as published by LeCun et al.: a big-endian header, then u8 values), raw or gzipped,
//! checked against `SHA256SUMS` when the folder has one.
//!
//! Nothing is allocated from a size the file claims before that size is checked: the header is read first,
//! its sizes are bounded by [`MAX_IDX_BYTES`], and the body is read through a limit, so a gzip stream that
//! inflates to gigabytes is refused after the header, not after the memory is gone.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{NUM_CLASSES, Split};
use crate::error::{Error, Result};
use crate::text::hex;

/// IDX magic for unsigned-byte data with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic for unsigned-byte data with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// The largest IDX body read (2 GiB; MNIST's training images are 47 MB).
pub const MAX_IDX_BYTES: usize = 1 << 31;
/// The largest `SHA256SUMS` file read.
const MAX_SUMS_BYTES: u64 = 1 << 20;

/// What an IDX file holds: images (`[count, rows, cols]`) or labels (`[count]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn magic(self) -> u32 {
        match self {
            Kind::Images => IDX_IMAGES_MAGIC,
            Kind::Labels => IDX_LABELS_MAGIC,
        }
    }

    fn dims(self) -> usize {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }

    fn header_len(self) -> usize {
        4 + 4 * self.dims()
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Images => "an image file (u8, 3 dimensions)",
            Kind::Labels => "a label file (u8, 1 dimension)",
        }
    }
}

/// A checked IDX header: its dimensions and the body length they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    dims: Vec<usize>,
    body_len: usize,
}

/// Parse and check the header at the start of `bytes`: length, magic, sizes (non-zero image sides, a body
/// of at most [`MAX_IDX_BYTES`]). The one place IDX headers are checked.
fn parse_header(bytes: &[u8], kind: Kind, path: &Path) -> Result<Header> {
    let need = kind.header_len();
    if bytes.len() < need {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX header: {} bytes, {} needs {need}",
                bytes.len(),
                kind.noun()
            ),
        ));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let magic = word(0);
    if magic != kind.magic() {
        return Err(Error::data(
            path,
            format!(
                "wrong IDX magic {magic:#010x}: {} has {:#010x}",
                kind.noun(),
                kind.magic()
            ),
        ));
    }
    let dims: Vec<usize> = (0..kind.dims()).map(|d| word(4 + 4 * d) as usize).collect();
    if kind == Kind::Images && (dims[1] == 0 || dims[2] == 0) {
        return Err(Error::data(
            path,
            format!(
                "IDX header gives an empty image size {}x{}",
                dims[1], dims[2]
            ),
        ));
    }
    let body_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            Error::data(
                path,
                format!(
                    "IDX header sizes {dims:?} give more than {MAX_IDX_BYTES} bytes of data, more than this \
                     tool reads"
                ),
            )
        })?;
    Ok(Header { dims, body_len })
}

/// The error for a body of `found` bytes where the header promises `header.body_len`.
fn size_error(kind: Kind, header: &Header, found: usize, path: &Path) -> Error {
    let state = if found < header.body_len {
        "truncated"
    } else {
        "oversized"
    };
    let promise = match kind {
        Kind::Images => format!(
            "header says {} images of {}x{} = {} bytes",
            header.dims[0], header.dims[1], header.dims[2], header.body_len
        ),
        Kind::Labels => format!("header says {} labels", header.dims[0]),
    };
    let found = match found {
        f if f > header.body_len => "more".to_string(),
        f => f.to_string(),
    };
    let what = match kind {
        Kind::Images => "image",
        Kind::Labels => "label",
    };
    Error::data(
        path,
        format!("{state} IDX {what} data: {promise}, found {found} bytes"),
    )
}

/// Parse IDX image bytes: magic 0x00000803, then count, rows, cols (big-endian u32), then the pixels.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<Split> {
    let header = parse_header(bytes, Kind::Images, path)?;
    let body = &bytes[Kind::Images.header_len()..];
    if body.len() != header.body_len {
        return Err(size_error(Kind::Images, &header, body.len(), path));
    }
    Ok(Split {
        images: body.to_vec(),
        labels: Vec::new(),
        rows: header.dims[1],
        cols: header.dims[2],
    })
}

/// Parse IDX label bytes: magic 0x00000801, count (big-endian u32), then one byte per label, each < 10.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let header = parse_header(bytes, Kind::Labels, path)?;
    let body = &bytes[Kind::Labels.header_len()..];
    if body.len() != header.body_len {
        return Err(size_error(Kind::Labels, &header, body.len(), path));
    }
    check_labels(body, path)?;
    Ok(body.to_vec())
}

fn check_labels(labels: &[u8], path: &Path) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= NUM_CLASSES) {
        Some(i) => Err(Error::data(
            path,
            format!("label {} at index {i} is not a digit 0-9", labels[i]),
        )),
        None => Ok(()),
    }
}

/// `SHA256SUMS` (as `sha256sum` writes it), if the folder has one: file name -> hex digest.
pub(super) fn read_sha256sums(dir: &Path) -> Result<HashMap<String, String>> {
    let path = dir.join("SHA256SUMS");
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_SUMS_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| Error::io(&path, e))?;
    if text.len() as u64 > MAX_SUMS_BYTES {
        return Err(Error::data(
            &path,
            format!("larger than {MAX_SUMS_BYTES} bytes; a SHA256SUMS file lists a few files"),
        ));
    }
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
                        "line {}: expected `<sha256>  <file>`, found {:?}",
                        i + 1,
                        crate::text::truncate(line, 100)
                    ),
                ));
            }
        }
    }
    Ok(sums)
}

/// The names an IDX file goes by: `train-images-idx3-ubyte` as published, and with a dot before the
/// `idx` part (`train-images.idx3-ubyte`, as Kaggle's copies and some mirrors name them); each raw or
/// gzipped.
pub(super) fn idx_names(name: &str) -> Vec<String> {
    let mut bases = vec![name.to_string()];
    if let Some(at) = name.rfind("-idx") {
        bases.push(format!("{}.{}", &name[..at], &name[at + 1..]));
    }
    bases
        .iter()
        .flat_map(|b| [b.clone(), format!("{b}.gz")])
        .collect()
}

/// The path of `<name>` (or one of its other names, see [`idx_names`]) in `dir`.
fn find_idx_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let names = idx_names(name);
    for candidate in &names {
        let p = dir.join(candidate);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::data(
        dir.join(format!("{name}.gz")),
        format!(
            "missing IDX file: none of {} exists in this folder",
            names.join(", ")
        ),
    ))
}

/// Check a file against its `SHA256SUMS` entry, if it has one, hashing it as it streams.
fn check_sum(path: &Path, sums: &HashMap<String, String>) -> Result<()> {
    let Some(expected) = path
        .file_name()
        .and_then(|n| sums.get(n.to_string_lossy().as_ref()))
    else {
        return Ok(());
    };
    let mut h = Sha256::new();
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    let actual = hex(&h.finalize());
    if &actual != expected {
        // The repository's own copy can be restored from git; any other folder's file by its source.
        let shipped = path.parent().is_some_and(|d| d.ends_with("data/mnist"));
        let fix = if shipped {
            "restore the shipped copy with `git checkout -- data/mnist`"
        } else {
            "download the file again, or, if it was replaced on purpose, write its new hash in \
             SHA256SUMS (`sha256sum <file>`; a folder without SHA256SUMS is not checked)"
        };
        return Err(Error::data(
            path,
            format!(
                "checksum mismatch: SHA256SUMS says {expected}, the file hashes to {actual}; the file is \
                 corrupt or was replaced: {fix}"
            ),
        ));
    }
    Ok(())
}

/// Read one IDX file (gunzipping it when it starts with the gzip magic bytes): its checked header and its
/// body, reading no more than one byte past what the header promises.
fn read_idx(path: &Path, kind: Kind, sums: &HashMap<String, String>) -> Result<(Header, Vec<u8>)> {
    check_sum(path, sums)?;
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut file = BufReader::new(file);
    let gz = {
        use std::io::BufRead;
        let head = file.fill_buf().map_err(|e| Error::io(path, e))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let read_err = |e: std::io::Error| {
        if gz {
            Error::data(path, format!("corrupt gzip stream: {e}"))
        } else {
            Error::io(path, e)
        }
    };
    // The header: read what there is of it, up to its length.
    let mut head = Vec::with_capacity(kind.header_len());
    (&mut reader)
        .take(kind.header_len() as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let header = parse_header(&head, kind, path)?;
    // The body: at most one byte more than promised, to tell an oversized file.
    let mut body = Vec::with_capacity(header.body_len);
    (&mut reader)
        .take(header.body_len as u64 + 1)
        .read_to_end(&mut body)
        .map_err(read_err)?;
    if body.len() != header.body_len {
        return Err(size_error(kind, &header, body.len(), path));
    }
    Ok((header, body))
}

/// Read `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` and check they agree.
pub(super) fn read_split(
    dir: &Path,
    prefix: &str,
    sums: &HashMap<String, String>,
) -> Result<Split> {
    let images_path = find_idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (images, pixels) = read_idx(&images_path, Kind::Images, sums)?;
    let (labels_header, labels) = read_idx(&labels_path, Kind::Labels, sums)?;
    check_labels(&labels, &labels_path)?;
    let n_images = images.dims[0];
    if n_images != labels_header.dims[0] {
        return Err(Error::data(
            &labels_path,
            format!(
                "{} labels but {} has {n_images} images; the two files must come from the same split",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(Split {
        images: pixels,
        labels,
        rows: images.dims[1],
        cols: images.dims[2],
    })
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
        assert!(err(&images_bytes(u32::MAX, u32::MAX, u32::MAX, &[])).contains("more than"));
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
    fn a_gzip_bomb_is_refused_after_its_header() {
        // A header promising 60 000 images of 28x28, then ten times more zeros than that: 470 MB inflated
        // from under half a megabyte. The reader stops one byte past the promise.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-images-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        use std::io::Write;
        enc.write_all(&images_bytes(60_000, 28, 28, &[])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..450 {
            enc.write_all(&zeros).unwrap();
        }
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let e = read_idx(&path, Kind::Images, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("oversized IDX image data"), "{e}");
    }
}
