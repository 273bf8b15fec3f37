//! The tutorial's PNG-folder layout: `<split>/<digit>/*.png`, read in a fixed order (label folders 0..=9,
//! files sorted by name), and written from IDX data by [`export_png`].
//!
//! Every file's size is read from its header before any pixel is decoded or any buffer is sized from it,
//! so one huge image among small ones is named as the odd one out instead of exhausting memory.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::idx::MAX_IDX_BYTES;
use super::{Dataset, MAX_IMAGE_PIXELS, NUM_CLASSES, Split};
use crate::error::{Error, Result};

/// The label folders of a split and their files, in reading order.
fn list_files(dir: &Path) -> Result<Vec<(u8, PathBuf)>> {
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
    Ok(files)
}

fn open_image(path: &Path) -> Result<image::ImageReader<std::io::BufReader<fs::File>>> {
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))
}

fn unreadable(path: &Path, e: image::ImageError) -> Error {
    Error::data(
        path,
        format!(
            "not a readable PNG image: {e}. Every file in a label folder is read as one digit image: move \
             a file that is not one out of the folder (or give it a name starting with `.`, which is \
             skipped), and convert other image formats first (e.g. `convert digit.jpg digit.png` with \
             ImageMagick)"
        ),
    )
}

/// Width and height from the image's header, without decoding its pixels.
fn dimensions(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = open_image(path)?
        .into_dimensions()
        .map_err(|e| unreadable(path, e))?;
    Ok((w as usize, h as usize))
}

/// Read `<dir>/<digit>/*.png`: label folders 0..=9 in order, files sorted by name within each, decoded to
/// 8-bit grayscale. All images must have one size, of at most [`MAX_IMAGE_PIXELS`] pixels (the widest input
/// layer); names starting with '.' are skipped.
pub fn read_png_split(dir: &Path) -> Result<Split> {
    let files = list_files(dir)?;
    // Sizes first, from the headers: the size most files have is the split's; any other is named.
    let mut sizes = Vec::with_capacity(files.len());
    let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
    for (_, path) in &files {
        let wh = dimensions(path)?;
        *counts.entry(wh).or_default() += 1;
        sizes.push(wh);
    }
    let (&(cols, rows), &common) = counts
        .iter()
        .max_by_key(|&(wh, n)| (*n, std::cmp::Reverse(*wh)))
        .ok_or_else(|| Error::internal("a split with files has sizes"))?;
    if let Some(((_, path), (w, h))) = files
        .iter()
        .zip(&sizes)
        .find(|(_, wh)| **wh != (cols, rows))
    {
        return Err(Error::data(
            path,
            format!(
                "image is {w}x{h} but the others are {cols}x{rows} ({common} of {} images); all images \
                 must have one size",
                files.len()
            ),
        ));
    }
    let pixels = rows * cols;
    if pixels > MAX_IMAGE_PIXELS {
        return Err(Error::data(
            dir,
            format!(
                "images of {cols}x{rows} = {pixels} pixels; the widest input layer is {MAX_IMAGE_PIXELS}, so this \
                 tool reads images of at most that many pixels"
            ),
        ));
    }
    let total = pixels
        .checked_mul(files.len())
        .filter(|&t| t <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            Error::data(
                dir,
                format!(
                    "{} images of {pixels} pixels are more than the {MAX_IDX_BYTES} bytes this tool reads",
                    files.len()
                ),
            )
        })?;
    let mut split = Split {
        images: Vec::with_capacity(total),
        labels: Vec::with_capacity(files.len()),
        rows,
        cols,
    };
    for (label, path) in files {
        let img = decode_gray(&path)?;
        // A file replaced between the two passes would have another size.
        if (img.width() as usize, img.height() as usize) != (cols, rows) {
            return Err(Error::data(
                &path,
                format!(
                    "image is {}x{} but its header said {cols}x{rows}",
                    img.width(),
                    img.height()
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
    let img = open_image(path)?
        .decode()
        .map_err(|e| unreadable(path, e))?;
    Ok(img.into_luma8())
}

/// Decode a picture of a digit to 8-bit grayscale, transparency included: an image with an alpha channel
/// (what drawing programs export: ink on a transparent background) is laid over a background of the
/// opposite shade to its ink, so the ink stays visible whatever colour its transparent pixels hold.
pub fn decode_picture(path: &Path) -> Result<image::GrayImage> {
    let img = open_image(path)?
        .decode()
        .map_err(|e| unreadable(path, e))?;
    if !img.color().has_alpha() {
        return Ok(img.into_luma8());
    }
    let rgba = img.into_luma_alpha8();
    // The ink: the shade of the most opaque pixels (alpha-weighted mean luminance).
    let (mut ink, mut weight) = (0.0f64, 0.0f64);
    for p in rgba.pixels() {
        let a = p[1] as f64 / 255.0;
        ink += a * p[0] as f64;
        weight += a;
    }
    let ink = if weight > 0.0 { ink / weight } else { 0.0 };
    let background = if ink < 128.0 { 255.0 } else { 0.0 };
    Ok(image::GrayImage::from_fn(
        rgba.width(),
        rgba.height(),
        |x, y| {
            let p = rgba.get_pixel(x, y);
            let a = p[1] as f64 / 255.0;
            image::Luma([(a * p[0] as f64 + (1.0 - a) * background).round() as u8])
        },
    ))
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
