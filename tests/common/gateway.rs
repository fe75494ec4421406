//! Runs the real `mailjournal serve` binary for a test: writes its
//! configuration into a temporary directory, starts it with its output in a
//! log file there, waits for the `220` banner, and can SIGKILL, restart and
//! SIGTERM it. When a test panics, the log's tail is printed so the failure
//! explains itself.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_mailjournal");

/// The journal target and NDR address of the default configuration.
pub const JOURNAL: &str = "journal@example.com";
pub const JOURNAL_NDR: &str = "journal-ndr@example.com";
pub const REPORT_SENDER: &str = "journal-reports@example.com";
pub const HOSTNAME: &str = "gw.test.example";

/// A free TCP port on 127.0.0.1: bound, read, released.
/// A port that is free now, for a server the test starts next.
///
/// Taken from 20000-25999, below Linux's ephemeral range (32768-60999):
/// a sink or client socket bound to port 0 elsewhere in the same test run
/// can then never grab it between this check and the gateway's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 6_000;
    let start = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = (FIRST + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}-{}", FIRST + COUNT - 1);
}

/// The test configuration, with defaults that keep tests fast. `to_toml`
/// leaves `{listen}` and `{spool}` for `Gateway::start_toml` to fill in.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub hostname: String,
    pub max_message_size: u64,
    pub max_connections: u32,
    pub local_domains: Vec<String>,
    pub internal_networks: Vec<String>,
    pub inbound_next_hop: String,
    pub outbound_next_hop: String,
    pub journal_next_hop: String,
    /// `copy` or `envelope`.
    pub format: String,
    pub report_sender: String,
    pub inbound: String,
    pub inbound_ndr: String,
    pub outbound: String,
    pub outbound_ndr: String,
    pub retry_initial: String,
    pub retry_max: String,
    pub max_age: String,
    pub connect_timeout: String,
    pub command_timeout: String,
    /// Raw TOML appended at the end (extra sections).
    pub extra: String,
    /// Port of `server.admin_listen` on 127.0.0.1 (`/metrics`, `/healthz`).
    pub admin_port: Option<u16>,
}

impl GatewayConfig {
    /// All three next hops on one sink port.
    pub fn new(sink_port: u16) -> GatewayConfig {
        Self::with_hops(sink_port, sink_port, sink_port)
    }

    /// Separate next hops for inbound, outbound and journal traffic.
    pub fn with_hops(inbound: u16, outbound: u16, journal: u16) -> GatewayConfig {
        GatewayConfig {
            hostname: HOSTNAME.into(),
            max_message_size: 1_048_576,
            max_connections: 100,
            local_domains: vec!["example.com".into()],
            internal_networks: vec!["127.0.0.2/32".into()],
            inbound_next_hop: format!("smtp://127.0.0.1:{inbound}"),
            outbound_next_hop: format!("smtp://127.0.0.1:{outbound}"),
            journal_next_hop: format!("smtp://127.0.0.1:{journal}"),
            format: "copy".into(),
            report_sender: REPORT_SENDER.into(),
            inbound: JOURNAL.into(),
            inbound_ndr: JOURNAL_NDR.into(),
            outbound: JOURNAL.into(),
            outbound_ndr: JOURNAL_NDR.into(),
            retry_initial: "1s".into(),
            retry_max: "2s".into(),
            max_age: "5d".into(),
            connect_timeout: "2s".into(),
            command_timeout: "3s".into(),
            extra: String::new(),
            admin_port: None,
        }
    }

    /// Envelope journal reports instead of copies.
    pub fn envelope(mut self) -> Self {
        self.format = "envelope".into();
        self
    }

    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    pub fn local_domains(mut self, domains: &[&str]) -> Self {
        self.local_domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// The TOML text, with `{listen}` and `{spool}` placeholders.
    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let report_sender = if self.format == "envelope" {
            format!("report_sender = {:?}\n", self.report_sender)
        } else {
            String::new()
        };
        format!(
            r#"[server]
hostname = {hostname:?}
listen = ["{{listen}}"]
spool_dir = "{{spool}}"
max_message_size = {max_message_size}
max_connections = {max_connections}
{admin_listen}
[routing]
local_domains = [{local_domains}]
internal_networks = [{internal_networks}]
inbound_next_hop = {inbound_next_hop:?}
outbound_next_hop = {outbound_next_hop:?}
journal_next_hop = {journal_next_hop:?}

[journal]
format = {format:?}
{report_sender}inbound = {inbound:?}
inbound_ndr = {inbound_ndr:?}
outbound = {outbound:?}
outbound_ndr = {outbound_ndr:?}

[queue]
retry_initial = {retry_initial:?}
retry_max = {retry_max:?}
max_age = {max_age:?}
connect_timeout = {connect_timeout:?}
command_timeout = {command_timeout:?}
{extra}"#,
            hostname = self.hostname,
            max_message_size = self.max_message_size,
            max_connections = self.max_connections,
            local_domains = list(&self.local_domains),
            internal_networks = list(&self.internal_networks),
            inbound_next_hop = self.inbound_next_hop,
            outbound_next_hop = self.outbound_next_hop,
            journal_next_hop = self.journal_next_hop,
            format = self.format,
            inbound = self.inbound,
            inbound_ndr = self.inbound_ndr,
            outbound = self.outbound,
            outbound_ndr = self.outbound_ndr,
            retry_initial = self.retry_initial,
            retry_max = self.retry_max,
            max_age = self.max_age,
            connect_timeout = self.connect_timeout,
            command_timeout = self.command_timeout,
            extra = self.extra,
            admin_listen = self
                .admin_port
                .map(|port| format!("admin_listen = \"127.0.0.1:{port}\"\n"))
                .unwrap_or_default(),
        )
    }
}

/// A running `mailjournal serve`. Dropping it kills the process.
pub struct Gateway {
    dir: TempDir,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Gateway {
    pub fn start(config: &GatewayConfig) -> Gateway {
        Self::start_toml(&config.to_toml())
    }

    /// Starts the gateway with a configuration template in which `{listen}`
    /// (127.0.0.1:free port), `{spool}` and `{dir}` (the temporary
    /// directory) are filled in.
    pub fn start_toml(template: &str) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("mailjournal-test-")
            .tempdir()
            .expect("create a temporary directory");
        let port = free_port();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).expect("create the spool directory");
        let text = template
            .replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace("{spool}", &spool.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config = dir.path().join("mailjournal.toml");
        fs::write(&config, text).expect("write the configuration");
        let log = dir.path().join("gateway.log");

        let mut gw = Gateway {
            dir,
            config,
            log,
            port,
            child: None,
            starts: 0,
        };
        gw.spawn();
        gw
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the gateway log");
        let _ = writeln!(
            log,
            "=== test harness: start #{} of the gateway ===",
            self.starts
        );
        let filter = std::env::var("MAILJOURNAL_TEST_LOG").unwrap_or_else(|_| "debug".into());
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits for a `220` banner on the listen port, failing loudly (with the
    /// log) if the process exits or 20 seconds pass.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "gateway exited during start-up with {status}\n{}",
                        self.log_tail(80)
                    );
                }
            }
            if let Some(banner) = probe_banner(self.smtp_addr()) {
                // Our own banner, not some other server's on a reused port.
                if banner.starts_with("220") && banner.contains("ESMTP mailjournal") {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "gateway did not answer with a 220 banner on {} within 20 s\n{}",
                    self.smtp_addr(),
                    self.log_tail(80)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway is running").id()
    }

    /// SIGKILL: no chance to clean up, like a power cut for the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again with the same configuration and spool (killing the
    /// running process first, if any).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM, then waits up to 30 s for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("gateway is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gateway did not exit within 30 s of SIGTERM\n{}",
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the binary with exactly `args`.
    pub fn run_cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {BIN} {args:?}: {e}"))
    }

    /// Runs the binary with `args` followed by `--config <this config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let config = self.config.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &config]);
        self.run_cli(&all)
    }

    /// The whole log of every start so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- last {} line(s) of {} ---\n{}\n--- end of gateway log ---",
            all.len() - from,
            self.log.display(),
            all[from..].join("\n")
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tail(150));
            if std::env::var_os("MAILJOURNAL_TEST_KEEP").is_some() {
                let kept = self.dir.path().to_path_buf();
                eprintln!("keeping {}", kept.display());
                let placeholder = tempfile::tempdir().expect("a replacement temporary directory");
                let _ = std::mem::replace(&mut self.dir, placeholder).keep();
            }
        }
        self.kill9();
    }
}

/// Connects, reads the first reply line and says QUIT. None if the port does
/// not answer (yet).
fn probe_banner(addr: SocketAddr) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    let _ = (&stream).write_all(b"QUIT\r\n");
    Some(line)
}
