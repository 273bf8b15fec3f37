//! The dashboard's HTTP/1.1 server: small, synchronous, for one local user, and safe against the web
//! pages that user visits meanwhile.
//!
//! - **Bounded.** At most [`MAX_CONNECTIONS`] connections at once (one thread each; the next gets `503`
//!   and is closed), each closed after [`IDLE`] without a request, a request line and headers of at most
//!   [`MAX_HEAD`] bytes (`431` beyond), a body never read (`GET` has none; `405` for anything else).
//! - **Fast on keep-alive.** `TCP_NODELAY`, and every response written with one `write` (head and body
//!   together), so a response is never held back by Nagle's algorithm waiting for a delayed ACK.
//! - **No DNS rebinding.** A request is answered only when its `Host` is the bound address, `127.0.0.1`,
//!   `localhost` or `[::1]` with the bound port (any IP address literal when bound to all interfaces);
//!   any other name is `421`: a page of another site, its name rebound to 127.0.0.1, cannot read the store.
//! - Lines may end with CRLF or a bare LF.
//!
//! Routing and answers are the caller's ([`super::answer`]); this module only speaks HTTP.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Connections served at once; the next one is told `503` and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(15);
/// The most bytes of request line and headers read.
pub const MAX_HEAD: usize = 16 * 1024;

/// A request as the router needs it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub host: Option<String>,
}

/// A response: status, headers, body. `Content-Length` and `Connection` are added when it is written.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, msg: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: msg.as_bytes().to_vec(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The whole response as bytes: one write.
fn encode(r: &Response, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status)).into_bytes();
    for (k, v) in &r.headers {
        // Header values come from this program; a line break in one would split the response.
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"Connection: close\r\n\r\n".as_slice()
    });
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

/// Is `host` (a `Host` header) one this server answers to, bound to `bound`?
pub fn host_allowed(host: &str, bound: SocketAddr) -> bool {
    let host = host.trim().to_ascii_lowercase();
    // Split off the port: `[::1]:8000`, `127.0.0.1:8000`, `localhost:8000`, or no port (80).
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, tail)) => (addr.to_string(), tail.strip_prefix(':').map(str::to_string)),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n.to_string(), Some(p.to_string())),
            Some(_) => return false,
            None => (host.clone(), None),
        }
    };
    let port_ok = match port {
        Some(p) => p.parse::<u16>().ok() == Some(bound.port()),
        None => bound.port() == 80,
    };
    if !port_ok {
        return false;
    }
    if name == "localhost" {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// Read one request's head from `reader`. `Ok(None)`: the peer closed (or went idle) between requests.
fn read_head<R: BufRead>(reader: &mut R) -> std::result::Result<Option<Vec<String>>, u16> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let limit = (MAX_HEAD + 1 - total) as u64;
        let n = match std::io::Read::take(&mut *reader, limit).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return if lines.is_empty() && line.is_empty() {
                    Ok(None)
                } else {
                    Err(408)
                };
            }
            Err(_) => return Ok(None),
        };
        total += n;
        if n == 0 {
            // The peer closed: between requests that is the end; in a head it is a broken request.
            return if lines.is_empty() { Ok(None) } else { Err(400) };
        }
        if total > MAX_HEAD {
            return Err(431);
        }
        if !line.ends_with(b"\n") {
            return Err(431);
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if text.is_empty() {
            if lines.is_empty() {
                // Blank lines before a request line are ignored (RFC 9112, 2.2).
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(text);
    }
}

fn parse(lines: &[String]) -> Option<(Request, bool)> {
    let mut parts = lines.first()?.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.0");
    let mut host = None;
    let mut connection = String::new();
    for l in &lines[1..] {
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "host" => host = Some(v.trim().to_string()),
            "connection" => connection = v.trim().to_ascii_lowercase(),
            _ => {}
        }
    }
    let keep_alive = if version == "HTTP/1.1" {
        !connection.contains("close")
    } else {
        connection.contains("keep-alive")
    };
    Some((
        Request {
            method,
            target,
            host,
        },
        keep_alive,
    ))
}

/// Serve one connection until it closes, goes idle, or `stop`.
fn connection(
    stream: TcpStream,
    bound: SocketAddr,
    stop: &AtomicBool,
    handle: &(dyn Fn(&Request) -> Response + Sync),
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::SeqCst) {
        let lines = match read_head(&mut reader) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(status) => {
                let r = Response::text(status, "bad request");
                let _ = writer.write_all(&encode(&r, false, false));
                return close(&writer, reader);
            }
        };
        let Some((request, keep_alive)) = parse(&lines) else {
            let r = Response::text(400, "bad request");
            let _ = writer.write_all(&encode(&r, false, false));
            return close(&writer, reader);
        };
        let response = match &request.host {
            Some(h) if host_allowed(h, bound) => handle(&request),
            _ => Response::text(
                421,
                "this server answers only requests for its own address (127.0.0.1, localhost or [::1] \
                 with its port): a request naming another host is refused, so that other web pages \
                 cannot read the store",
            ),
        };
        let head_only = request.method == "HEAD";
        if writer
            .write_all(&encode(&response, head_only, keep_alive))
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

/// Close a connection after an error answer without losing the answer: a socket closed with unread
/// input (the rest of an oversized request) is reset, and a reset can reach the client before the answer
/// does. So: no more writes, then what the client still sends is read and dropped (up to a bound, briefly).
fn close(writer: &TcpStream, mut reader: BufReader<TcpStream>) {
    let _ = writer.shutdown(std::net::Shutdown::Write);
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)));
    let _ = std::io::copy(
        &mut std::io::Read::take(&mut reader, 1 << 20),
        &mut std::io::sink(),
    );
}

/// A listening server: an accepting thread and a thread per connection.
pub struct Listener {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Listen on `addr` and answer every request with `handle` (called from many threads at once).
    pub fn start(
        addr: SocketAddr,
        handle: Arc<dyn Fn(&Request) -> Response + Send + Sync>,
    ) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&stop);
        let acceptor = std::thread::spawn(move || {
            // Blocking accepts; `stop` wakes this thread with a connection of its own.
            while !s.load(Ordering::SeqCst) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let mut stream = stream;
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let r = Response::text(503, "too many connections; try again");
                    let _ = stream.write_all(&encode(&r, false, false));
                    continue;
                }
                open.fetch_add(1, Ordering::SeqCst);
                let (open, stop, handle) = (Arc::clone(&open), Arc::clone(&s), Arc::clone(&handle));
                std::thread::spawn(move || {
                    connection(stream, bound, &stop, handle.as_ref());
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Listener {
            addr: bound,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Stop accepting; connections end at their next request or idle timeout.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept (an unspecified bound address is reached on loopback).
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                SocketAddr::V6(_) => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_own_names_are_answered() {
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LOCALHOST:8000",
            "[::1]:8000",
        ] {
            assert!(host_allowed(ok, local), "{ok}");
        }
        for bad in [
            "attacker.example:8000",
            "127.0.0.1:8001",
            "localhost",
            "127.0.0.1.nip.io:8000",
            "[::1]",
            "",
            "127.0.0.1:8000:1",
        ] {
            assert!(!host_allowed(bad, local), "{bad}");
        }
        let all: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert!(host_allowed("192.168.1.20:9000", all));
        assert!(!host_allowed("evil.example:9000", all));
        let web: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(host_allowed("localhost", web));
    }

    #[test]
    fn heads_end_with_crlf_or_a_bare_lf() {
        let mut crlf = BufReader::new(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        assert_eq!(read_head(&mut crlf).unwrap().unwrap().len(), 2);
        let mut lf = BufReader::new(&b"GET / HTTP/1.1\nHost: x\n\n"[..]);
        let (r, keep) = parse(&read_head(&mut lf).unwrap().unwrap()).unwrap();
        assert_eq!(
            (r.method.as_str(), r.host.as_deref(), keep),
            ("GET", Some("x"), true)
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(read_head(&mut BufReader::new(huge.as_bytes())), Err(431));
        let mut closed = BufReader::new(&b""[..]);
        assert_eq!(read_head(&mut closed), Ok(None));
    }
}
