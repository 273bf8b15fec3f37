//! Classifying digit images with a stored run: any size and either polarity, brought to MNIST's 28 x 28
//! form first.

use std::path::Path;

use ndarray::Array2;

use super::export::StoredModel;
use crate::core::config::Dtype;
use crate::core::data::{MNIST_SIDE, decode_picture};
use crate::core::model::Mlp;
use crate::core::real::Real;
use crate::core::workspace::Workspace;
use crate::error::{Error, Result};
use crate::store::RunStatus;

/// The least difference between ink and background, in gray levels, that counts as a digit.
pub const MIN_CONTRAST: u8 = 32;

/// Bring any grayscale digit image to MNIST's form: light digit on a dark background (inverted if the
/// border is light), cropped to the digit, scaled to fit 20 x 20 keeping its aspect, and placed in a
/// 28 x 28 image with its centre of mass at the centre, as the MNIST images were made. `None` when the
/// image holds no digit: blank, or nearly uniform (less than [`MIN_CONTRAST`] between ink and background).
pub fn mnist_like(img: &image::GrayImage) -> Option<Vec<u8>> {
    let (w, h) = img.dimensions();
    let border: Vec<u8> = (0..w)
        .flat_map(|x| [img.get_pixel(x, 0)[0], img.get_pixel(x, h - 1)[0]])
        .chain((0..h).flat_map(|y| [img.get_pixel(0, y)[0], img.get_pixel(w - 1, y)[0]]))
        .collect();
    let light_background =
        border.iter().map(|&p| p as u32).sum::<u32>() / border.len().max(1) as u32 > 127;
    let mut g = img.clone();
    if light_background {
        g.pixels_mut().for_each(|p| p[0] = 255 - p[0]);
    }
    let max = g.pixels().map(|p| p[0]).max().unwrap_or(0);
    let min = g.pixels().map(|p| p[0]).min().unwrap_or(0);
    // No ink: a blank (or nearly uniform) image holds no digit to classify.
    if max.saturating_sub(min) < MIN_CONTRAST {
        return None;
    }
    let threshold = (max as u32 / 4) as u8;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in g.enumerate_pixels() {
        if p[0] > threshold {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    let mut out = vec![0u8; MNIST_SIDE * MNIST_SIDE];
    if x1 < x0 {
        return None;
    }
    let crop = image::imageops::crop_imm(&g, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let scale = 20.0 / crop.width().max(crop.height()) as f64;
    let (nw, nh) = (
        ((crop.width() as f64 * scale).round() as u32).max(1),
        ((crop.height() as f64 * scale).round() as u32).max(1),
    );
    let small = image::imageops::resize(&crop, nw, nh, image::imageops::FilterType::Triangle);
    let (mut mx, mut my, mut mass) = (0.0, 0.0, 0.0);
    for (x, y, p) in small.enumerate_pixels() {
        let v = p[0] as f64;
        (mx, my, mass) = (mx + v * x as f64, my + v * y as f64, mass + v);
    }
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (nw as f64 / 2.0, nh as f64 / 2.0)
    };
    let (ox, oy) = ((14.0 - cx).round() as i64, (14.0 - cy).round() as i64);
    for (x, y, p) in small.enumerate_pixels() {
        let (tx, ty) = (x as i64 + ox, y as i64 + oy);
        if (0..28).contains(&tx) && (0..28).contains(&ty) {
            out[ty as usize * MNIST_SIDE + tx as usize] = p[0];
        }
    }
    Some(out)
}

/// Class probabilities of one image (28 x 28 u8 pixels) under a stored model.
pub fn probabilities(m: &StoredModel, pixels: &[u8]) -> Result<Vec<f64>> {
    fn run<F: Real>(m: &StoredModel, pixels: &[u8]) -> Result<Vec<f64>> {
        let model =
            Mlp::<F>::from_snapshot(&m.params, m.config.model.activation).ok_or_else(|| {
                Error::internal(format!(
                    "run {}: checked weights did not build a model",
                    m.run_id
                ))
            })?;
        let sizes = model.sizes();
        if sizes[0] != pixels.len() {
            return Err(Error::Usage(format!(
                "run {} takes {} inputs; an image gives {}",
                m.run_id,
                sizes[0],
                pixels.len()
            )));
        }
        let x = Array2::from_shape_fn((1, pixels.len()), |(_, i)| {
            F::from_f64(pixels[i] as f64 / 255.0)
        });
        let mut ws = Workspace::<F>::for_eval(&sizes, 1);
        ws.load(x.view(), &[0]);
        ws.forward(&model);
        Ok(ws
            .output()
            .row(0)
            .iter()
            .map(|&p| Real::to_f64(p))
            .collect())
    }
    match m.params.dtype {
        Dtype::F32 => run::<f32>(m, pixels),
        Dtype::F64 => run::<f64>(m, pixels),
    }
}

/// Can the stored model classify anything? A diverged run's weights cannot.
pub fn usable(m: &StoredModel) -> Result<()> {
    if m.status == RunStatus::Diverged {
        return Err(Error::Usage(format!(
            "run {} diverged (its loss was not finite at epoch {}): its weights predict nothing meaningful",
            m.run_id,
            m.diverged_epoch.map_or("?".into(), |e| e.to_string())
        )));
    }
    Ok(())
}

/// Classify an image file with a stored model: the class probabilities of its MNIST-like pixels.
/// A diverged run, or weights whose output is not a probability distribution, give an error, not numbers.
pub fn predict_file(m: &StoredModel, path: &Path) -> Result<Vec<f64>> {
    usable(m)?;
    let img = decode_picture(path)?;
    let pixels = mnist_like(&img).ok_or_else(|| {
        Error::Usage(format!(
            "no digit found in {}: the image is blank (or its ink differs from its background by less \
             than {MIN_CONTRAST} of 255 levels)",
            path.display()
        ))
    })?;
    let p = probabilities(m, &pixels)?;
    if p.iter().any(|v| !v.is_finite()) {
        return Err(Error::Usage(format!(
            "run {}: its {} weights give non-finite probabilities for {} (weights holding NaN or infinity)",
            m.run_id,
            m.kind.as_str(),
            path.display()
        )));
    }
    Ok(p)
}

/// The `k` most probable classes, most probable first (ties: the lower class first).
pub fn top_k(p: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|c| (c, p[c])).collect()
}
