//! The admin listener (`server.admin_listen`): `/metrics` and `/healthz`.
//!
//! `/metrics` renders the Prometheus recorder (see [`crate::metrics`]),
//! copying the directory's running totals in first. `/healthz` answers 200
//! only while the spool takes a synced write and, when a directory is
//! configured, the directory answers a read of `base_dn` within its timeout;
//! otherwise 503, naming the part that failed. Each probe does real work, so
//! a load balancer or kubelet sees what a client would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::resolver::Resolver;
use crate::spool::{Batch, Spool};

/// How long the spool may take to sync an empty transaction.
const SPOOL_PROBE_LIMIT: Duration = Duration::from_secs(5);

/// What the admin endpoints look at.
pub struct AdminState {
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// The spool, probed by `/healthz`.
    pub spool: Spool,
    /// The directory, when configured.
    pub resolver: Resolver,
    /// The directory's base DN and timeout, when configured.
    pub directory_probe: Option<(String, Duration)>,
}

/// Binds `address` and serves the admin endpoints until aborted.
pub async fn spawn(address: SocketAddr, state: AdminState) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(address).await?;
    info!(address = %address, "Admin endpoints listening (/metrics, /healthz).");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(state));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "Admin listener stopped.");
        }
    }))
}

async fn metrics(State(state): State<Arc<AdminState>>) -> String {
    if state.resolver.directory().is_some() {
        crate::metrics::directory(&state.resolver.stats());
    }
    state.metrics.render()
}

async fn healthz(State(state): State<Arc<AdminState>>) -> (StatusCode, String) {
    let mut healthy = true;
    let mut report = String::new();

    match tokio::time::timeout(SPOOL_PROBE_LIMIT, state.spool.commit(Batch::default())).await {
        Ok(Ok(())) => report.push_str("spool: ok\n"),
        Ok(Err(e)) => {
            healthy = false;
            report.push_str(&format!("spool: failed: {e}\n"));
        }
        Err(_) => {
            healthy = false;
            report.push_str("spool: failed: no synced write within 5s\n");
        }
    }

    if let (Some(directory), Some((base_dn, limit))) =
        (state.resolver.directory(), &state.directory_probe)
    {
        match tokio::time::timeout(*limit, directory.entry_at(base_dn)).await {
            Ok(Ok(Some(_))) => report.push_str("directory: ok\n"),
            Ok(Ok(None)) => {
                healthy = false;
                report.push_str(&format!(
                    "directory: failed: base_dn {base_dn} not found \
                     (or not visible to the bind DN)\n"
                ));
            }
            Ok(Err(e)) => {
                healthy = false;
                report.push_str(&format!("directory: failed: {e}\n"));
            }
            Err(_) => {
                healthy = false;
                report.push_str(&format!(
                    "directory: failed: no answer within {}s\n",
                    limit.as_secs()
                ));
            }
        }
    }

    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report)
}
