//! A recording SMTP server that stands in for the gateway's next hops.
//!
//! The sink speaks enough ESMTP (RFC 5321) for a relaying client: EHLO/HELO,
//! MAIL, RCPT, DATA, RSET, NOOP and QUIT, with several transactions per
//! connection. It records every transaction it acknowledged with `250` after
//! the final dot, byte for byte after undoing dot-stuffing (RFC 5321
//! §4.5.2), and every RCPT attempt with the code it answered. Tests script
//! per-recipient answers (`Reply`) and whole-server misbehaviour
//! (`Behaviour`), both switchable while the gateway is talking to it.
//!
//! It uses blocking std sockets and one thread per connection: the traffic
//! of a test is small, and threads keep the code obvious.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::mime::escape;

/// One mail transaction the sink acknowledged after the final dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Number of the connection it arrived on (1, 2, ... per sink).
    pub session: u64,
    /// The raw text between `<` and `>` of `MAIL FROM`, empty for `<>`.
    pub mail_from: String,
    /// Whatever followed the reverse path on the MAIL line (`SIZE=..` etc.).
    pub mail_params: String,
    /// Recipients answered `250`, raw text between `<` and `>`.
    pub rcpts: Vec<String>,
    /// The message, dot-stuffing undone, including the CRLF before the dot.
    pub data: Vec<u8>,
}

impl Transaction {
    /// Whether `addr` is among the accepted recipients (case-insensitive).
    pub fn has_rcpt(&self, addr: &str) -> bool {
        self.rcpts.iter().any(|r| r.eq_ignore_ascii_case(addr))
    }

    /// The data as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Whether the data contains `needle` as bytes.
    pub fn contains(&self, needle: &str) -> bool {
        super::mime::find(&self.data, needle.as_bytes()).is_some()
    }
}

/// One RCPT command the sink answered, whatever the answer was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptAttempt {
    pub session: u64,
    pub mail_from: String,
    pub rcpt: String,
    pub code: u16,
}

/// How the sink answers RCPT for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `250 2.1.5`.
    Accept,
    /// `550 5.1.1`, every time.
    Permanent,
    /// `451 4.3.0` for the first n attempts, `250` afterwards.
    TempFailTimes(u32),
}

/// How the whole sink behaves towards new connections (and, for
/// `StallAfterData`, towards a data transfer that just finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// A well-behaved ESMTP server.
    Normal,
    /// Accepts the TCP connection and never sends the greeting.
    Silent,
    /// Reads and discards and never sends a byte, like an implicit-TLS port
    /// waiting for a ClientHello from a client that waits for `220`.
    TlsOnly,
    /// Behaves normally until the final dot, then never answers; the
    /// transaction is not recorded because it was never acknowledged.
    StallAfterData,
    /// Takes [`SLOW_REPLY`] to answer the final dot, then records and
    /// accepts the message, whether or not the client is still there (as a
    /// real server that has the message would).
    SlowAfterData,
}

/// How long `SlowAfterData` waits before answering the final dot.
pub const SLOW_REPLY: std::time::Duration = std::time::Duration::from_millis(1500);

struct State {
    /// Data transfers that `SlowAfterData` began to answer.
    slow_started: u64,
    transactions: Vec<Transaction>,
    attempts: Vec<RcptAttempt>,
    /// Lower-cased address -> (scripted reply, RCPT attempts seen so far).
    replies: HashMap<String, (Reply, u32)>,
    default_reply: Reply,
    behaviour: Behaviour,
    /// Behaviour in force when each connection was accepted, in order.
    connections: Vec<Behaviour>,
    /// Data transfers that were left unanswered under `StallAfterData`.
    stalled: u64,
    /// Behaviour of each connection that the peer (the gateway) closed or
    /// reset, recorded when it did; a stalled one counts as `StallAfterData`.
    closed_by_peer: Vec<Behaviour>,
    /// Clones of every accepted stream, so that `stop` can close them all.
    streams: Vec<TcpStream>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    next_session: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not hide the test's own result.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The recording SMTP server. Dropping it stops it.
pub struct Sink {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts a sink on an ephemeral port of 127.0.0.1.
    pub fn start() -> Sink {
        Self::start_on(0)
    }

    /// Starts a sink on 127.0.0.1:`port` (0 for an ephemeral port). Binding is
    /// retried for a few seconds so that a stopped sink can be restarted on
    /// the same port.
    pub fn start_on(port: u16) -> Sink {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("sink: bind 127.0.0.1:{port} failed ({e}), retrying");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("sink: cannot bind 127.0.0.1:{port}: {e}"),
            }
        };
        let port = listener
            .local_addr()
            .expect("bound listener has an address")
            .port();
        listener
            .set_nonblocking(true)
            .expect("listener can be made non-blocking");

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                transactions: Vec::new(),
                attempts: Vec::new(),
                replies: HashMap::new(),
                default_reply: Reply::Accept,
                behaviour: Behaviour::Normal,
                connections: Vec::new(),
                stalled: 0,
                slow_started: 0,
                closed_by_peer: Vec::new(),
                streams: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("sink-{port}"))
                .spawn(move || accept_loop(listener, shared))
                .expect("sink acceptor thread starts")
        };
        Sink {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`, as a next hop in the gateway's configuration.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every acknowledged transaction so far, in order of acknowledgement.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.shared.lock().transactions.clone()
    }

    /// Every RCPT answered so far, accepted or not.
    pub fn rcpt_attempts(&self) -> Vec<RcptAttempt> {
        self.shared.lock().attempts.clone()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections.len()
    }

    /// Number of connections accepted while `b` was in force.
    pub fn connections_in(&self, b: Behaviour) -> usize {
        self.shared
            .lock()
            .connections
            .iter()
            .filter(|c| **c == b)
            .count()
    }

    /// Number of data transfers left unanswered by `StallAfterData`.
    pub fn stalled(&self) -> u64 {
        self.shared.lock().stalled
    }

    /// Number of data transfers `SlowAfterData` began to answer.
    pub fn slow_started(&self) -> u64 {
        self.shared.lock().slow_started
    }

    /// Number of connections in behaviour `b` that the gateway gave up on
    /// and closed (evidence that its attempt was time-bounded).
    pub fn closed_by_peer(&self, b: Behaviour) -> usize {
        self.shared
            .lock()
            .closed_by_peer
            .iter()
            .filter(|c| **c == b)
            .count()
    }

    /// Scripts the RCPT answer for `addr` (case-insensitive) and resets its
    /// attempt count.
    pub fn set_reply(&self, addr: &str, reply: Reply) {
        self.shared
            .lock()
            .replies
            .insert(addr.to_ascii_lowercase(), (reply, 0));
    }

    /// The RCPT answer for every address without a scripted one.
    pub fn set_default_reply(&self, reply: Reply) {
        self.shared.lock().default_reply = reply;
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.lock().behaviour = b;
    }

    /// Polls until `pred` holds for the acknowledged transactions and returns
    /// them; at the deadline panics with a dump of what did arrive.
    pub fn wait_for<F>(&self, mut pred: F, timeout: Duration) -> Vec<Transaction>
    where
        F: FnMut(&[Transaction]) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let txs = self.transactions();
            if pred(&txs) {
                return txs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "sink {}: condition not met within {:?}\n{}",
                    self.port,
                    timeout,
                    self.dump()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls until `cond` holds for the sink (connection counts, attempts,
    /// ...); at the deadline panics with `what` and a dump.
    pub fn wait_until<F>(&self, what: &str, timeout: Duration, mut cond: F)
    where
        F: FnMut(&Sink) -> bool,
    {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.dump()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until nothing new (transaction or RCPT attempt) has happened for
    /// `quiet`, or until `max` has passed, and returns the transactions. Used
    /// before asserting that something did *not* happen.
    pub fn settle(&self, quiet: Duration, max: Duration) -> Vec<Transaction> {
        let start = Instant::now();
        let mut last = self.activity();
        let mut since = Instant::now();
        while start.elapsed() < max {
            thread::sleep(Duration::from_millis(50));
            let now = self.activity();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        self.transactions()
    }

    fn activity(&self) -> (usize, usize, usize) {
        let state = self.shared.lock();
        (
            state.transactions.len(),
            state.attempts.len(),
            state.connections.len(),
        )
    }

    /// A readable account of everything the sink saw, for failure messages.
    pub fn dump(&self) -> String {
        let state = self.shared.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sink {}: {} connection(s) {:?}, closed by the peer {:?}, \
             {} stalled, {} transaction(s)",
            self.port,
            state.connections.len(),
            state.connections,
            state.closed_by_peer,
            state.stalled,
            state.transactions.len()
        );
        for (i, tx) in state.transactions.iter().enumerate() {
            let _ = writeln!(
                out,
                "  #{i} session {} MAIL FROM:<{}> {} RCPT {:?}, {} bytes:\n    {}",
                tx.session,
                tx.mail_from,
                tx.mail_params,
                tx.rcpts,
                tx.data.len(),
                escape(&tx.data[..tx.data.len().min(600)])
            );
        }
        let _ = writeln!(out, "  RCPT attempts:");
        for a in &state.attempts {
            let _ = writeln!(
                out,
                "    session {} <{}> -> <{}>: {}",
                a.session, a.mail_from, a.rcpt, a.code
            );
        }
        out
    }

    /// Stops listening and closes every connection: afterwards the port
    /// refuses connections. Transactions recorded so far stay readable.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let streams = std::mem::take(&mut self.shared.lock().streams);
        for s in streams {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let session = shared.next_session.fetch_add(1, Ordering::SeqCst);
                let behaviour = {
                    let mut state = shared.lock();
                    if let Ok(clone) = stream.try_clone() {
                        state.streams.push(clone);
                    }
                    let b = state.behaviour;
                    state.connections.push(b);
                    b
                };
                let shared = Arc::clone(&shared);
                let _ = thread::Builder::new()
                    .name(format!("sink-session-{session}"))
                    .spawn(move || serve(stream, shared, session, behaviour));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    // The listener drops here, so the port refuses connections from now on.
}

/// Reads and throws away until the peer or `stop` closes the connection,
/// then records the closing under `b` unless the sink itself is stopping.
fn discard(mut stream: TcpStream, shared: &Shared, b: Behaviour) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    peer_closed(shared, b);
}

fn peer_closed(shared: &Shared, b: Behaviour) {
    if !shared.stop.load(Ordering::SeqCst) {
        shared.lock().closed_by_peer.push(b);
    }
}

struct Envelope {
    mail_from: String,
    mail_params: String,
    rcpts: Vec<String>,
}

fn serve(stream: TcpStream, shared: Arc<Shared>, session: u64, behaviour: Behaviour) {
    if matches!(behaviour, Behaviour::Silent | Behaviour::TlsOnly) {
        discard(stream, &shared, behaviour);
        return;
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    let mut envelope: Option<Envelope> = None;

    if out.write_all(b"220 sink.test ESMTP ready\r\n").is_err() {
        return;
    }
    loop {
        let mut raw = Vec::new();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return peer_closed(&shared, Behaviour::Normal),
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("");

        let reply: String = match verb {
            "EHLO" => "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                       250-SIZE 104857600\r\n250 ENHANCEDSTATUSCODES\r\n"
                .to_string(),
            "HELO" => "250 sink.test\r\n".to_string(),
            "MAIL" if upper.starts_with("MAIL FROM:") => {
                if envelope.is_some() {
                    "503 5.5.1 nested MAIL command\r\n".to_string()
                } else {
                    let (path, params) = parse_path(&line[10..]);
                    envelope = Some(Envelope {
                        mail_from: path,
                        mail_params: params,
                        rcpts: vec![],
                    });
                    "250 2.1.0 sender ok\r\n".to_string()
                }
            }
            "RCPT" if upper.starts_with("RCPT TO:") => match envelope.as_mut() {
                None => "503 5.5.1 need MAIL first\r\n".to_string(),
                Some(env) => {
                    let (rcpt, _) = parse_path(&line[8..]);
                    let code = rcpt_answer(&shared, session, &env.mail_from, &rcpt);
                    let text = match code {
                        250 => "250 2.1.5 recipient ok\r\n".to_string(),
                        451 => "451 4.3.0 try again later\r\n".to_string(),
                        _ => format!("550 5.1.1 <{rcpt}>: no such user\r\n"),
                    };
                    if code == 250 {
                        env.rcpts.push(rcpt);
                    }
                    text
                }
            },
            "DATA" => {
                let ready = envelope.as_ref().is_some_and(|e| !e.rcpts.is_empty());
                if !ready {
                    "503 5.5.1 need MAIL and RCPT first\r\n".to_string()
                } else {
                    if out
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .is_err()
                    {
                        return;
                    }
                    let Some(data) = read_data(&mut reader) else {
                        return peer_closed(&shared, Behaviour::Normal);
                    };
                    let env = envelope
                        .take()
                        .expect("checked above: a transaction is open");
                    let mut state = shared.lock();
                    if state.behaviour == Behaviour::SlowAfterData {
                        state.slow_started += 1;
                        drop(state);
                        std::thread::sleep(SLOW_REPLY);
                        state = shared.lock();
                    }
                    if state.behaviour == Behaviour::StallAfterData {
                        state.stalled += 1;
                        drop(state);
                        discard(out, &shared, Behaviour::StallAfterData);
                        return;
                    }
                    let n = state.transactions.len() + 1;
                    state.transactions.push(Transaction {
                        session,
                        mail_from: env.mail_from,
                        mail_params: env.mail_params,
                        rcpts: env.rcpts,
                        data,
                    });
                    format!("250 2.0.0 queued as S{n}\r\n")
                }
            }
            "RSET" => {
                envelope = None;
                "250 2.0.0 reset\r\n".to_string()
            }
            "NOOP" => "250 2.0.0 ok\r\n".to_string(),
            "QUIT" => {
                let _ = out.write_all(b"221 2.0.0 bye\r\n");
                return;
            }
            _ => "500 5.5.2 command not recognised\r\n".to_string(),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Decides and records the answer to one RCPT.
fn rcpt_answer(shared: &Shared, session: u64, mail_from: &str, rcpt: &str) -> u16 {
    let mut state = shared.lock();
    let default = state.default_reply.clone();
    let entry = state
        .replies
        .entry(rcpt.to_ascii_lowercase())
        .or_insert((default, 0));
    let code = match entry.0 {
        Reply::Accept => 250,
        Reply::Permanent => 550,
        Reply::TempFailTimes(n) if entry.1 < n => 451,
        Reply::TempFailTimes(_) => 250,
    };
    entry.1 += 1;
    state.attempts.push(RcptAttempt {
        session,
        mail_from: mail_from.to_string(),
        rcpt: rcpt.to_string(),
        code,
    });
    code
}

/// Splits `<path> params` into the raw path text and the parameters. Quoted
/// strings and backslash escapes inside the path are honoured, so a `>` in a
/// quoted local part does not end it.
pub fn parse_path(rest: &str) -> (String, String) {
    let rest = rest.trim_start();
    let Some(inner) = rest.strip_prefix('<') else {
        let mut split = rest.splitn(2, ' ');
        let path = split.next().unwrap_or("").to_string();
        return (path, split.next().unwrap_or("").trim().to_string());
    };
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                return (inner[..i].to_string(), inner[i + 1..].trim().to_string());
            }
            _ => {}
        }
    }
    (inner.to_string(), String::new())
}

/// Reads DATA up to the CRLF.CRLF that ends it (RFC 5321 §4.1.1.4): only a
/// `.` line that follows a CRLF counts, never one after a bare LF. Leading
/// dots of lines are unstuffed (§4.5.2). None if the connection ended first.
fn read_data(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut at_line_start = true;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if at_line_start && line == b".\r\n" {
            return Some(data);
        }
        if at_line_start && line.first() == Some(&b'.') {
            data.extend_from_slice(&line[1..]);
        } else {
            data.extend_from_slice(&line);
        }
        at_line_start = line.ends_with(b"\r\n");
    }
}
