//! A blocking SMTP client for driving the gateway from tests: one command,
//! one reply (RFC 5321 §4.2 multi-line replies), dot-stuffed DATA (§4.5.2),
//! and replay of the `.smtp` case files, whose bytes go on the wire exactly.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// One SMTP reply, possibly of several lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, after the code and its separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// `CODE text-of-first-line`, e.g. `550 5.7.1 relaying denied`.
    pub fn line(&self) -> String {
        format!(
            "{} {}",
            self.code,
            self.lines.first().map(String::as_str).unwrap_or("")
        )
    }

    /// All lines' text joined by newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn starts_with(&self, prefix: &str) -> bool {
        self.line().starts_with(prefix)
    }

    /// Whether some line of a (EHLO) reply names the keyword `kw`.
    pub fn has_keyword(&self, kw: &str) -> bool {
        self.lines.iter().skip(1).any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(kw))
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}{sep}{l}", self.code)?;
        }
        Ok(())
    }
}

/// What was sent in one step of a replayed case and what came back.
#[derive(Clone, Debug)]
pub struct Step {
    /// The command line without CRLF, or `<data: N bytes>` for a data block.
    pub sent: String,
    pub reply: Reply,
}

/// The path of a case file in `tests/fixtures/cases/` from its id (`C01a`).
pub fn case_path(id: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cases");
    let prefix = format!("{id}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    found.sort();
    assert_eq!(
        found.len(),
        1,
        "exactly one case file for {id} in {}: {found:?}",
        dir.display()
    );
    found.remove(0)
}

/// Dot-stuffs message data and appends the end-of-data line. Lines are
/// delimited by CRLF (a `.` after a bare LF is not at a line start on the
/// wire, so it is left alone); data that does not end in CRLF gets one.
pub fn stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut at_line_start = true;
    for (i, &b) in data.iter().enumerate() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n' && i > 0 && data[i - 1] == b'\r';
    }
    if !data.is_empty() && !data.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

pub struct SmtpClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub greeting: Reply,
    ehlo: Option<Reply>,
}

impl SmtpClient {
    /// Connects from 127.0.0.1 (an outside client in the default config).
    pub fn connect(addr: SocketAddr) -> SmtpClient {
        Self::connect_from("127.0.0.1".parse().expect("literal IP"), addr)
    }

    /// Connects from `source` (any 127/8 address works on Linux loopback;
    /// 127.0.0.2 is an inside client in the default config) and reads the
    /// greeting.
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> SmtpClient {
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("TCP socket");
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .unwrap_or_else(|e| panic!("bind source address {source}: {e}"));
        socket
            .connect_timeout(&SockAddr::from(addr), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {source} -> {addr}: {e}"));
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        stream.set_nodelay(true).expect("set nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone stream"));
        let mut client = SmtpClient {
            stream,
            reader,
            greeting: Reply {
                code: 0,
                lines: vec![],
            },
            ehlo: None,
        };
        client.greeting = client.read_reply();
        assert_eq!(
            client.greeting.code, 220,
            "greeting from {addr}: {}",
            client.greeting
        );
        client
    }

    /// An inside client: connects from 127.0.0.2.
    pub fn connect_inside(addr: SocketAddr) -> SmtpClient {
        Self::connect_from("127.0.0.2".parse().expect("literal IP"), addr)
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set read timeout");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to gateway");
        self.stream.flush().expect("flush to gateway");
    }

    /// Reads one reply, or the I/O error (timeout, closed connection).
    pub fn try_read_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self.reader.read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {} reply line(s)", lines.len()),
                ));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let parsed = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(c) = parsed else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not an SMTP reply line: {line:?}"),
                ));
            };
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code: c, lines });
            }
        }
    }

    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading SMTP reply: {e}"))
    }

    /// Sends one command line (CRLF added) and returns the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reply to {line:?}: {e}"))
    }

    /// Sends one command and asserts that the reply starts with `prefix`,
    /// e.g. `expect("RCPT TO:<x@example.net>", "550 5.7.1")`.
    pub fn expect(&mut self, line: &str, prefix: &str) -> Reply {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(prefix),
            "C: {line}\nS: {reply}\nexpected a reply starting with {prefix:?}"
        );
        reply
    }

    /// EHLO once per session; returns the EHLO reply.
    pub fn ehlo(&mut self) -> Reply {
        if self.ehlo.is_none() {
            self.ehlo = Some(self.expect("EHLO client.test.example", "250"));
        }
        self.ehlo.clone().expect("set just above")
    }

    /// EHLO (if not done yet), MAIL, each RCPT (all must be accepted), DATA
    /// and the dot-stuffed data; returns the reply to the final dot. Data
    /// with 8-bit bytes is declared `BODY=8BITMIME` (RFC 6152), UTF-8 in
    /// the envelope or header `SMTPUTF8` (RFC 6531).
    pub fn send_message(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> Reply {
        self.ehlo();
        let mut params = String::new();
        if data.iter().any(|b| *b >= 0x80) {
            params.push_str(" BODY=8BITMIME");
        }
        let header = super::mime::header_block(data);
        if header
            .iter()
            .chain(from.as_bytes())
            .chain(rcpts.concat().as_bytes())
            .any(|b| *b >= 0x80)
        {
            params.push_str(" SMTPUTF8");
        }
        self.expect(&format!("MAIL FROM:<{from}>{params}"), "250");
        for rcpt in rcpts {
            self.expect(&format!("RCPT TO:<{rcpt}>"), "250");
        }
        self.expect("DATA", "354");
        self.send_raw(&stuff(data));
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reply to the final dot: {e}"))
    }

    pub fn quit(mut self) {
        let _ = self.cmd("QUIT");
    }

    /// Replays a case file and returns every reply (the greeting excluded).
    pub fn replay_case(&mut self, path: &Path) -> Vec<Reply> {
        self.replay_steps(path)
            .into_iter()
            .map(|s| s.reply)
            .collect()
    }

    /// Replays a case file the way its README says: command lines one at a
    /// time, each reply read before the next; after a `354`, everything up to
    /// and including the real CRLF.CRLF goes in one write. If DATA is not
    /// answered `354`, the data block is skipped. Stops after QUIT or when the
    /// gateway closes the connection.
    pub fn replay_steps(&mut self, path: &Path) -> Vec<Step> {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut steps = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let end = super::mime::find(&bytes[pos..], b"\r\n")
                .map(|i| pos + i + 2)
                .unwrap_or(bytes.len());
            let line = &bytes[pos..end];
            pos = end;
            self.send_raw(line);
            let sent = String::from_utf8_lossy(line).trim_end().to_string();
            let reply = match self.try_read_reply() {
                Ok(r) => r,
                Err(e) => panic!(
                    "{}: no reply to {sent:?}: {e}\nsteps so far: {steps:#?}",
                    path.display()
                ),
            };
            let verb = sent.to_ascii_uppercase();
            let is_data = verb == "DATA";
            let is_quit = verb == "QUIT";
            let accepted_data = is_data && reply.code == 354;
            steps.push(Step { sent, reply });
            if is_quit {
                break;
            }
            if is_data {
                // The data block ends at the first CRLF.CRLF; the CRLF of the
                // DATA line itself may be its first half (an empty message).
                let block_end = if bytes[pos..].starts_with(b".\r\n") {
                    pos + 3
                } else {
                    super::mime::find(&bytes[pos..], b"\r\n.\r\n")
                        .map(|i| pos + i + 5)
                        .unwrap_or_else(|| panic!("{}: data never ends", path.display()))
                };
                let block = &bytes[pos..block_end];
                pos = block_end;
                if accepted_data {
                    self.send_raw(block);
                    let sent = format!("<data: {} bytes>", block.len());
                    let reply = self.try_read_reply().unwrap_or_else(|e| {
                        panic!(
                            "{}: no reply to the data: {e}\nsteps: {steps:#?}",
                            path.display()
                        )
                    });
                    steps.push(Step { sent, reply });
                }
            }
        }
        steps
    }
}
