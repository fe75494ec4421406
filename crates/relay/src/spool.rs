//! The spool: what the gateway owes, kept on disk until it is paid.
//!
//! A message is acknowledged only after its bytes and every delivery it owes
//! (the original to each next hop, the journal copy) are written and synced
//! (product contract §4). The store is `redb`, an embedded, crash-safe B-tree
//! in one file: a committed transaction survives a crash, a torn one is rolled
//! back, so the spool needs no recovery code of its own, and one transaction
//! can hold many messages.
//!
//! That last point is what makes the spool fast. All writes go through one
//! writer thread. While it waits for the disk, new requests queue up; it
//! then takes all of them into the next transaction and syncs once for the
//! lot (group commit). Sessions acknowledging at the same moment share one
//! fsync instead of paying one each.
//!
//! Two tables: `bodies` (queue id → message bytes, shared by the deliveries
//! that send them) and `deliveries` (queue id → one delivery as JSON).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use policy::{Address, Direction, ReversePath};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");

/// Most requests taken into one transaction.
const MAX_GROUP: usize = 1024;

/// Failures of the spool.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or file could not be opened or created.
    #[error("cannot open spool at {path}: {message}")]
    Open {
        /// The spool file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Another process (a running gateway) holds the spool.
    #[error("spool at {0} is in use by a running gateway")]
    InUse(String),
    /// A write or sync failed; nothing of the request was kept.
    #[error("spool write failed: {0}")]
    Write(String),
    /// A read failed.
    #[error("spool read failed: {0}")]
    Read(String),
    /// The writer thread is gone (the gateway is shutting down).
    #[error("spool writer stopped")]
    Stopped,
}

/// A queue id: unique, time-ordered, shown in hex like Postfix's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

impl std::str::FromStr for QueueId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(text.trim(), 16)
            .map(QueueId)
            .map_err(|_| format!("{text:?} is not a queue id"))
    }
}

/// What a delivery carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// The original message, to its recipients.
    Original,
    /// The journal copy, to the journal targets.
    Journal,
    /// A delivery status notification we generated.
    Dsn,
}

impl DeliveryKind {
    /// Lower-case name for logs and `queue list`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Original => "original",
            DeliveryKind::Journal => "journal",
            DeliveryKind::Dsn => "dsn",
        }
    }
}

/// Where one recipient of a delivery stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reply")]
pub enum RecipientState {
    /// Not delivered yet; the last temporary failure, if any.
    Pending(Option<String>),
    /// Accepted by the next hop.
    Delivered(String),
    /// Refused for good, or expired; the reason.
    Failed(String),
}

/// One recipient of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recipient {
    /// The address, as the client wrote it.
    pub address: Address,
    /// Where it stands.
    pub state: RecipientState,
}

/// One SMTP transaction (or Maildir write) the gateway owes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// This delivery's id.
    pub id: QueueId,
    /// The id of the message as acknowledged to the client (for logs).
    pub message: QueueId,
    /// Key of the bytes to send in the `bodies` table.
    pub body: QueueId,
    /// What it carries.
    pub kind: DeliveryKind,
    /// Direction of the message it belongs to.
    pub direction: Direction,
    /// The next hop URL.
    pub next_hop: String,
    /// `MAIL FROM`.
    pub reverse_path: ReversePath,
    /// `RCPT TO`, each with its state.
    pub recipients: Vec<Recipient>,
    /// When the message was accepted, seconds since the epoch.
    pub created: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try next, milliseconds since the epoch.
    pub next_attempt_ms: u64,
    /// Size of the body in bytes.
    pub size: u64,
}

impl Delivery {
    /// Recipients not yet delivered or failed.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| matches!(r.state, RecipientState::Pending(_)))
    }
}

/// Changes that go to disk together, in one transaction.
#[derive(Default)]
pub struct Batch {
    /// Bodies to store.
    pub put_bodies: Vec<(QueueId, Arc<Vec<u8>>)>,
    /// Deliveries to store or replace.
    pub put_deliveries: Vec<Delivery>,
    /// Deliveries that are finished.
    pub remove_deliveries: Vec<QueueId>,
    /// Bodies no delivery needs any more.
    pub remove_bodies: Vec<QueueId>,
}

struct WriteRequest {
    batch: Batch,
    done: Option<oneshot::Sender<Result<(), SpoolError>>>,
}

/// Handle on the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    db: Arc<Database>,
    writer: mpsc::Sender<WriteRequest>,
    ids: Arc<AtomicU64>,
    path: PathBuf,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let path = dir.join("spool.redb");
        let open_error = |message: String| SpoolError::Open {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(SpoolError::InUse(path.display().to_string()))
            }
            Err(e) => return Err(open_error(e.to_string())),
        };

        // Create the tables, so that readers find them even on a new spool.
        let txn = db.begin_write().map_err(|e| open_error(e.to_string()))?;
        {
            txn.open_table(BODIES)
                .map_err(|e| open_error(e.to_string()))?;
            txn.open_table(DELIVERIES)
                .map_err(|e| open_error(e.to_string()))?;
        }
        txn.commit().map_err(|e| open_error(e.to_string()))?;

        let db = Arc::new(db);
        let (writer, requests) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || write_loop(&writer_db, &requests))
            .map_err(|e| open_error(e.to_string()))?;

        let spool = Spool {
            db,
            writer,
            ids: Arc::new(AtomicU64::new(0)),
            path,
        };
        let highest = spool.highest_id()?;
        let now = now_micros();
        spool.ids.store(highest.max(now) + 1, Ordering::SeqCst);
        Ok(spool)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh queue id.
    pub fn next_id(&self) -> QueueId {
        QueueId(self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Writes the batch and returns once it is synced to disk.
    pub async fn commit(&self, batch: Batch) -> Result<(), SpoolError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(WriteRequest {
                batch,
                done: Some(done),
            })
            .map_err(|_| SpoolError::Stopped)?;
        wait.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Writes the batch with the next group, without waiting for it. For
    /// bookkeeping whose loss in a crash only means a repeated attempt.
    pub fn submit(&self, batch: Batch) {
        let _ = self.writer.send(WriteRequest { batch, done: None });
    }

    /// Every delivery in the spool (at start, and for `queue list`).
    pub fn deliveries(&self) -> Result<Vec<Delivery>, SpoolError> {
        let read = |e: &dyn fmt::Display| SpoolError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(DELIVERIES).map_err(|e| read(&e))?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (key, value) = entry.map_err(|e| read(&e))?;
            match serde_json::from_slice::<Delivery>(value.value()) {
                Ok(delivery) => all.push(delivery),
                Err(e) => {
                    // Never drop what we cannot read: leave it for a person.
                    tracing::error!(
                        queue_id = %QueueId(key.value()),
                        error = %e,
                        "Unreadable delivery record left in the spool."
                    );
                }
            }
        }
        Ok(all)
    }

    /// The bytes of one body (blocking: call from a blocking context).
    pub fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let read = |e: &dyn fmt::Display| SpoolError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(BODIES).map_err(|e| read(&e))?;
        let body = table.get(id.0).map_err(|e| read(&e))?;
        Ok(body.map(|b| b.value().to_vec()))
    }

    /// Ids of bodies no delivery refers to (left by an interrupted cleanup).
    pub fn orphan_bodies(&self, deliveries: &[Delivery]) -> Result<Vec<QueueId>, SpoolError> {
        let read = |e: &dyn fmt::Display| SpoolError::Read(e.to_string());
        let used: std::collections::HashSet<QueueId> = deliveries.iter().map(|d| d.body).collect();
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(BODIES).map_err(|e| read(&e))?;
        let mut orphans = Vec::new();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (key, _) = entry.map_err(|e| read(&e))?;
            let id = QueueId(key.value());
            if !used.contains(&id) {
                orphans.push(id);
            }
        }
        Ok(orphans)
    }

    fn highest_id(&self) -> Result<u64, SpoolError> {
        let read = |e: &dyn fmt::Display| SpoolError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let mut highest = 0;
        for definition in [BODIES, DELIVERIES] {
            let table = txn.open_table(definition).map_err(|e| read(&e))?;
            let last = table
                .last()
                .map_err(|e| read(&e))?
                .map(|(key, _)| key.value());
            highest = highest.max(last.unwrap_or(0));
        }
        Ok(highest)
    }
}

/// The writer thread: takes every waiting request into one transaction.
fn write_loop(db: &Database, requests: &mpsc::Receiver<WriteRequest>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }

        let result = write_group(db, &group).map_err(|e| {
            tracing::error!(error = %e, requests = group.len(), "Spool write failed.");
            SpoolError::Write(e)
        });
        for request in group {
            if let Some(done) = request.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn write_group(db: &Database, group: &[WriteRequest]) -> Result<(), String> {
    let text = |e: &dyn fmt::Display| e.to_string();
    let mut txn = db.begin_write().map_err(|e| text(&e))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut bodies = txn.open_table(BODIES).map_err(|e| text(&e))?;
        let mut deliveries = txn.open_table(DELIVERIES).map_err(|e| text(&e))?;
        for request in group {
            let batch = &request.batch;
            for (id, bytes) in &batch.put_bodies {
                bodies
                    .insert(id.0, bytes.as_slice())
                    .map_err(|e| text(&e))?;
            }
            for delivery in &batch.put_deliveries {
                let record = serde_json::to_vec(delivery).map_err(|e| text(&e))?;
                deliveries
                    .insert(delivery.id.0, record.as_slice())
                    .map_err(|e| text(&e))?;
            }
            for id in &batch.remove_deliveries {
                deliveries.remove(id.0).map_err(|e| text(&e))?;
            }
            for id in &batch.remove_bodies {
                bodies.remove(id.0).map_err(|e| text(&e))?;
            }
        }
    }
    txn.commit().map_err(|e| text(&e))
}

/// Microseconds since the epoch: the base of queue ids.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    now_micros() / 1_000_000
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    now_micros() / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(spool: &Spool, body: QueueId) -> Delivery {
        Delivery {
            id: spool.next_id(),
            message: body,
            body,
            kind: DeliveryKind::Original,
            direction: Direction::Inbound,
            next_hop: "smtp://127.0.0.1:25".into(),
            reverse_path: ReversePath::Null,
            recipients: vec![Recipient {
                address: Address::parse("bob@example.com", false).expect("address"),
                state: RecipientState::Pending(None),
            }],
            created: now_secs(),
            attempts: 0,
            next_attempt_ms: 0,
            size: 5,
        }
    }

    #[tokio::test]
    async fn committed_deliveries_survive_a_reopen() {
        let dir = tempdir();
        let body_id;
        {
            let spool = Spool::open(&dir).expect("open");
            body_id = spool.next_id();
            let d = delivery(&spool, body_id);
            let batch = Batch {
                put_bodies: vec![(body_id, Arc::new(b"hello".to_vec()))],
                put_deliveries: vec![d],
                ..Batch::default()
            };
            spool.commit(batch).await.expect("commit");
        }
        // The writer thread of the first handle may still hold the file.
        let spool = reopen(&dir);
        let all = spool.deliveries().expect("deliveries");
        assert_eq!(all.len(), 1);
        assert_eq!(spool.body(body_id).expect("read"), Some(b"hello".to_vec()));
        assert!(spool.next_id().0 > body_id.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn many_concurrent_commits_all_land() {
        let dir = tempdir();
        let spool = Spool::open(&dir).expect("open");
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                let body = spool.next_id();
                let batch = Batch {
                    put_bodies: vec![(body, Arc::new(vec![b'x'; 4096]))],
                    put_deliveries: vec![delivery(&spool, body)],
                    ..Batch::default()
                };
                spool.commit(batch).await
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("commit");
        }
        assert_eq!(spool.deliveries().expect("deliveries").len(), 200);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mailjournal-spool-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn reopen(dir: &Path) -> Spool {
        for _ in 0..100 {
            match Spool::open(dir) {
                Ok(spool) => return spool,
                Err(SpoolError::InUse(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("spool stayed in use");
    }
}
