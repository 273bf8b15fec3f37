//! Small text helpers every layer uses: hex digests, "did you mean" suggestions, and rendering of
//! untrusted text (names, paths, SQL results) so that control characters never reach a terminal raw.
//!
//! Imports nothing from the crate.

use std::fmt::Write as _;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `s` with every control character (newlines, escapes, ...) and Unicode direction override written as a
/// visible escape (`\n`, `\u{1b}`), so that untrusted text prints on one line and cannot drive a terminal.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if bad(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` cut to at most `max` characters, with a marker saying how many were left out.
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let n = s.chars().count();
    if n <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let keep: String = s.chars().take(max).collect();
    std::borrow::Cow::Owned(format!("{keep}...({} more characters)", n - max))
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Long words are no typo of a short name; and the distance is quadratic in the lengths.
    if word.len() > 200 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain name"), "plain name");
        assert_eq!(clean("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        assert_eq!(truncate("abcdef", 10), "abcdef");
        assert_eq!(truncate("abcdef", 3), "abc...(3 more characters)");
    }

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(nearest("verfy", &["verify", "sql"]), Some("verify"));
        assert_eq!(nearest("zzzzzz", &["verify", "sql"]), None);
    }
}
