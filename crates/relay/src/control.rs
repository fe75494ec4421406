//! `mailjournal queue`: inspecting and acting on the spool.
//!
//! The spool file is locked while the gateway runs, so a running gateway
//! answers through a Unix socket in the spool directory (`control.sock`,
//! reachable by whoever may read the spool). When no gateway answers, the
//! command opens the spool itself. Either way the same operations apply:
//! list, show, retry, delete, like `mailq`, `postqueue -f` and `postsuper -d`.
//!
//! The protocol is one request line (`LIST`, `SHOW id`, `RETRY id|*`,
//! `DELETE id`) and one JSON answer, then the connection closes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::queue::QueueHandle;
use crate::spool::{Batch, Delivery, QueueId, Spool, SpoolError};

/// Most bytes of a message shown by `queue show`.
const SHOW_LIMIT: usize = 64 * 1024;

/// Why a queue command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The spool could not be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The running gateway did not answer sensibly.
    #[error("gateway control socket: {0}")]
    Socket(String),
    /// No such message or delivery.
    #[error("no message or delivery {0} in the queue")]
    NotFound(QueueId),
}

/// What `queue show` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shown {
    /// The deliveries of the message (or the one delivery).
    pub deliveries: Vec<Delivery>,
    /// The start of each distinct body, lossily decoded.
    pub bodies: Vec<(QueueId, String)>,
}

#[derive(Serialize, Deserialize)]
enum Answer {
    List(Vec<Delivery>),
    Shown(Shown),
    Count(usize),
    Error(String),
}

fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("control.sock")
}

/// Starts answering queue commands for a running gateway.
pub fn listen(
    spool_dir: &Path,
    queue: QueueHandle,
    spool: Spool,
) -> std::io::Result<JoinHandle<()>> {
    let path = socket_path(spool_dir);
    // A socket left by a gateway that was killed: the spool lock proves no
    // other gateway runs here, so it can go.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let queue = queue.clone();
            let spool = spool.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &queue, &spool).await {
                    warn!(error = %e, "Control request failed.");
                }
            });
        }
    }))
}

/// Removes the control socket at shutdown.
pub fn remove(spool_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(spool_dir));
}

async fn answer(stream: UnixStream, queue: &QueueHandle, spool: &Spool) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(1024)).read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let answer = match (words.next(), words.next()) {
        (Some("LIST"), None) => Answer::List(queue.list().await),
        (Some("RETRY"), Some("*")) => Answer::Count(queue.retry(None).await),
        (Some("RETRY"), Some(id)) => match id.parse() {
            Ok(id) => Answer::Count(queue.retry(Some(id)).await),
            Err(e) => Answer::Error(e),
        },
        (Some("DELETE"), Some(id)) => match id.parse() {
            Ok(id) => Answer::Count(queue.delete(id).await),
            Err(e) => Answer::Error(e),
        },
        (Some("SHOW"), Some(id)) => match id.parse::<QueueId>() {
            Ok(id) => {
                let deliveries = queue.list().await;
                let spool = spool.clone();
                match tokio::task::spawn_blocking(move || show_from(&spool, deliveries, id)).await {
                    Ok(Ok(shown)) => Answer::Shown(shown),
                    Ok(Err(e)) => Answer::Error(e.to_string()),
                    Err(e) => Answer::Error(e.to_string()),
                }
            }
            Err(e) => Answer::Error(e),
        },
        _ => Answer::Error(format!("unknown request {:?}", line.trim())),
    };
    let body = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    write.write_all(&body).await?;
    write.shutdown().await
}

fn show_from(spool: &Spool, all: Vec<Delivery>, id: QueueId) -> Result<Shown, ControlError> {
    let deliveries: Vec<Delivery> = all
        .into_iter()
        .filter(|d| d.id == id || d.message == id)
        .collect();
    if deliveries.is_empty() {
        return Err(ControlError::NotFound(id));
    }
    let mut bodies = Vec::new();
    for delivery in &deliveries {
        if bodies.iter().any(|(b, _)| *b == delivery.body) {
            continue;
        }
        if let Some(bytes) = spool.body(delivery.body)? {
            let end = bytes.len().min(SHOW_LIMIT);
            bodies.push((
                delivery.body,
                String::from_utf8_lossy(&bytes[..end]).into_owned(),
            ));
        }
    }
    Ok(Shown { deliveries, bodies })
}

/// Asks a running gateway; `None` when none answers on the socket.
async fn ask(spool_dir: &Path, request: &str) -> Result<Option<Answer>, ControlError> {
    let Ok(mut stream) = UnixStream::connect(socket_path(spool_dir)).await else {
        return Ok(None);
    };
    let socket = |e: std::io::Error| ControlError::Socket(e.to_string());
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(socket)?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.map_err(socket)?;
    let answer = serde_json::from_slice(&body).map_err(|e| ControlError::Socket(e.to_string()))?;
    Ok(Some(answer))
}

fn unexpected(answer: Answer) -> ControlError {
    match answer {
        Answer::Error(e) => ControlError::Socket(e),
        _ => ControlError::Socket("unexpected answer".into()),
    }
}

/// Every delivery in the queue, oldest first.
pub async fn list(spool_dir: &Path) -> Result<Vec<Delivery>, ControlError> {
    match ask(spool_dir, "LIST").await? {
        Some(Answer::List(all)) => Ok(all),
        Some(other) => Err(unexpected(other)),
        None => {
            let spool = Spool::open(spool_dir)?;
            let mut all = spool.deliveries()?;
            all.sort_by_key(|d| d.id);
            Ok(all)
        }
    }
}

/// The deliveries and bytes of one message or delivery.
pub async fn show(spool_dir: &Path, id: QueueId) -> Result<Shown, ControlError> {
    match ask(spool_dir, &format!("SHOW {id}")).await? {
        Some(Answer::Shown(shown)) => Ok(shown),
        Some(Answer::Error(e)) if e.starts_with("no message") => Err(ControlError::NotFound(id)),
        Some(other) => Err(unexpected(other)),
        None => {
            let spool = Spool::open(spool_dir)?;
            let all = spool.deliveries()?;
            show_from(&spool, all, id)
        }
    }
}

/// Makes one message or delivery, or all, due now; returns how many.
pub async fn retry(spool_dir: &Path, id: Option<QueueId>) -> Result<usize, ControlError> {
    let request = match id {
        Some(id) => format!("RETRY {id}"),
        None => "RETRY *".into(),
    };
    match ask(spool_dir, &request).await? {
        Some(Answer::Count(n)) => Ok(n),
        Some(other) => Err(unexpected(other)),
        None => {
            let spool = Spool::open(spool_dir)?;
            let mut chosen: Vec<Delivery> = spool
                .deliveries()?
                .into_iter()
                .filter(|d| id.is_none_or(|id| d.id == id || d.message == id))
                .collect();
            for delivery in &mut chosen {
                delivery.next_attempt_ms = 0;
            }
            let count = chosen.len();
            spool
                .commit(Batch {
                    put_deliveries: chosen,
                    ..Batch::default()
                })
                .await?;
            Ok(count)
        }
    }
}

/// Deletes one message's deliveries, or one delivery; returns how many.
pub async fn delete(spool_dir: &Path, id: QueueId) -> Result<usize, ControlError> {
    match ask(spool_dir, &format!("DELETE {id}")).await? {
        Some(Answer::Count(n)) => Ok(n),
        Some(other) => Err(unexpected(other)),
        None => {
            let spool = Spool::open(spool_dir)?;
            let all = spool.deliveries()?;
            let (gone, kept): (Vec<Delivery>, Vec<Delivery>) =
                all.into_iter().partition(|d| d.id == id || d.message == id);
            let mut batch = Batch::default();
            for delivery in &gone {
                batch.remove_deliveries.push(delivery.id);
                let shared = kept.iter().any(|k| k.body == delivery.body);
                if !shared && !batch.remove_bodies.contains(&delivery.body) {
                    batch.remove_bodies.push(delivery.body);
                }
            }
            spool.commit(batch).await?;
            Ok(gone.len())
        }
    }
}
