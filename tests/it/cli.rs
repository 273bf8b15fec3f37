//! The command line as a new user meets it: misspelt and other-named commands, options given where they
//! do nothing, help, messages that name the key and the fix, output that fits a terminal, plots that say
//! when there is nothing to plot.

use crate::util::{runner, spec, tmp};

const TINY: &str = "name = \"tiny\"\n[data]\ndir = \"{MNIST}\"\nlimit_train = 1000\nlimit_test = 200\n\
                    [model]\nsizes = [784, 16, 10]\n[train]\nepochs = 2\n[sweep]\n\"train.seed\" = [1, 2]\n";

#[test]
fn commands_are_found_by_other_names_and_typos() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "tiny.toml", TINY);
    let db = d.join("t.db");
    let dbs = db.to_str().unwrap();
    runner(d, &[s.to_str().unwrap(), "--db", dbs]).ok();
    // `delete` is `rm`; `plto` is one swap from `plot`, not `plan`.
    let out = runner(d, &["delete", "2", "--db", dbs]);
    assert!(
        out.ok().stdout.contains("deleted 1 run (2)"),
        "{}",
        out.stdout
    );
    let out = runner(d, &["plto"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("did you mean `runner plot`?"),
        "{}",
        out.stderr
    );
    let out = runner(d, &["remove"]);
    assert!(
        out.stderr.contains("did you mean `runner rm`?"),
        "{}",
        out.stderr
    );
    // A file that is not TOML is not parsed as a spec.
    std::fs::write(d.join("README.md"), "# hello\n").unwrap();
    let out = runner(d, &["README.md", "--db", dbs]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("README.md is not a spec: a spec is a TOML file"),
        "{}",
        out.stderr
    );
    // A spec and a command at once, and options the command would ignore, are refused.
    let out = runner(d, &[s.to_str().unwrap(), "ls", "--db", dbs]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("give a spec to train or a command, not both"),
        "{}",
        out.stderr
    );
    for (args, needle) in [
        (vec!["--threads", "2", "ls"], "`runner ls` does not train"),
        (
            vec!["--db", dbs, "merge", dbs, "-o", "x.db"],
            "`runner merge` does not use a results database",
        ),
        (vec!["--force", "ls"], "--force is an option of training"),
    ] {
        let out = runner(d, &args);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    // The top-level --db still reaches a command that reads the store.
    let out = runner(d, &["--db", dbs, "ls", "--json"]);
    assert!(out.ok().stdout.contains("tiny/seed=1"));
    // Commands that do not train have no --threads; merge and data have no --db.
    for cmd in ["ls", "show", "compare", "merge", "data"] {
        let help = runner(d, &[cmd, "--help"]);
        assert!(!help.stdout.contains("--threads"), "{cmd}: {}", help.stdout);
    }
    for cmd in ["merge", "data"] {
        assert!(
            !runner(d, &[cmd, "--help"]).stdout.contains("--db"),
            "{cmd}"
        );
    }
    assert!(
        runner(d, &["verify", "--help"])
            .stdout
            .contains("--threads")
    );
    // Help about help, examples for data, a description for every positional argument.
    assert!(
        runner(d, &["help", "--help"])
            .ok()
            .stdout
            .contains("Usage: runner")
    );
    assert!(
        runner(d, &["data", "--help"])
            .ok()
            .stdout
            .contains("runner data info data/mnist")
    );
    for cmd in [
        "show", "export", "predict", "verify", "tag", "diff", "plan", "compare", "sql",
    ] {
        let help = runner(d, &[cmd, "--help"]).ok().stdout.clone();
        let args: Vec<&str> = help
            .split("Arguments:")
            .nth(1)
            .and_then(|a| a.split("Options:").next())
            .unwrap_or("")
            .lines()
            .filter(|l| l.trim_start().starts_with(['<', '[']))
            .collect();
        assert!(!args.is_empty(), "{cmd}: {help}");
        for a in args {
            assert!(
                a.split_whitespace().count() > 1,
                "{cmd}: `{a}` has no description"
            );
        }
    }
}

#[test]
fn messages_name_the_key_and_say_how_to_fix_it() {
    let dir = tmp();
    let d = dir.path();
    let db = d.join("t.db");
    let dbs = db.to_str().unwrap();
    for (body, needle) in [
        (
            "[data]\ndir = \"{MNIST}\"\nformat = \"png\"\n",
            "line 3, key `data.format`",
        ),
        (
            "[data]\ndir = \"{MNIST}\"\nformat = \"png\"\n",
            "this folder holds the MNIST IDX files: set format = \"idx\"",
        ),
        (
            "[train]\nepochs = 1.5\n",
            "expected a whole number >= 0 (e.g. 10)",
        ),
        (
            "[train]\nlearning_rate = \"fast\"\n",
            "expected a number (e.g. 0.1)",
        ),
        ("[train]\ndrop_last = 1\n", "expected true or false"),
        (
            "[data]\ndir = \"no/such/dir\"\n",
            "key `data.dir`: no/such/dir (relative to the working directory",
        ),
        (
            "[data]\ndir = \"{MNIST}\"\n[sweep]\n\"train.batch_size\" = [10, 100000]\n",
            "(in run `bad/batch_size=100000`)",
        ),
    ] {
        let s = spec(d, "bad.toml", body);
        let out = runner(d, &[s.to_str().unwrap(), "--db", dbs]);
        assert_eq!(out.code, 2, "{body}");
        assert!(out.stderr.contains(needle), "{body}: {}", out.stderr);
        assert!(!db.exists(), "{body}: a store was created");
    }
}

#[test]
fn output_fits_a_terminal_and_shows_dates_and_flags_as_such() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "tiny.toml", TINY);
    let out = runner(d, &[s.to_str().unwrap(), "--db", "t.db"]);
    for line in out.ok().stdout.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(
        out.stdout.contains("run 1 epoch 1/2  loss, acc: train"),
        "{}",
        out.stdout
    );
    let show = runner(d, &["show", "1", "--db", "t.db"]);
    let show = &show.ok().stdout;
    let field = |name: &str| {
        show.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .map(|l| l.trim_start()[name.len()..].trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {show}"))
    };
    let beat = field("heartbeat_at");
    assert!(
        beat.ends_with('Z') && beat.contains('T') && beat.starts_with("20"),
        "{beat}"
    );
    assert_eq!(field("drop_last"), "true");
    // show --csv: a header and one row (the resolved config is a quoted field with line breaks).
    let csv = runner(d, &["show", "tiny/seed=2", "--csv", "--db", "t.db"]);
    let text = &csv.ok().stdout;
    assert!(text.starts_with("id,experiment_id,name,status,"), "{text}");
    assert!(text.contains("\n2,1,tiny/seed=2,completed,"), "{text}");
    assert_eq!(text.matches("\n2,1,").count(), 1, "{text}");
    assert!(
        text.trim_end().ends_with(",tags") || text.contains("\"[data]\ndir = "),
        "{text}"
    );
}

#[test]
fn a_learning_rate_plot_of_one_learning_rate_says_so() {
    let dir = tmp();
    let d = dir.path();
    let s = spec(d, "tiny.toml", TINY);
    runner(d, &[s.to_str().unwrap(), "--db", "t.db"]).ok();
    let out = runner(d, &["plot", "--lr", "-o", "lr.png", "--db", "t.db"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("the learning rate does not vary: all 2 runs have 0.1"),
        "{}",
        out.stderr
    );
    assert!(!d.join("lr.png").exists());
    runner(d, &["plot", "-o", "curves.png", "--db", "t.db"]).ok();
    assert!(d.join("curves.png").exists());
}
