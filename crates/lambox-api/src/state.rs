//! Persistent state: `DATA/lambox-api.db`, SQLite in WAL mode (the image store keeps its own
//! `lambox.db`). Records are JSON documents keyed by function name (and version or alias), so
//! the wire types stay defined once. The schema is versioned with `PRAGMA user_version`;
//! [`MIGRATIONS`] lists every step in order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::StateError;
use crate::model::{AliasConfiguration, FunctionEventInvokeConfig, VersionRecord};

/// Schema steps; `user_version` = how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: functions, published versions, aliases, reserved concurrency, the async event queue.
    "CREATE TABLE functions (
        name TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        latest TEXT NOT NULL,
        next_version INTEGER NOT NULL DEFAULT 1,
        reserved_concurrency INTEGER,
        tags TEXT
     );
     CREATE TABLE versions (
        name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (name, version)
     );
     CREATE TABLE aliases (
        name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        alias TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (name, alias)
     );
     CREATE TABLE events (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        qualifier TEXT NOT NULL,
        payload BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX events_status ON events(status);",
    // 2: asynchronous invocation settings per function version or alias.
    "CREATE TABLE event_invoke_configs (
        name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (name, qualifier)
     );",
    // 3: async retries: when the next attempt is due, the last error, when the event ended,
    // and the qualifier whose event invoke config applies (the alias it was invoked through).
    "ALTER TABLE events ADD COLUMN next_attempt_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE events ADD COLUMN config_qualifier TEXT;
     ALTER TABLE events ADD COLUMN error TEXT;
     ALTER TABLE events ADD COLUMN finished_ms INTEGER;",
    // 4: every invoke sums the reserved concurrency of all functions; a covering partial index
    // keeps that from reading every function's record (1,000 functions: ~0.5 ms an invoke).
    "CREATE INDEX functions_reserved ON functions(reserved_concurrency)
        WHERE reserved_concurrency IS NOT NULL;",
];

/// Largest group of event writes [`EventWriter`] stores in one transaction.
const MAX_EVENT_GROUP: usize = 1024;

type EventAck = tokio::sync::oneshot::Sender<Result<(), String>>;

/// One change to the async event queue.
#[derive(Debug, Clone)]
pub enum EventWrite {
    /// An accepted event, `pending`.
    Insert(StoredEvent),
    /// A run failed; the event runs again at `next_attempt_ms`.
    Retry {
        id: String,
        error: String,
        next_attempt_ms: u64,
    },
    /// The event ended (`succeeded` or `failed`, with the last error), counting `attempts`
    /// runs in this last step (0 when it was dropped without a run).
    Finish {
        id: String,
        status: &'static str,
        attempts: u32,
        error: Option<String>,
        now_ms: u64,
    },
}

/// Group commit of the async event queue: each caller waits until its write is durable (an
/// accepted event is answered 202 only then; a finished event is recorded before its
/// invocation record goes out, so it never runs again after a kill -9), but the writes of
/// concurrent callers — events accepted, runs ended — share one transaction and one sync of
/// the log. A sync costs milliseconds here: one per write would cap the queue at a few
/// hundred events a second. The writer task starts with the first write.
#[derive(Debug, Default)]
pub struct EventWriter {
    tx: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<(EventWrite, EventAck)>>,
}

impl EventWriter {
    /// Applies `write` (with whatever other writes are waiting) and returns once it is
    /// durable.
    pub async fn write(&self, state: &Arc<State>, write: EventWrite) -> Result<(), String> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(write_events(state.clone(), rx));
            tx
        });
        let (ack, done) = tokio::sync::oneshot::channel();
        tx.send((write, ack))
            .map_err(|_| "the event writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the event writer has stopped".to_string())?
    }
}

async fn write_events(
    state: Arc<State>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(EventWrite, EventAck)>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_EVENT_GROUP {
            match rx.try_recv() {
                Ok(e) => group.push(e),
                Err(_) => break,
            }
        }
        let st = state.clone();
        let (writes, acks): (Vec<EventWrite>, Vec<EventAck>) = group.into_iter().unzip();
        let r = tokio::task::spawn_blocking(move || st.write_events(&writes))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        for ack in acks {
            let _ = ack.send(r.clone());
        }
    }
}

/// A stored async event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub name: String,
    pub qualifier: String,
    pub payload: Vec<u8>,
    /// Whose event invoke config applies: the alias the event was sent to, else `qualifier`.
    pub config_qualifier: String,
    /// When lambox accepted it (ms since the epoch).
    pub received_ms: u64,
    /// Runs that ended (each failed, or the event would not be pending).
    pub attempts: u32,
    /// Not to be run before this time (ms since the epoch; 0 = at once).
    pub next_attempt_ms: u64,
}

/// An event as `lambox events` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventSummary {
    pub event_id: String,
    pub function_name: String,
    pub qualifier: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub received_ms: u64,
    pub finished_ms: Option<u64>,
    /// The last attempt's error (the function's error document, or lambox's reason).
    pub error: Option<String>,
    pub payload: String,
}

/// The open state database.
#[derive(Debug)]
pub struct State {
    db: Mutex<Connection>,
    path: String,
    cache: Mutex<ReadCache>,
}

/// Entries a [`ReadCache`] map holds before it starts over (names that do not exist are
/// cached too, so a caller cannot grow it without bound).
const MAX_CACHED: usize = 16 * 1024;

/// What every invoke reads — the function's record, version or alias, its reserved
/// concurrency, the account's sum, the event invoke config — kept in memory so an invoke
/// does not query SQLite (nor wait behind a commit). Only this process writes the database
/// (`lambox serve`); every write goes through [`State::write`], which empties the cache.
/// `generation` counts writes: a value read from the database is cached only if no write
/// came between the read and the caching.
#[derive(Debug, Default)]
struct ReadCache {
    generation: u64,
    latest: HashMap<String, Option<VersionRecord>>,
    versions: HashMap<(String, u64), Option<VersionRecord>>,
    aliases: HashMap<(String, String), Option<AliasConfiguration>>,
    event_configs: HashMap<(String, String), Option<FunctionEventInvokeConfig>>,
    reserved: HashMap<String, Option<Option<u64>>>,
    total_reserved: HashMap<(), u64>,
}

impl ReadCache {
    fn clear(&mut self) {
        self.generation += 1;
        self.latest.clear();
        self.versions.clear();
        self.aliases.clear();
        self.event_configs.clear();
        self.reserved.clear();
        self.total_reserved.clear();
    }
}

/// The database connection for a write: empties the read cache when dropped (after the
/// write, still holding the connection, so no read can cache a value from before it).
struct WriteGuard<'a> {
    conn: MutexGuard<'a, Connection>,
    cache: &'a Mutex<ReadCache>,
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        lock(self.cache).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// Opens (creating and migrating) `dir/lambox-api.db`.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let path = dir.join("lambox-api.db");
        let path_s = path.display().to_string();
        let err = |source| StateError::Db {
            path: path_s.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(StateError::TooNew {
                path: path_s,
                found,
                supported,
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let sql = format!("BEGIN; {step}; PRAGMA user_version = {}; COMMIT;", i + 1);
            conn.execute_batch(&sql).map_err(err)?;
        }
        Ok(State {
            db: Mutex::new(conn),
            path: path_s,
            cache: Mutex::new(ReadCache::default()),
        })
    }

    /// The connection, for reads and for the event queue (not cached).
    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.db)
    }

    /// The connection, for a write to anything the read cache holds.
    fn write(&self) -> WriteGuard<'_> {
        WriteGuard {
            conn: lock(&self.db),
            cache: &self.cache,
        }
    }

    /// `key` in the cache map `map`, else `load`ed from the database and cached.
    fn cached<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        map: fn(&mut ReadCache) -> &mut HashMap<K, V>,
        key: K,
        load: impl FnOnce(&Connection) -> Result<V, StateError>,
    ) -> Result<V, StateError> {
        if let Some(v) = map(&mut lock(&self.cache)).get(&key) {
            return Ok(v.clone());
        }
        let (value, generation) = {
            let conn = self.conn();
            let value = load(&conn)?;
            (value, lock(&self.cache).generation)
        };
        let mut cache = lock(&self.cache);
        if cache.generation == generation {
            let m = map(&mut cache);
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(key, value.clone());
        }
        Ok(value)
    }

    fn db_err(&self, source: rusqlite::Error) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// The `record` column of the one row `sql` selects, decoded (`key` names it in errors).
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        conn: &Connection,
        key: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, StateError> {
        let text: Option<String> = conn
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(params, |r| r.get(0)))
            .optional()
            .map_err(|e| self.db_err(e))?;
        text.map(|t| self.decode(key, &t)).transpose()
    }

    /// The `record` column of every row `sql` selects, decoded, in the query's order.
    fn records<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>, StateError> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare(sql).map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map(params, |r| r.get::<_, String>(0))
                .map_err(|e| self.db_err(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.db_err(e))?;
            rows
        };
        rows.iter().map(|t| self.decode(key, t)).collect()
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        text: &str,
    ) -> Result<T, StateError> {
        serde_json::from_str(text).map_err(|source| StateError::Corrupt {
            path: self.path.clone(),
            key: key.to_owned(),
            source,
        })
    }

    fn encode<T: serde::Serialize>(value: &T) -> String {
        // Plain structs of strings, numbers and maps always serialise.
        serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
    }

    /// Inserts a new function; false if the name is taken.
    pub fn insert_function(
        &self,
        latest: &VersionRecord,
        tags: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<bool, StateError> {
        let conn = self.write();
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO functions (name, seq, latest, tags)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM functions), ?2, ?3)",
                params![
                    latest.configuration.function_name,
                    Self::encode(latest),
                    tags.map(Self::encode)
                ],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// `$LATEST` of `name`.
    pub fn latest(&self, name: &str) -> Result<Option<VersionRecord>, StateError> {
        self.cached(
            |c| &mut c.latest,
            name.to_owned(),
            |conn| {
                self.record(
                    conn,
                    name,
                    "SELECT latest FROM functions WHERE name = ?1",
                    params![name],
                )
            },
        )
    }

    /// Replaces `$LATEST` of an existing function; false if it is gone.
    pub fn put_latest(&self, record: &VersionRecord) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute(
                "UPDATE functions SET latest = ?2 WHERE name = ?1",
                params![record.configuration.function_name, Self::encode(record)],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// Replaces published version `version` of `name` (its state changes, e.g. image gone);
    /// false if it is gone.
    pub fn put_version(
        &self,
        name: &str,
        version: u64,
        record: &VersionRecord,
    ) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute(
                "UPDATE versions SET record = ?3 WHERE name = ?1 AND version = ?2",
                params![name, version as i64, Self::encode(record)],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// Replaces `$LATEST` only if its RevisionId is still `expected` (compare-and-set);
    /// false otherwise.
    pub fn replace_latest_if(
        &self,
        expected_revision: &str,
        record: &VersionRecord,
    ) -> Result<bool, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction().map_err(|e| self.db_err(e))?;
        let name = &record.configuration.function_name;
        let current: Option<String> = tx
            .query_row(
                "SELECT latest FROM functions WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        let Some(current) = current else {
            return Ok(false);
        };
        let current: VersionRecord = self.decode(name, &current)?;
        if current.configuration.revision_id != expected_revision {
            return Ok(false);
        }
        tx.execute(
            "UPDATE functions SET latest = ?2 WHERE name = ?1",
            params![name, Self::encode(record)],
        )
        .map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(true)
    }

    /// Tags of `name`.
    pub fn tags(
        &self,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, StateError> {
        let text: Option<Option<String>> = self
            .conn()
            .query_row(
                "SELECT tags FROM functions WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        text.flatten().map(|t| self.decode(name, &t)).transpose()
    }

    /// Changes the tags of `name` with `change` in one transaction (the new set is stored if
    /// `change` succeeds); `Ok(None)` if there is no such function.
    pub fn update_tags<E: From<StateError>>(
        &self,
        name: &str,
        change: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> Result<(), E>,
    ) -> Result<Option<()>, E> {
        let mut conn = self.write();
        let tx = conn.transaction().map_err(|e| self.db_err(e))?;
        let text: Option<Option<String>> = tx
            .query_row(
                "SELECT tags FROM functions WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        let Some(text) = text else {
            return Ok(None);
        };
        let mut tags = match text {
            Some(t) => self.decode(name, &t)?,
            None => std::collections::BTreeMap::new(),
        };
        change(&mut tags)?;
        tx.execute(
            "UPDATE functions SET tags = ?2 WHERE name = ?1",
            params![name, Self::encode(&tags)],
        )
        .map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(Some(()))
    }

    /// Every function's `$LATEST`, in creation order, after `marker` (a name) if given.
    pub fn list_latest(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, VersionRecord)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT seq, name, latest FROM functions WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map(params![after_seq, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.db_err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db_err(e))?;
        rows.into_iter()
            .map(|(seq, name, t)| Ok((seq, self.decode(&name, &t)?)))
            .collect()
    }

    /// Number of functions.
    pub fn function_count(&self) -> Result<u64, StateError> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM functions", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.db_err(e))
    }

    /// Deletes a function with its versions and aliases; false if it did not exist.
    pub fn delete_function(&self, name: &str) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute("DELETE FROM functions WHERE name = ?1", params![name])
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// Publishes: stores `record` as the function's next version number and returns it, in one
    /// transaction (`make` gets the number and builds the record).
    pub fn publish(
        &self,
        name: &str,
        make: impl FnOnce(u64) -> VersionRecord,
    ) -> Result<Option<VersionRecord>, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction().map_err(|e| self.db_err(e))?;
        let next: Option<i64> = tx
            .query_row(
                "SELECT next_version FROM functions WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        let Some(next) = next else { return Ok(None) };
        let record = make(next as u64);
        tx.execute(
            "INSERT INTO versions (name, version, record) VALUES (?1, ?2, ?3)",
            params![name, next, Self::encode(&record)],
        )
        .map_err(|e| self.db_err(e))?;
        tx.execute(
            "UPDATE functions SET next_version = ?2 WHERE name = ?1",
            params![name, next + 1],
        )
        .map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(Some(record))
    }

    /// A published version.
    pub fn version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>, StateError> {
        self.cached(
            |c| &mut c.versions,
            (name.to_owned(), version),
            |conn| {
                self.record(
                    conn,
                    name,
                    "SELECT record FROM versions WHERE name = ?1 AND version = ?2",
                    params![name, version as i64],
                )
            },
        )
    }

    /// The newest published version.
    pub fn newest_version(&self, name: &str) -> Result<Option<VersionRecord>, StateError> {
        self.record(
            &self.conn(),
            name,
            "SELECT record FROM versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
            params![name],
        )
    }

    /// Every published version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, StateError> {
        self.records(
            name,
            "SELECT record FROM versions WHERE name = ?1 ORDER BY version",
            params![name],
        )
    }

    /// Deletes one published version; false if it did not exist.
    pub fn delete_version(&self, name: &str, version: u64) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute(
                "DELETE FROM versions WHERE name = ?1 AND version = ?2",
                params![name, version as i64],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// Inserts or replaces an alias.
    pub fn put_alias(&self, name: &str, alias: &AliasConfiguration) -> Result<(), StateError> {
        self.write()
            .execute(
                "INSERT OR REPLACE INTO aliases (name, alias, record) VALUES (?1, ?2, ?3)",
                params![name, alias.name, Self::encode(alias)],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// One alias.
    pub fn alias(&self, name: &str, alias: &str) -> Result<Option<AliasConfiguration>, StateError> {
        self.cached(
            |c| &mut c.aliases,
            (name.to_owned(), alias.to_owned()),
            |conn| {
                self.record(
                    conn,
                    name,
                    "SELECT record FROM aliases WHERE name = ?1 AND alias = ?2",
                    params![name, alias],
                )
            },
        )
    }

    /// Every alias of `name`, by alias name.
    pub fn aliases(&self, name: &str) -> Result<Vec<AliasConfiguration>, StateError> {
        self.records(
            name,
            "SELECT record FROM aliases WHERE name = ?1 ORDER BY alias",
            params![name],
        )
    }

    /// Deletes an alias; false if it did not exist.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute(
                "DELETE FROM aliases WHERE name = ?1 AND alias = ?2",
                params![name, alias],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// Sets (Some) or removes (None) the reserved concurrency; false if no such function.
    pub fn set_reserved_concurrency(
        &self,
        name: &str,
        value: Option<u64>,
    ) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute(
                "UPDATE functions SET reserved_concurrency = ?2 WHERE name = ?1",
                params![name, value.map(|v| v as i64)],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// The reserved concurrency of `name` (outer None: no such function).
    pub fn reserved_concurrency(&self, name: &str) -> Result<Option<Option<u64>>, StateError> {
        self.cached(
            |c| &mut c.reserved,
            name.to_owned(),
            |conn| {
                conn.query_row(
                    "SELECT reserved_concurrency FROM functions WHERE name = ?1",
                    params![name],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()
                .map(|o| o.map(|v| v.map(|n| n as u64)))
                .map_err(|e| self.db_err(e))
            },
        )
    }

    /// Sum of every function's reserved concurrency.
    pub fn total_reserved(&self) -> Result<u64, StateError> {
        self.cached(
            |c| &mut c.total_reserved,
            (),
            |conn| {
                conn.query_row(
                    "SELECT COALESCE(SUM(reserved_concurrency), 0) FROM functions
                 WHERE reserved_concurrency IS NOT NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(|e| self.db_err(e))
            },
        )
    }

    /// The event invoke config of `name` at `qualifier`.
    pub fn event_invoke_config(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Result<Option<FunctionEventInvokeConfig>, StateError> {
        let key = (name.to_owned(), qualifier.to_owned());
        self.cached(
            |c| &mut c.event_configs,
            key,
            |conn| {
                self.record(
                    conn,
                    name,
                    "SELECT record FROM event_invoke_configs WHERE name = ?1 AND qualifier = ?2",
                    params![name, qualifier],
                )
            },
        )
    }

    /// Stores (replaces) the event invoke config of `name` at `qualifier`.
    pub fn put_event_invoke_config(
        &self,
        name: &str,
        qualifier: &str,
        config: &FunctionEventInvokeConfig,
    ) -> Result<(), StateError> {
        self.write()
            .execute(
                "INSERT OR REPLACE INTO event_invoke_configs (name, qualifier, record)
                 VALUES (?1, ?2, ?3)",
                params![name, qualifier, Self::encode(config)],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Deletes the event invoke config of `name` at `qualifier`; false if there was none.
    pub fn delete_event_invoke_config(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Result<bool, StateError> {
        let n = self
            .write()
            .execute(
                "DELETE FROM event_invoke_configs WHERE name = ?1 AND qualifier = ?2",
                params![name, qualifier],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(n == 1)
    }

    /// Applies changes to the async event queue durably (`synchronous=FULL`) in one
    /// transaction, so one sync of the log covers them all ([`EventWriter`] groups the writes
    /// of concurrent callers).
    pub fn write_events(&self, writes: &[EventWrite]) -> Result<(), StateError> {
        // Events are not in the read cache: no invalidation.
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.db_err(e))?;
        for write in writes {
            match write {
                EventWrite::Insert(event) => tx
                    .prepare_cached(
                        "INSERT INTO events (id, name, qualifier, payload, received_ms, status,
                         config_qualifier) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            event.id,
                            event.name,
                            event.qualifier,
                            event.payload,
                            event.received_ms as i64,
                            event.config_qualifier
                        ])
                    }),
                EventWrite::Retry {
                    id,
                    error,
                    next_attempt_ms,
                } => tx
                    .prepare_cached(
                        "UPDATE events SET attempts = attempts + 1, error = ?2, next_attempt_ms = ?3
                         WHERE id = ?1",
                    )
                    .and_then(|mut st| st.execute(params![id, error, *next_attempt_ms as i64])),
                EventWrite::Finish {
                    id,
                    status,
                    attempts,
                    error,
                    now_ms,
                } => tx
                    .prepare_cached(
                        "UPDATE events SET status = ?2, attempts = attempts + ?3,
                         error = COALESCE(?4, error), finished_ms = ?5 WHERE id = ?1",
                    )
                    .and_then(|mut st| {
                        st.execute(params![id, status, attempts, error, *now_ms as i64])
                    }),
            }
            .map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// The events of `name` (all, or those with `status`), oldest first.
    pub fn events(
        &self,
        name: &str,
        status: Option<&str>,
    ) -> Result<Vec<EventSummary>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, name, qualifier, status, attempts, received_ms, finished_ms, error, payload
                 FROM events WHERE name = ?1 AND (?2 IS NULL OR status = ?2)
                 ORDER BY received_ms, id",
            )
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map(params![name, status], |r| {
                Ok(EventSummary {
                    event_id: r.get(0)?,
                    function_name: r.get(1)?,
                    qualifier: r.get(2)?,
                    status: r.get(3)?,
                    attempts: r.get(4)?,
                    received_ms: r.get::<_, i64>(5)? as u64,
                    finished_ms: r.get::<_, Option<i64>>(6)?.map(|n| n as u64),
                    error: r.get(7)?,
                    payload: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(8)?).into_owned(),
                })
            })
            .map_err(|e| self.db_err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db_err(e))?;
        Ok(rows)
    }

    /// Events accepted but not yet run to an end, oldest first.
    pub fn pending_events(&self) -> Result<Vec<StoredEvent>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, name, qualifier, payload, received_ms, attempts, next_attempt_ms,
                 COALESCE(config_qualifier, qualifier) FROM events WHERE status = 'pending' ORDER BY received_ms",
            )
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    qualifier: r.get(2)?,
                    payload: r.get(3)?,
                    received_ms: r.get::<_, i64>(4)? as u64,
                    attempts: r.get(5)?,
                    next_attempt_ms: r.get::<_, i64>(6)? as u64,
                    config_qualifier: r.get(7)?,
                })
            })
            .map_err(|e| self.db_err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db_err(e))?;
        Ok(rows)
    }

    /// Events accepted and not yet run to an end.
    pub fn pending_event_count(&self) -> Result<u64, StateError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.db_err(e))
    }

    /// The status of an event (`pending`, `succeeded`, `failed`).
    pub fn event_status(&self, id: &str) -> Result<Option<String>, StateError> {
        self.conn()
            .query_row(
                "SELECT status FROM events WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_in_order_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let version = |d: &Path| -> i64 {
            Connection::open(d.join("lambox-api.db"))
                .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
                .expect("read user_version")
        };
        drop(State::open(dir.path()).expect("create"));
        assert_eq!(version(dir.path()), MIGRATIONS.len() as i64);
        drop(State::open(dir.path()).expect("reopen: nothing to migrate"));
        assert_eq!(version(dir.path()), MIGRATIONS.len() as i64);

        // A database at schema 1 gets only the later steps.
        let old = tempfile::tempdir().expect("tempdir");
        {
            let c = Connection::open(old.path().join("lambox-api.db")).expect("open");
            c.execute_batch(&format!(
                "BEGIN; {}; PRAGMA user_version = 1; COMMIT;",
                MIGRATIONS[0]
            ))
            .expect("schema 1");
        }
        drop(State::open(old.path()).expect("migrate"));
        assert_eq!(version(old.path()), MIGRATIONS.len() as i64);

        Connection::open(dir.path().join("lambox-api.db"))
            .and_then(|c| c.execute_batch("PRAGMA user_version = 99"))
            .expect("set");
        let e = State::open(dir.path()).expect_err("newer schema");
        assert!(matches!(e, StateError::TooNew { found: 99, .. }), "{e}");
    }

    #[test]
    fn cached_reads_follow_every_write() {
        use crate::model::sample_record;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path()).expect("open");
        let rev = |s: &State| {
            s.latest("f")
                .expect("read")
                .map(|r| r.configuration.revision_id)
        };
        // Absent, cached as absent; then created.
        assert_eq!(rev(&state), None);
        assert!(state
            .insert_function(&sample_record("f", "r1"), None)
            .expect("insert"));
        assert_eq!(rev(&state).as_deref(), Some("r1"));
        assert!(state
            .replace_latest_if("r1", &sample_record("f", "r2"))
            .expect("cas"));
        assert_eq!(rev(&state).as_deref(), Some("r2"));
        assert_eq!(state.reserved_concurrency("f").expect("read"), Some(None));
        assert_eq!(state.total_reserved().expect("sum"), 0);
        assert!(state.set_reserved_concurrency("f", Some(7)).expect("set"));
        assert_eq!(
            state.reserved_concurrency("f").expect("read"),
            Some(Some(7))
        );
        assert_eq!(state.total_reserved().expect("sum"), 7);
        let published = state
            .publish("f", |n| {
                let mut r = sample_record("f", "r3");
                r.configuration.version = n.to_string();
                r
            })
            .expect("publish")
            .expect("function exists");
        assert_eq!(state.version("f", 1).expect("read"), Some(published));
        assert!(state.delete_function("f").expect("delete"));
        assert_eq!(rev(&state), None);
        assert_eq!(state.version("f", 1).expect("read"), None);
        assert_eq!(state.reserved_concurrency("f").expect("read"), None);
        assert_eq!(state.total_reserved().expect("sum"), 0);
    }
}
