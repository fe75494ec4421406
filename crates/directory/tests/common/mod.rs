//! A private OpenLDAP slapd for the directory crate's tests and the root
//! package's end-to-end tests (`tests/directory.rs`).
//!
//! Each [`Slapd`] gets its own cn=config and mdb database under a temporary
//! directory and listens on its own free port of 127.0.0.1, so tests run in
//! parallel and never touch a system slapd. It loads the schemas core,
//! cosine, inetorgperson and the AD-lite schema, the LDIF fixtures of
//! `tests/fixtures/ldap/` at the repository root, and enables cn=Monitor so a
//! test can count the searches the server completed. Dropping it stops slapd.
//!
//! Without slapd the tests fail with the command that installs it: a
//! directory test that skips in silence proves nothing.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use directory::{DirectoryConfig, Secret};

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const SVC_DN: &str = "cn=svc-mailjournal,ou=Service Accounts,dc=example,dc=com";
pub const SVC_PASSWORD: &str = "mailjournal-secret";

const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils";

/// Which directory to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// Active-Directory-like users, groups and journal mailboxes.
    ActiveDirectory,
    /// The AD fixture plus a group of `n` generated members.
    ActiveDirectoryWithLargeGroup(usize),
    /// Plain inetOrgPerson users and case C14's referral object.
    OpenLdap,
}

/// Options of a test server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// olcIdleTimeout in seconds: slapd closes connections idle that long.
    pub idle_timeout: Option<u32>,
}

/// A running private slapd.
pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// The repository's `tests/fixtures/ldap` folder, found from the package
/// that compiles this file: the directory crate (`crates/directory`) or the
/// root package, whose end-to-end tests include it too.
pub fn fixtures_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("tests/fixtures/ldap"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no tests/fixtures/ldap in {} or above it",
                manifest.display()
            )
        })
}

/// Finds an OpenLDAP program, or fails the test with the install command.
fn program(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{name} not found: the directory tests need a real OpenLDAP; install it with `{INSTALL}`"
    );
}

impl Slapd {
    /// Starts slapd with `fixture` loaded.
    pub fn start(fixture: Fixture) -> Slapd {
        Slapd::start_with(fixture, Options::default())
    }

    /// Starts slapd with `fixture` loaded and `options` applied.
    pub fn start_with(fixture: Fixture, options: Options) -> Slapd {
        let dir = tempfile::tempdir().expect("a temporary directory for slapd");
        write_config(dir.path(), options);
        write_data(dir.path(), fixture);

        // A port taken between probing and slapd's bind makes slapd exit: try another.
        let mut slapd = Slapd {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            slapd.port = free_port();
            if slapd.launch() {
                return slapd;
            }
        }
        let log = std::fs::read_to_string(slapd.dir.path().join("slapd.log")).unwrap_or_default();
        panic!("slapd did not start; log:\n{log}");
    }

    /// Starts the slapd process on `self.port`; true once it accepts connections.
    fn launch(&mut self) -> bool {
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("slapd.log"))
            .expect("slapd log file");
        let child = Command::new(program("slapd"))
            .arg("-d")
            .arg("0")
            .arg("-F")
            .arg(dir.join("slapd.d"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run slapd ({e}); install it with `{INSTALL}`"));
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// A directory configuration for this server, bound as the service account.
    pub fn config(&self) -> DirectoryConfig {
        let mut config = DirectoryConfig::new(self.url(), SUFFIX);
        config.bind_dn = Some(SVC_DN.into());
        config.bind_password = Some(Secret::new(SVC_PASSWORD));
        config.timeout = Duration::from_secs(3);
        config
    }

    /// Stops slapd (SIGTERM, SIGKILL after 5 s); its data stays for a restart.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts slapd again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "slapd did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Search operations the server has completed, read from cn=Monitor
    /// (`monitorOpCompleted` of cn=Search,cn=Operations). Each call is itself
    /// a search, completed after it reads the counter: the next call sees it.
    pub fn completed_searches(&self) -> u64 {
        let output = Command::new(program("ldapsearch"))
            .env("LDAPNOINIT", "1")
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-H",
                &self.url(),
                "-D",
                ADMIN_DN,
            ])
            .args(["-w", ADMIN_PASSWORD, "-s", "base"])
            .args([
                "-b",
                "cn=Search,cn=Operations,cn=Monitor",
                "(objectClass=*)",
            ])
            .arg("monitorOpCompleted")
            .output()
            .unwrap_or_else(|e| panic!("cannot run ldapsearch ({e}); install it with `{INSTALL}`"));
        assert!(
            output.status.success(),
            "ldapsearch of cn=Monitor failed: {output:?}"
        );
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("monitorOpCompleted: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no monitorOpCompleted in {text}"))
    }

    /// Searches completed since `before` (a value of [`completed_searches`]),
    /// not counting the monitor reads themselves.
    pub fn searches_since(&self, before: u64) -> u64 {
        // Completion is counted just after the answer is sent: give it a moment.
        std::thread::sleep(Duration::from_millis(100));
        self.completed_searches() - before - 1
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on right now.
/// A port that is free now, for slapd: from 26000-31999, below Linux's
/// ephemeral range, so no socket bound to port 0 can take it before slapd
/// binds it (and apart from the gateway tests' 20000-25999).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 26_000;
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

/// Writes and loads cn=config: schemas, the mdb database, cn=Monitor.
fn write_config(dir: &Path, options: Options) {
    std::fs::create_dir_all(dir.join("slapd.d")).expect("slapd.d");
    std::fs::create_dir_all(dir.join("data")).expect("data");
    let schema = fixtures_dir().join("ad-lite.ldif");
    let schema = schema
        .canonicalize()
        .expect("tests/fixtures/ldap/ad-lite.ldif exists");
    let idle = options
        .idle_timeout
        .map(|s| format!("olcIdleTimeout: {s}\n"))
        .unwrap_or_default();
    let d = dir.display();
    let config = format!(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\
         olcPidFile: {d}/slapd.pid\nolcArgsFile: {d}/slapd.args\nolcLogLevel: none\n{idle}\n\
         dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
         olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
         include: file:///etc/ldap/schema/core.ldif\n\n\
         include: file:///etc/ldap/schema/cosine.ldif\n\n\
         include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
         include: file://{schema}\n\n\
         dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\nolcSizeLimit: 5000\n\n\
         dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\n\
         olcDatabase: {{0}}config\nolcAccess: {{0}}to * by * none\n\n\
         dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcDbDirectory: {d}/data\n\
         olcSuffix: {SUFFIX}\nolcRootDN: {ADMIN_DN}\nolcRootPW: {ADMIN_PASSWORD}\n\
         olcDbMaxSize: 104857600\nolcDbIndex: objectClass eq\nolcDbIndex: mail eq\n\
         olcDbIndex: proxyAddresses eq\nolcDbIndex: member eq\n\
         olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none\n\
         olcAccess: {{1}}to * by users read by * none\n\n\
         dn: olcDatabase={{2}}monitor,cn=config\nobjectClass: olcDatabaseConfig\n\
         olcDatabase: {{2}}monitor\n\
         olcAccess: {{0}}to * by dn.exact=\"{ADMIN_DN}\" read by * none\n",
        schema = schema.display(),
    );
    let path = dir.join("config.ldif");
    std::fs::write(&path, config).expect("write config.ldif");
    slapadd(dir, "0", &path);
}

/// Writes the fixture's LDIF and loads it into the mdb database.
fn write_data(dir: &Path, fixture: Fixture) {
    let mut files = vec!["base.ldif"];
    match fixture {
        Fixture::ActiveDirectory | Fixture::ActiveDirectoryWithLargeGroup(_) => {
            files.push("ad-directory.ldif");
        }
        Fixture::OpenLdap => files.extend(["openldap-directory.ldif", "c14-referral.ldif"]),
    }
    let mut ldif = String::new();
    for file in files {
        let path = fixtures_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        ldif.push_str(&text);
        ldif.push_str("\n\n");
    }
    if let Fixture::ActiveDirectoryWithLargeGroup(members) = fixture {
        ldif.push_str(&large_group_ldif(members));
    }
    let path = dir.join("data.ldif");
    std::fs::write(&path, ldif).expect("write data.ldif");
    slapadd(dir, "1", &path);
}

/// Runs slapadd into database `db`, failing the test with its output.
fn slapadd(dir: &Path, db: &str, ldif: &Path) {
    let output = Command::new(program("slapadd"))
        .args(["-q", "-n", db, "-F"])
        .arg(dir.join("slapd.d"))
        .arg("-l")
        .arg(ldif)
        .output()
        .unwrap_or_else(|e| panic!("cannot run slapadd ({e}); install it with `{INSTALL}`"));
    assert!(
        output.status.success(),
        "slapadd -n {db} {} failed:\n{}",
        ldif.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `ou=Staff` with `members` users and the group `cn=All Staff` holding
/// them all (a distribution list too large for one AD range of 1500).
pub fn large_group_ldif(members: usize) -> String {
    let mut out = format!("dn: ou=Staff,{SUFFIX}\nobjectClass: organizationalUnit\nou: Staff\n\n");
    let mut group = format!(
        "dn: cn=All Staff,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\n\
         objectClass: adMailRecipient\ncn: All Staff\nmail: allstaff@example.com\n"
    );
    for n in 1..=members {
        let dn = format!("cn=Staff {n:04},ou=Staff,{SUFFIX}");
        let _ = write!(
            out,
            "dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: adMailRecipient\n\
             cn: Staff {n:04}\nsn: {n:04}\nmail: staff{n:04}@example.com\n\
             proxyAddresses: SMTP:staff{n:04}@example.com\n\n"
        );
        let _ = writeln!(group, "member: {dn}");
    }
    out.push_str(&group);
    out.push('\n');
    out
}
