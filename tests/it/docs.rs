//! The documents' quoted outputs against a fresh run. Every block of `README.md` and `docs/*.md` marked
//! `<!-- checked -->` (on the line before its fence) is run in a fresh workspace, command by command, and
//! its quoted output compared with what the binary prints now; a hash quoted in prose (`2fb4260e...`)
//! must be a hash the fresh stores hold. Timings are the one exemption: table columns whose name holds
//! `seconds` and `<number> s` in text are masked. So a figure that goes stale fails this test.
//!
//! A file opts in with `<!-- checked-workspace: NAME -->`: files of one workspace share its folder and
//! store, in the order README.md then docs/*.md by name. A block marked `<!-- checked workspace=NAME -->`
//! runs in workspace NAME instead of its file's (a README section about another experiment's store). In a block, `$ ` starts a command: `runner ...`
//! (this build's binary), `sqlite3 DB "SQL"` (an edit, run through SQLite here, so the host needs no
//! shell), `cp A B`, `echo $?`. A line `...` stands for any number of lines; a line ending in `...`
//! for any line that starts with the rest.
//!
//! `MLP_RUNNER_BLESS=1` (what `.ci/regen-docs` sets) rewrites every block that differs with the fresh
//! output instead of failing: the script that regenerates the quoted figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::runner;

const BLESS_ENV: &str = "MLP_RUNNER_BLESS";

/// A checked block: where it is, and its commands with their quoted outputs.
#[derive(Debug, Clone)]
struct Block {
    file: PathBuf,
    /// 0-based line index of the block's first line inside the fence, and one past its last.
    start: usize,
    end: usize,
    steps: Vec<(String, Vec<String>)>,
    /// The block's own workspace (`<!-- checked workspace=NAME -->`), if not its file's.
    workspace: Option<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents in the order their workspaces run them.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

fn workspace_of(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("<!-- checked-workspace:")
            .and_then(|r| r.strip_suffix("-->"))
            .map(|n| n.trim().to_string())
    })
}

fn blocks(file: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let marker = lines[i].trim();
        let own = marker
            .strip_prefix("<!-- checked workspace=")
            .and_then(|r| r.strip_suffix("-->"))
            .map(|n| n.trim().to_string());
        if marker == "<!-- checked -->" || own.is_some() {
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "{}:{}: `<!-- checked -->` must be followed by a fence",
                file.display(),
                i + 1
            );
            let start = i + 2;
            let end = (start..lines.len())
                .find(|&j| lines[j].starts_with("```"))
                .unwrap_or_else(|| panic!("{}:{}: unclosed fence", file.display(), i + 2));
            let mut steps: Vec<(String, Vec<String>)> = Vec::new();
            for l in &lines[start..end] {
                match l.strip_prefix("$ ") {
                    Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
                    None => match steps.last_mut() {
                        Some(s) => s.1.push(l.to_string()),
                        None => panic!(
                            "{}:{}: a checked block starts with a `$ ` command",
                            file.display(),
                            start + 1
                        ),
                    },
                }
            }
            out.push(Block {
                file: file.to_path_buf(),
                start,
                end,
                steps,
                workspace: own,
            });
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Words of a command line: blanks separate them; single or double quotes group.
fn words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in cmd.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A fresh folder that looks like a clone: `experiments` and `data` are the repository's.
fn new_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["experiments", "data"] {
        std::os::unix::fs::symlink(repo().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// Run one command of a block in `ws`; its output lines (standard output, then standard error).
fn execute(ws: &Path, cmd: &str, last: &mut i32) -> Vec<String> {
    let w = words(cmd);
    let lines = |s: &str| -> Vec<String> { s.lines().map(str::to_string).collect() };
    match w.first().map(String::as_str) {
        Some("runner") => {
            let args: Vec<&str> = w[1..].iter().map(String::as_str).collect();
            let out = runner(ws, &args);
            *last = out.code;
            let mut l = lines(&out.stdout);
            l.extend(lines(&out.stderr));
            l
        }
        Some("sqlite3") => {
            let conn = rusqlite::Connection::open(ws.join(&w[1])).unwrap();
            conn.execute_batch(&w[2]).unwrap();
            *last = 0;
            Vec::new()
        }
        Some("cp") => {
            std::fs::copy(ws.join(&w[1]), ws.join(&w[2])).unwrap();
            *last = 0;
            Vec::new()
        }
        Some("echo") if w.get(1).map(String::as_str) == Some("$?") => vec![last.to_string()],
        _ => panic!("a checked block runs `runner`, `sqlite3`, `cp` and `echo $?`, not `{cmd}`"),
    }
}

/// A table's column spans (from its line of dashes), and which of them hold timings.
type Columns = (Vec<(usize, usize)>, Vec<bool>);

/// A line as compared: timings masked, tables cell by cell (so widths do not matter).
fn normalize(lines: &[String]) -> Vec<String> {
    let time = regex_lite_time;
    let mut out = Vec::with_capacity(lines.len());
    // The column spans and which columns are timings, while inside a table.
    let mut table: Option<Columns> = None;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_end();
        let dashes = !line.is_empty()
            && line.split("  ").all(|p| {
                let p = p.trim();
                p.is_empty() || p.chars().all(|c| c == '-')
            })
            && line.contains('-');
        if dashes && i > 0 {
            let spans: Vec<(usize, usize)> = span_of(line);
            let header = lines[i - 1].trim_end();
            let timed: Vec<bool> = spans
                .iter()
                .map(|&(a, b)| cut(header, a, b).contains("seconds"))
                .collect();
            // The header line was pushed as text: make it cells.
            out.pop();
            out.push(cells(header, &spans, &vec![false; spans.len()]));
            out.push("---".to_string());
            table = Some((spans, timed));
            continue;
        }
        if line.is_empty() {
            table = None;
        }
        match &table {
            Some((spans, timed)) if line != "..." && !line.ends_with("...") => {
                out.push(cells(line, spans, timed));
            }
            _ => out.push(time(line)),
        }
    }
    out
}

fn span_of(dashes: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in dashes.char_indices() {
        match (c, start) {
            ('-', None) => start = Some(i),
            (' ', Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, dashes.len()));
    }
    spans
}

/// The text of `line` in a column: from its start to the next column's start.
fn cut(line: &str, a: usize, b: usize) -> String {
    let chars: Vec<char> = line.chars().collect();
    let b = b.min(chars.len());
    if a >= chars.len() {
        return String::new();
    }
    chars[a..b].iter().collect::<String>().trim().to_string()
}

fn cells(line: &str, spans: &[(usize, usize)], timed: &[bool]) -> String {
    let n = spans.len();
    (0..n)
        .map(|k| {
            let a = spans[k].0;
            // A cell may be wider than its dashes only in the last column.
            let b = if k + 1 < n {
                spans[k + 1].0
            } else {
                usize::MAX
            };
            if timed[k] {
                "~".to_string()
            } else {
                cut(line, a, b)
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `1.23 s`, `0.5 ms`, `12 s` in text: masked.
fn regex_lite_time(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let start_ok = i == 0 || !chars[i - 1].is_alphanumeric() && chars[i - 1] != '.';
        if start_ok && chars[i].is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let rest = &chars[j..];
            let unit_at = |u: &str| {
                let n = u.chars().count();
                rest.len() >= n
                    && rest[..n].iter().copied().eq(u.chars())
                    && rest.get(n).is_none_or(|c| !c.is_alphanumeric())
            };
            let unit = [" ms", " s"].into_iter().find(|u| unit_at(u));
            if let Some(u) = unit {
                out.push('~');
                out.push_str(u);
                i = j + u.len();
                continue;
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The fresh output shaped as the document quoted the old one: each quoted line replaced by the fresh line
/// with the same first word (a run id, a field name), the `...` elisions kept, fresh lines that nothing
/// quoted kept unless an elision covers them. What a regeneration writes back, so that the elisions a
/// writer chose survive it.
fn restructure(expected: &[String], actual: &[String]) -> Vec<String> {
    let key = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
    let mut out = Vec::new();
    let mut j = 0;
    let mut wild = false;
    for e in expected {
        if e == "..." {
            out.push(e.clone());
            wild = true;
            continue;
        }
        let found = (j..actual.len()).find(|&k| key(&actual[k]) == key(e));
        if let Some(k) = found {
            if !wild {
                out.extend(actual[j..k].iter().cloned());
            }
            // A line the document cut short on purpose (`...` at its end) stays so while it fits.
            if e.ends_with("...") && line_fits(e, &actual[k]) {
                out.push(e.clone());
            } else {
                out.push(actual[k].clone());
            }
            j = k + 1;
            wild = false;
        }
    }
    if !wild {
        out.extend(actual[j..].iter().cloned());
    }
    out
}

/// Does `actual` fit `expected`, whose `...` lines stand for any lines?
fn fits(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e == "..." => (0..=actual.len()).any(|k| fits(rest, &actual[k..])),
        Some((e, rest)) => match actual.split_first() {
            Some((a, more)) => line_fits(e, a) && fits(rest, more),
            None => false,
        },
    }
}

fn line_fits(expected: &str, actual: &str) -> bool {
    match expected.strip_suffix("...") {
        Some(prefix) if !prefix.trim().is_empty() => actual.starts_with(prefix.trim_end()),
        _ => expected == actual,
    }
}

/// Every 64-digit hex word in the text of the stores of a workspace: what a quoted hash may be.
fn hashes(ws: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for db in std::fs::read_dir(ws.join("results")).into_iter().flatten() {
        let p = db.unwrap().path();
        if p.extension().is_none_or(|x| x != "db") {
            continue;
        }
        let conn = rusqlite::Connection::open(&p).unwrap();
        let cols = [
            "config_hash",
            "dataset_sha256",
            "init_weights_sha256",
            "weights_sha256",
            "result_sha256",
            "seed_group",
        ];
        for c in cols {
            let mut stmt = conn
                .prepare(&format!("SELECT {c} FROM runs WHERE {c} IS NOT NULL"))
                .unwrap();
            out.extend(
                stmt.query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .map(Result::unwrap),
            );
        }
    }
    out
}

/// Hex words quoted in prose as hashes: `1234abcd...` (8 or more digits, then `...`) and whole 64-digit
/// words, outside checked blocks.
fn quoted_hashes(text: &str, checked: &[(usize, usize)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if checked.iter().any(|&(a, b)| n >= a && n < b) {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_ascii_hexdigit() && (i == 0 || !chars[i - 1].is_alphanumeric()) {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                let dotted = chars[j..].iter().take(3).collect::<String>() == "...";
                let hexy = word.chars().any(|c| c.is_ascii_digit())
                    && word.chars().any(|c| c.is_ascii_alphabetic())
                    && word.chars().all(|c| !c.is_ascii_uppercase());
                let whole = word.len() == 64 && (j == chars.len() || !chars[j].is_alphanumeric());
                if hexy && ((dotted && word.len() >= 8) || whole) {
                    out.push((n + 1, word));
                }
                i = j;
            } else {
                i += 1;
            }
        }
    }
    out
}

#[test]
fn quoted_outputs_match_a_fresh_run() {
    let bless = std::env::var(BLESS_ENV).is_ok_and(|v| v == "1");
    let docs = documents();
    // The blocks of each workspace, in document order.
    let mut spaces: BTreeMap<String, Vec<Block>> = BTreeMap::new();
    let mut texts: Vec<(PathBuf, String)> = Vec::new();
    for d in &docs {
        let text = std::fs::read_to_string(d).unwrap();
        let file_space = workspace_of(&text);
        for block in blocks(d, &text) {
            let ws = block.workspace.clone().or(file_space.clone());
            let ws = ws.unwrap_or_else(|| {
                panic!(
                    "{}: checked blocks need a `<!-- checked-workspace: NAME -->`",
                    d.display()
                )
            });
            spaces.entry(ws).or_default().push(block);
        }
        texts.push((d.clone(), text));
    }
    assert!(!spaces.is_empty(), "no document has checked blocks");
    // Each workspace on a thread of its own: they train different specs.
    type Outcome = (Vec<String>, Vec<(Block, Vec<String>)>, Vec<String>);
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = spaces
            .iter()
            .map(|(name, space)| {
                s.spawn(move || {
                    let ws = new_workspace();
                    let mut failures = Vec::new();
                    let mut fresh = Vec::new();
                    let mut last = 0;
                    {
                        for block in space {
                            let file = &block.file;
                            let mut actual_block = Vec::new();
                            let mut ok = true;
                            for (cmd, expected) in &block.steps {
                                let actual = execute(ws.path(), cmd, &mut last);
                                if !fits(&normalize(expected), &normalize(&actual)) {
                                    ok = false;
                                    failures.push(format!(
                                        "{}:{} (workspace {name}): `{cmd}` printed\n{}\n--- where the \
                                         document quotes\n{}\n",
                                        file.display(),
                                        block.start + 1,
                                        actual.join("\n"),
                                        expected.join("\n")
                                    ));
                                    actual_block.push(format!("$ {cmd}"));
                                    actual_block.extend(restructure(expected, &actual));
                                } else {
                                    actual_block.push(format!("$ {cmd}"));
                                    actual_block.extend(expected.iter().cloned());
                                }
                            }
                            if !ok {
                                fresh.push((block.clone(), actual_block));
                            }
                        }
                    }
                    (failures, fresh, hashes(ws.path()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures: Vec<String> = Vec::new();
    let mut fresh: Vec<(Block, Vec<String>)> = Vec::new();
    let mut known: Vec<String> = Vec::new();
    for (f, b, h) in results {
        failures.extend(f);
        fresh.extend(b);
        known.extend(h);
    }
    // Hashes quoted in prose must be hashes of the fresh stores.
    for (file, text) in &texts {
        let checked: Vec<(usize, usize)> = blocks(file, text)
            .iter()
            .map(|b| (b.start, b.end))
            .collect();
        for (line, word) in quoted_hashes(text, &checked) {
            if !known.iter().any(|h| h.starts_with(&word)) {
                failures.push(format!(
                    "{}:{line}: `{word}` is quoted as a hash, and no fresh run has it",
                    file.display()
                ));
            }
        }
    }
    if bless && !fresh.is_empty() {
        // Rewrite each file's differing blocks, last first so that line numbers hold.
        fresh.sort_by(|a, b| (&a.0.file, b.0.start).cmp(&(&b.0.file, a.0.start)));
        let mut by_file: BTreeMap<PathBuf, Vec<(Block, Vec<String>)>> = BTreeMap::new();
        for (b, lines) in fresh {
            by_file.entry(b.file.clone()).or_default().push((b, lines));
        }
        for (file, mut edits) in by_file {
            edits.sort_by_key(|(b, _)| std::cmp::Reverse(b.start));
            let text = std::fs::read_to_string(&file).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for (b, new) in edits {
                lines.splice(b.start..b.end, new);
            }
            std::fs::write(&file, lines.join("\n") + "\n").unwrap();
            eprintln!("rewrote {}", file.display());
        }
        return;
    }
    assert!(
        failures.is_empty(),
        "{} quoted outputs differ from a fresh run (regenerate them with .ci/regen-docs, then read the \
         diff):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_document_checker_masks_timings_and_matches_wildcards() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let doc = s(&[
        "run_id  test_acc  seconds",
        "------  --------  -------",
        "     1     0.978     3.80",
        "...",
        "",
        "epoch 1/3  1.23 s",
        "weights_sha256  2fb4260e...",
    ]);
    let now = s(&[
        "run_id  test_acc  seconds",
        "------  --------  -------",
        "     1     0.978    13.87",
        "     2     0.979     3.81",
        "",
        "epoch 1/3  0.98 s",
        "weights_sha256  2fb4260e6ea5",
    ]);
    assert!(fits(&normalize(&doc), &normalize(&now)));
    let mut stale = now.clone();
    stale[2] = "     1     0.977     3.80".into();
    assert!(!fits(&normalize(&doc), &normalize(&stale)));
    let mut hash = now.clone();
    hash[6] = "weights_sha256  6d73875d4888".into();
    assert!(!fits(&normalize(&doc), &normalize(&hash)));
    assert_eq!(
        quoted_hashes("run 5: `2fb4260e...`, not `cafe...` or 12345678", &[]),
        vec![(1, "2fb4260e".to_string())]
    );
    assert_eq!(
        words(r#"runner ls --where "test_acc > 0.97" 'a b'"#),
        s(&["runner", "ls", "--where", "test_acc > 0.97", "a b"])
    );
}

/// GitHub's anchor of a heading: lower case, punctuation dropped (but `-` and `_`), blanks as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn links_between_pages_lead_somewhere() {
    let mut files = documents();
    files.push(repo().join("CHANGELOG.md"));
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            let mut rest = line;
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let Some(end) = after.find(')') else { break };
                let target = &after[..end];
                rest = &after[end..];
                if target.starts_with("http") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !dest.exists() {
                    broken.push(format!(
                        "{}:{}: `{target}`: no such file",
                        file.display(),
                        n + 1
                    ));
                    continue;
                }
                if !anchor.is_empty() {
                    let body = std::fs::read_to_string(&dest).unwrap_or_default();
                    let found = body
                        .lines()
                        .filter_map(|l| l.strip_prefix('#'))
                        .map(|h| slug(h.trim_start_matches('#')))
                        .any(|s| s == anchor);
                    if !found {
                        broken.push(format!(
                            "{}:{}: `{target}`: {} has no heading with that anchor",
                            file.display(),
                            n + 1,
                            dest.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
