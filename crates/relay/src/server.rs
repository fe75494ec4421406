//! `mailjournal serve`: the gateway's processes put together.
//!
//! Opens the spool, starts the queue manager on what it holds, binds the SMTP
//! listeners and the control socket, and runs sessions (at most
//! `max_connections`) until told to stop. Stopping follows the contract: stop
//! accepting, let sessions in flight finish (bounded), make sure every
//! booked outcome is on disk, return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn, Instrument};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::admin::{self, AdminState};
use crate::config::Settings;
use crate::control;
use crate::deliver::{Deliverer, Limits};
use crate::intake::Intake;
use crate::queue::{self, QueueSettings};
use crate::resolver::Resolver;
use crate::smtp::session::{Ending, Session, SessionContext};
use crate::spool::Spool;

/// How long sessions in flight may run on after a stop signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {message}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        message: String,
    },
    /// The TLS certificate or key is unusable.
    #[error("server.tls_cert/tls_key: {0}")]
    Tls(String),
    /// The control socket could not be created.
    #[error("control socket: {0}")]
    Control(String),
    /// The directory configuration is unusable.
    #[error("directory: {0}")]
    Directory(String),
    /// `hidden_check = "strict"` and a global target is not hidden.
    #[error("journal.hidden_check is strict and {0}")]
    NotHidden(String),
}

/// Runs the gateway until `stop` resolves. `metrics_handle` is the
/// installed Prometheus recorder, served at `/metrics` when
/// `server.admin_listen` is set.
pub async fn serve(
    settings: Settings,
    metrics_handle: Option<PrometheusHandle>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = match &settings.server.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key).map_err(ServeError::Tls)?),
        None => None,
    };

    let resolver = Resolver::new(&settings).map_err(|e| ServeError::Directory(e.to_string()))?;
    hidden_check(&settings, &resolver).await?;
    if let Some(directory) = &settings.directory {
        resolver.spawn_global_refresh(directory.cache_ttl);
    }

    let spool = Spool::open(&settings.server.spool_dir)?;
    let deliverer = Arc::new(Deliverer::new(
        &settings.server.hostname,
        Limits {
            connect: settings.queue.connect_timeout,
            command: settings.queue.command_timeout,
        },
    ));
    let queue = queue::start(
        QueueSettings {
            hostname: settings.server.hostname.clone(),
            retry_initial: settings.queue.retry_initial,
            retry_max: settings.queue.retry_max,
            max_age: settings.queue.max_age,
            routing: settings.policy_routing(),
            inbound_next_hop: settings.routing.inbound_next_hop.clone(),
            outbound_next_hop: settings.routing.outbound_next_hop.clone(),
            journal_next_hop: settings.routing.journal_next_hop.clone(),
        },
        spool.clone(),
        deliverer,
    )?;

    let mut listeners = Vec::new();
    for address in &settings.server.listen {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| ServeError::Listen {
                address: *address,
                message: e.to_string(),
            })?;
        listeners.push(listener);
    }
    let control = control::listen(&settings.server.spool_dir, queue.clone(), spool.clone())
        .map_err(|e| ServeError::Control(e.to_string()))?;
    let admin = match (settings.server.admin_listen, metrics_handle) {
        (Some(address), Some(handle)) => {
            let state = AdminState {
                metrics: handle,
                spool: spool.clone(),
                resolver: resolver.clone(),
                directory_probe: settings
                    .directory
                    .as_ref()
                    .map(|d| (d.base_dn.clone(), d.timeout)),
            };
            let task = admin::spawn(address, state)
                .await
                .map_err(|e| ServeError::Listen {
                    address,
                    message: e.to_string(),
                })?;
            Some(task)
        }
        _ => None,
    };

    let context = Arc::new(SessionContext {
        hostname: settings.server.hostname.clone(),
        max_message_size: settings.server.max_message_size,
        routing: settings.policy_routing(),
        intake: Intake::new(&settings, spool.clone(), queue.clone()),
        tls_available: tls.is_some(),
        resolver: resolver.clone(),
    });
    let max_connections = settings.server.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stopping, stop_signal) = watch::channel(false);

    let mut acceptors = Vec::new();
    for listener in listeners {
        let address = listener.local_addr().ok();
        info!(address = ?address, "Listening for SMTP.");
        acceptors.push(tokio::spawn(accept_loop(
            listener,
            Arc::clone(&context),
            tls.clone(),
            Arc::clone(&slots),
            stop_signal.clone(),
        )));
    }
    info!(
        hostname = %settings.server.hostname,
        spool = %settings.server.spool_dir.display(),
        "Gateway started."
    );

    stop.await;
    info!("Stopping: no new sessions; finishing those in flight.");
    for acceptor in &acceptors {
        acceptor.abort();
    }
    control.abort();
    if let Some(admin) = &admin {
        admin.abort();
    }
    let _ = stopping.send(true);

    // Every session holds a slot: once all are back, all sessions are over.
    let drained =
        tokio::time::timeout(DRAIN_LIMIT, slots.acquire_many(max_connections as u32)).await;
    if drained.is_err() {
        warn!("Sessions still open after the drain limit; closing them.");
    }
    queue.shutdown().await;
    control::remove(&settings.server.spool_dir);
    info!("Gateway stopped.");
    Ok(())
}

/// Checks every global journal target and NDR address in the directory:
/// logged under `warn`, fatal under `strict` (product contract §2).
async fn hidden_check(settings: &Settings, resolver: &Resolver) -> Result<(), ServeError> {
    let strict = settings.journal.hidden_check == crate::config::HiddenCheck::Strict;
    for row in resolver.hidden_report(settings).await {
        if row.ok() {
            info!(target = %row.target, role = %row.role, "Journal address is a hidden recipient.");
            continue;
        }
        if strict {
            return Err(ServeError::NotHidden(format!(
                "{} {}: {}",
                row.role,
                row.target,
                row.verdict()
            )));
        }
        if row.status.is_err() {
            warn!(target = %row.target, role = %row.role, verdict = %row.verdict(),
                "Hidden check could not run for a journal address.");
        } else {
            warn!(target = %row.target, role = %row.role, verdict = %row.verdict(),
                "Journal address is not a hidden recipient.");
        }
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    context: Arc<SessionContext>,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);

        // TODO: there is no limit per client address, so one client holding
        // max_connections slow sessions keeps everyone else out until the
        // RFC 5321 timeouts end them.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // RFC 5321 §3.8: a server may refuse with 421 when overloaded.
            tokio::spawn(refuse(socket));
            continue;
        };
        let context = Arc::clone(&context);
        let tls = tls.clone();
        let stop = stop.clone();
        let span = tracing::info_span!("session", client = %peer);
        tokio::spawn(
            async move {
                crate::metrics::session_opened();
                run_session(socket, peer, &context, tls, stop).await;
                crate::metrics::session_closed();
                drop(slot);
            }
            .instrument(span),
        );
    }
}

async fn refuse(mut socket: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = socket
        .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
        .await;
}

async fn run_session(
    socket: TcpStream,
    peer: SocketAddr,
    context: &SessionContext,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let session = Session::new(socket, context, peer.ip(), false, stop.clone());
    let socket = match session.run(true).await {
        Ok(Ending::Closed) => return,
        Ok(Ending::StartTls(socket)) => socket,
        Err(e) => {
            info!(error = %e, "Session ended by an I/O error.");
            return;
        }
    };

    let Some(acceptor) = tls else {
        return;
    };
    let secured = match tokio::time::timeout(Duration::from_secs(60), acceptor.accept(socket)).await
    {
        Ok(Ok(secured)) => secured,
        Ok(Err(e)) => {
            info!(error = %e, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            info!("TLS handshake timed out.");
            return;
        }
    };
    let session = Session::new(secured, context, peer.ip(), true, stop);
    if let Err(e) = session.run(false).await {
        info!(error = %e, "Session ended by an I/O error.");
    }
}
