//! Property tests: no input makes the IDX reader or the spec parser panic; they return errors instead.

use std::path::Path;

use mlp_runner::core::data::{
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx_images, parse_idx_labels,
};
use mlp_runner::sweep::spec;
use proptest::prelude::*;

/// A header that is valid apart from its fields, so that the search reaches past the magic check.
fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    dims.iter()
        .for_each(|d| v.extend_from_slice(&d.to_be_bytes()));
    v
}

const VALID_SPEC: &str = "name = \"x\"\n[data]\nlimit_train = 100\n[model]\nsizes = [784, 32, 10]\n\
                          activation = \"tanh\"\n[train]\nseed = 1\nbatch_size = 10\nlearning_rate = 0.1\n\
                          epochs = 2\n[sweep]\n\"train.seed\" = [1, 2]\n\"model.sizes\" = [[784, 10]]\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn idx_images_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_idx_images(&bytes, Path::new("fuzz"));
    }

    #[test]
    fn idx_headers_never_panic(n in any::<u32>(), rows in any::<u32>(), cols in any::<u32>(),
                               body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut bytes = header(IDX_IMAGES_MAGIC, &[n, rows, cols]);
        bytes.extend_from_slice(&body);
        if let Ok(split) = parse_idx_images(&bytes, Path::new("fuzz")) {
            prop_assert_eq!(split.images.len() as u64, n as u64 * rows as u64 * cols as u64);
        }
        let mut labels = header(IDX_LABELS_MAGIC, &[n]);
        labels.extend_from_slice(&body);
        if let Ok(l) = parse_idx_labels(&labels, Path::new("fuzz")) {
            prop_assert!(l.iter().all(|&x| x < 10));
        }
    }

    #[test]
    fn spec_text_never_panics(text in "\\PC{0,300}") {
        let _ = spec::parse(&text, "fuzz.toml", "fuzz");
    }

    #[test]
    fn mutated_specs_never_panic(pos in 0usize..VALID_SPEC.len(), replacement in "[ -~\\n]{0,6}") {
        let mut text = VALID_SPEC.to_string();
        let pos = (0..=pos).rev().find(|&p| text.is_char_boundary(p)).unwrap_or(0);
        text.replace_range(pos..(pos + 1).min(text.len()), &replacement);
        if let Ok(e) = spec::parse(&text, "fuzz.toml", "fuzz") {
            prop_assert!(!e.runs.is_empty());
            for r in &e.runs {
                prop_assert!(r.config.validate().is_ok());
            }
        }
    }
}
