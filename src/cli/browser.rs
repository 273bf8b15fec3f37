//! A headless Chromium driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON
//! messages ended by a NUL byte on file descriptors 3 and 4), for `runner bench --ui`: load a page, wait
//! until it says it is ready, read what it measured. No WebSocket and no crate: two pipes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Where Chromium is: `MLP_RUNNER_CHROMIUM`, else the first of the usual names on PATH.
pub fn find() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("MLP_RUNNER_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The flags a headless Chromium needs here (as root, in a sandbox without D-Bus or a GPU, on a closed
/// network).
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

#[cfg(unix)]
unsafe extern "C" {
    fn dup2(old: i32, new: i32) -> i32;
}

/// Give the child `commands` as its file descriptor 3 and `events` as 4 (what `--remote-debugging-pipe`
/// reads and writes).
#[cfg(unix)]
fn pipes_as_3_and_4(
    cmd: &mut Command,
    commands: &std::io::PipeReader,
    events: &std::io::PipeWriter,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (r_fd, w_fd) = (commands.as_raw_fd(), events.as_raw_fd());
    // SAFETY: dup2 is async-signal-safe; it only renumbers the two pipe ends the child inherits.
    unsafe {
        cmd.pre_exec(move || {
            if dup2(r_fd, 3) < 0 || dup2(w_fd, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Chromium's pipe mode reads file descriptors 3 and 4, which Windows processes do not inherit.
#[cfg(not(unix))]
fn pipes_as_3_and_4(
    _: &mut Command,
    _: &std::io::PipeReader,
    _: &std::io::PipeWriter,
) -> Result<()> {
    bail!(
        "driving Chromium (runner bench --ui) needs Unix file descriptors 3 and 4 for its DevTools pipe; \
         run it on Linux or macOS (the dashboard itself, runner ui, works here)"
    )
}

pub struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: BufReader<std::io::PipeReader>,
    next: u64,
    session: Option<String>,
    /// The browser's own profile folder, removed when it stops.
    profile: std::path::PathBuf,
}

impl Browser {
    pub fn start(chromium: &std::path::Path) -> Result<Browser> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let profile = std::env::temp_dir().join(format!(
            "mlp-runner-chromium-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&profile)?;
        let (cmd_r, cmd_w) = std::io::pipe()?;
        let (evt_r, evt_w) = std::io::pipe()?;
        let mut cmd = Command::new(chromium);
        cmd.args(FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        pipes_as_3_and_4(&mut cmd, &cmd_r, &evt_w)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", chromium.display()))?;
        drop((cmd_r, evt_w));
        let mut b = Browser {
            child,
            to: cmd_w,
            from: BufReader::new(evt_r),
            next: 0,
            session: None,
            profile,
        };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({ "targetId": id, "flatten": true }),
        )?;
        b.session = attached["sessionId"].as_str().map(String::from);
        Ok(b)
    }

    /// Send a command and wait for its answer (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.to.write_all(msg.to_string().as_bytes())?;
        self.to.write_all(&[0])?;
        self.to.flush()?;
        loop {
            let mut buf = Vec::new();
            if self.from.read_until(0, &mut buf)? == 0 {
                bail!("Chromium closed its DevTools pipe");
            }
            buf.pop();
            let v: Value = serde_json::from_slice(&buf)?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("DevTools {method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        )?;
        Ok(r["result"]["value"].clone())
    }

    pub fn navigate(&mut self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({ "url": url }))?;
        Ok(())
    }

    /// Wait until `expr` is truthy (polling every 10 ms), up to `limit`.
    pub fn wait_for(&mut self, expr: &str, limit: Duration) -> Result<Value> {
        let start = Instant::now();
        loop {
            let v = self.eval(expr)?;
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return Ok(v);
            }
            if start.elapsed() > limit {
                bail!("the page did not get to `{expr}` within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
