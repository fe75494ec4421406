//! The `mailjournal` command: serve, check, lookup, queue and import-registry
//! (product contract §3).
//!
//! Everything here is the edge: parse the command line, set up logging, load
//! the configuration, call into `relay`, and turn the outcome into one
//! readable line on stderr and the contract's exit codes (0 success,
//! 1 runtime failure, 2 usage or configuration error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use relay::control;
use relay::resolver::Resolver;
use relay::spool::{Delivery, QueueId, RecipientState};
use relay::Settings;

mod registry;

/// Prints a line to stdout; a closed pipe (`mailjournal queue list | head`)
/// ends the command quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout; exits quietly when the reader has gone away.
fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// SMTP gateway that relays mail and delivers journal copies of it.
#[derive(Parser)]
#[command(name = "mailjournal", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Serve {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and print what it means; exit 0 if usable.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Check the file only: do not bind to the directory or probe the spool.
        #[arg(long)]
        offline: bool,
    },
    /// Show the directory entry of an address and its journal targets.
    Lookup {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The address to look up.
        address: String,
    },
    /// Inspect and act on the spool, like mailq and postqueue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Convert an exported ...\MSExchangeIMC\Parameters\Extension registry key
    /// into [journal] TOML on stdout; warnings go to stderr.
    ImportRegistry {
        /// The .reg file regedit exported (REGEDIT4 or version 5.00).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// List every delivery in the queue.
    List {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a message (or one delivery): its deliveries and its bytes.
    Show {
        /// Queue id of the message or delivery.
        id: QueueId,
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Try deliveries now: one message or delivery, or all.
    Retry {
        /// Queue id of the message or delivery; all when left out.
        id: Option<QueueId>,
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Delete a message (or one delivery) from the queue without a DSN.
    Delete {
        /// Queue id of the message or delivery.
        id: QueueId,
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// A failure at the edge, with the exit code it maps to.
enum Failure {
    /// Usage or configuration: exit 2.
    Config(String),
    /// Anything at run time: exit 1.
    Runtime(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mailjournal: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("mailjournal: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("mailjournal: {message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(config: &Path) -> Result<Settings, Failure> {
    Settings::load(config).map_err(|e| Failure::Config(e.to_string()))
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve { config } => {
            let settings = load(&config)?;
            let metrics = match settings.server.admin_listen {
                Some(_) => Some(relay::metrics::install().map_err(Failure::Runtime)?),
                None => None,
            };
            relay::server::serve(settings, metrics, stop_signal())
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Check { config, offline } => check(&load(&config)?, offline).await,
        Command::Lookup { config, address } => lookup(&load(&config)?, &address).await,
        Command::Queue { action } => queue(action).await,
        Command::ImportRegistry { file } => import_registry(&file),
    }
}

/// Prints the converted `[journal]` section, then the report; a file that
/// was read exits 0 even with warnings, so the administrator sees both.
fn import_registry(file: &Path) -> Result<(), Failure> {
    let conversion = registry::import(file).map_err(|e| Failure::Config(e.to_string()))?;
    write_stdout(&conversion.toml);
    for line in &conversion.report {
        eprintln!("{line}");
    }
    // The section was printed so the administrator sees it, but a value that
    // could not be converted means it is not ready to use.
    let errors = conversion
        .report
        .iter()
        .filter(|line| line.starts_with("error:"))
        .count();
    if errors > 0 {
        return Err(Failure::Runtime(format!(
            "{errors} value(s) could not be converted; see the error lines above"
        )));
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn check(settings: &Settings, offline: bool) -> Result<(), Failure> {
    say!("configuration {}: ok", settings.file.display());
    say!("  hostname          {}", settings.server.hostname);
    for address in &settings.server.listen {
        say!("  listen            {address}");
    }
    say!(
        "  spool             {}",
        settings.server.spool_dir.display()
    );
    say!(
        "  local domains     {}",
        settings.routing.local_domains.join(", ")
    );
    let networks: Vec<String> = settings
        .routing
        .internal_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    say!("  internal networks {}", networks.join(", "));
    say!("  inbound next hop  {}", settings.routing.inbound_next_hop);
    say!("  outbound next hop {}", settings.routing.outbound_next_hop);
    say!("  journal next hop  {}", settings.routing.journal_next_hop);
    if let Some(admin) = settings.server.admin_listen {
        say!("  admin listen      {admin} (/metrics, /healthz)");
    }
    say!("  journal format    {:?}", settings.journal.format);
    say!("  hidden check      {:?}", settings.journal.hidden_check);
    for (name, rules) in [
        ("inbound", &settings.journal.rules.inbound),
        ("outbound", &settings.journal.rules.outbound),
    ] {
        match rules {
            Some(rules) => {
                let targets: Vec<&str> = rules.targets.iter().map(|t| t.as_str()).collect();
                say!(
                    "  {name:<8} journal  targets {} ; NDR {}",
                    if targets.is_empty() {
                        "(per recipient only)".into()
                    } else {
                        targets.join(", ")
                    },
                    rules.ndr
                );
            }
            None => say!("  {name:<8} journal  off"),
        }
    }

    for (name, attribute) in [
        ("inbound ", &settings.journal.inbound_recipient_attribute),
        ("outbound", &settings.journal.outbound_recipient_attribute),
    ] {
        if let Some(attribute) = attribute {
            say!(
                "  {name} per-recipient attribute {}",
                describe_attribute(settings, attribute)
            );
        }
    }
    let queue = &settings.queue;
    say!(
        "  queue             retry {:?} doubling to {:?}, give up after {:?}",
        queue.retry_initial,
        queue.retry_max,
        queue.max_age
    );
    if let Some(directory) = &settings.directory {
        say!("  directory mapping {}", directory.mapping);
    }

    if offline {
        return Ok(());
    }

    // The spool must be writable, or nothing can be acknowledged.
    let dir = &settings.server.spool_dir;
    let writable = std::fs::create_dir_all(dir).is_ok() && {
        let probe = dir.join(".check-write");
        let ok = std::fs::write(&probe, b"").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    };
    if !writable {
        return Err(Failure::Runtime(format!(
            "server.spool_dir: {} is not writable",
            dir.display()
        )));
    }
    say!("  spool directory   writable");

    // The directory: bind, then the hidden-recipient check of every target.
    let Some(directory) = &settings.directory else {
        return Ok(());
    };
    say!(
        "  directory         {} (base {})",
        directory.url,
        directory.base_dn
    );
    let resolver =
        Resolver::new(settings).map_err(|e| Failure::Config(format!("directory: {e}")))?;
    let rows = resolver.hidden_report(settings).await;
    say!(
        "\nhidden-recipient check ({:?}):",
        settings.journal.hidden_check
    );
    say!("  {:<26} {:<40} verdict", "role", "target");
    for row in &rows {
        say!("  {:<26} {:<40} {}", row.role, row.target, row.verdict());
    }
    if let Some(row) = rows.iter().find(|r| r.status.is_err()) {
        return Err(Failure::Runtime(format!(
            "the hidden check could not run for {}: {}",
            row.target,
            row.verdict()
        )));
    }
    let strict = settings.journal.hidden_check == relay::config::HiddenCheck::Strict;
    if strict {
        if let Some(row) = rows.iter().find(|r| !r.ok()) {
            return Err(Failure::Runtime(format!(
                "journal.hidden_check is strict and {} {} fails: {}",
                row.role,
                row.target,
                row.verdict()
            )));
        }
    }
    Ok(())
}

async fn lookup(settings: &Settings, address: &str) -> Result<(), Failure> {
    let resolver =
        Resolver::new(settings).map_err(|e| Failure::Config(format!("directory: {e}")))?;
    let Some(directory) = resolver.directory() else {
        return Err(Failure::Config(format!(
            "{}: no [directory] section to look {address} up in",
            settings.file.display()
        )));
    };
    let runtime = |e: directory::DirectoryError| Failure::Runtime(format!("directory: {e}"));
    let entry = match directory.lookup(address).await.map_err(runtime)? {
        directory::Lookup::Found(entry) => entry,
        directory::Lookup::NotFound => {
            return Err(Failure::Runtime(format!(
                "{address}: no entry in the directory"
            )));
        }
    };

    say!("address    {address}");
    say!("dn         {}", entry.dn);
    say!("mail       {}", entry.mail.as_deref().unwrap_or("(none)"));
    say!("addresses  {}", entry.addresses.join(", "));
    say!("hidden     {}", entry.hidden);
    for (name, attribute) in [
        ("inbound", &settings.journal.inbound_recipient_attribute),
        ("outbound", &settings.journal.outbound_recipient_attribute),
    ] {
        let Some(attribute) = attribute else {
            say!("{name} journal targets: (no {name}_recipient_attribute configured)");
            continue;
        };
        let targets = directory
            .targets(&entry, attribute)
            .await
            .map_err(runtime)?;
        say!(
            "{name} journal targets ({}): {}",
            describe_attribute(settings, attribute),
            targets.len()
        );
        for target in targets {
            let via = target
                .expanded_from
                .as_deref()
                .map(|g| format!(" (expanded from {g})"))
                .unwrap_or_default();
            let row = relay::resolver::HiddenRow {
                role: String::new(),
                target: target.address.clone(),
                status: resolver
                    .hidden_status(&target.address)
                    .await
                    .map_err(|e| e.to_string()),
            };
            say!("  {}{via}  {}", target.address, row.verdict());
        }
    }
    Ok(())
}

async fn queue(action: QueueAction) -> Result<(), Failure> {
    let runtime = |e: control::ControlError| Failure::Runtime(e.to_string());
    match action {
        QueueAction::List { config } => {
            let settings = load(&config)?;
            let all = control::list(&settings.server.spool_dir)
                .await
                .map_err(runtime)?;
            for delivery in &all {
                print_delivery(delivery);
            }
            say!("-- {} in the queue", count(all.len()));
            Ok(())
        }
        QueueAction::Show { id, config } => {
            let settings = load(&config)?;
            let shown = control::show(&settings.server.spool_dir, id)
                .await
                .map_err(runtime)?;
            for delivery in &shown.deliveries {
                print_delivery(delivery);
            }
            for (body, text) in &shown.bodies {
                say!("\n-- body {body}\n{text}");
            }
            Ok(())
        }
        QueueAction::Retry { id, config } => {
            let settings = load(&config)?;
            let n = control::retry(&settings.server.spool_dir, id)
                .await
                .map_err(runtime)?;
            say!("{} scheduled for now", count(n));
            Ok(())
        }
        QueueAction::Delete { id, config } => {
            let settings = load(&config)?;
            let n = control::delete(&settings.server.spool_dir, id)
                .await
                .map_err(runtime)?;
            if n == 0 {
                return Err(Failure::Runtime(format!(
                    "no message or delivery {id} in the queue"
                )));
            }
            say!("{} deleted", count(n));
            Ok(())
        }
    }
}

/// A configured journal attribute, with the attribute a legacy property
/// value stands for: "0x80360000 = extensionAttribute10".
fn describe_attribute(settings: &Settings, attribute: &str) -> String {
    let mapping = settings
        .directory
        .as_ref()
        .and_then(|d| directory::Mapping::load(&d.mapping).ok());
    match mapping.and_then(|m| m.attribute_for(attribute).ok()) {
        Some(name) if !name.eq_ignore_ascii_case(attribute) => format!("{attribute} = {name}"),
        _ => attribute.to_owned(),
    }
}

/// "1 delivery", "3 deliveries".
fn count(n: usize) -> String {
    if n == 1 {
        "1 delivery".into()
    } else {
        format!("{n} deliveries")
    }
}

fn print_delivery(delivery: &Delivery) {
    say!(
        "{:<16} {:<8} {:<9} {:>8}  {:<31}  {:<10}  {} -> {}",
        delivery.id.to_string(),
        delivery.kind.as_str(),
        delivery.direction.as_str(),
        delivery.size,
        relay::queue::rfc5322_date(delivery.created),
        delivery.attempts,
        delivery.reverse_path,
        delivery.next_hop
    );
    say!("{:<16} message {}", "", delivery.message);
    for recipient in &delivery.recipients {
        let state = match &recipient.state {
            RecipientState::Pending(None) => "pending".to_string(),
            RecipientState::Pending(Some(reason)) => format!("deferred: {reason}"),
            RecipientState::Delivered(reply) => format!("delivered: {reply}"),
            RecipientState::Failed(reason) => format!("failed: {reason}"),
        };
        say!("{:<16}   {}  ({state})", "", recipient.address);
    }
}
