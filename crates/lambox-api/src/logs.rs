//! Function logs kept in the data directory, one log per function like CloudWatch's log
//! group `/aws/lambda/NAME`, read back by [`crate::logs_api`].
//!
//! # Layout
//!
//! `DATA/logs/NAME/` holds `group.json` (`{"creationTime": ms}`) and segment files
//! `0000000000000001.jsonl`, `…2.jsonl`, …: one JSON object per line,
//! `{"t": ms, "s": "STREAM", "m": "TEXT"}`, written in order. A record's text may hold line
//! breaks (a traceback is one record); JSON escapes them, so a record is always one line.
//! Streams are named as Lambda names them, `YYYY/MM/DD/[VERSION]<32 hex>`: one per execution
//! environment, dated by its first record.
//!
//! # Writing
//!
//! [`LogStore::sink`] gives the scheduler a [`LogSink`] that stamps each record and hands it
//! to one writer thread over a bounded channel (`try_send`: an invoke never waits for the
//! disk). The thread appends through a `BufWriter` and flushes whenever the channel is empty:
//! no fsync, a record is in the page cache milliseconds after it was written. A full channel
//! or a write error (disk full) drops the record and warns once until writing works again.
//! Every process start opens a new segment, so a line torn by `kill -9` is only ever the last
//! line of an old segment; readers skip lines that do not parse.
//!
//! # Retention
//!
//! Per function at most `retention` bytes of segments (plus at most one record): segments
//! are `retention / 8` bytes; when the total exceeds the bound the oldest segments are
//! deleted. Logs are not deleted with their function (as CloudWatch keeps them).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambox_runtime::{LogRecord, LogSink};
use serde::{Deserialize, Serialize};

/// Default bound of one function's log: 64 MiB.
pub const DEFAULT_RETENTION_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest accepted bound.
pub const MIN_RETENTION_BYTES: u64 = 1024;
/// Lambda's log group prefix.
pub const GROUP_PREFIX: &str = "/aws/lambda/";
/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// A log store error (reading; writing never fails an invoke).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log group {0} does not exist")]
    NoGroup(String),
    #[error("log_retention_bytes {0} is below the minimum of {MIN_RETENTION_BYTES}")]
    Retention(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from milliseconds since the epoch (times chrono cannot
/// represent are clamped to its range).
pub fn utc(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        chrono::DateTime::<chrono::Utc>::MIN_UTC
    } else {
        chrono::DateTime::<chrono::Utc>::MAX_UTC
    });
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Milliseconds since the epoch.
    #[serde(rename = "t")]
    pub timestamp: i64,
    /// Log stream.
    #[serde(rename = "s")]
    pub stream: String,
    /// The record's text (no trailing newline).
    #[serde(rename = "m")]
    pub text: String,
}

/// Where a record is: segment number and byte offset (a stable event id and page token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl Position {
    /// `SEGMENT-OFFSET`.
    pub fn token(&self) -> String {
        format!("{}-{}", self.segment, self.offset)
    }

    /// Parses [`Position::token`].
    pub fn parse(s: &str) -> Option<Position> {
        let (a, b) = s.split_once('-')?;
        Some(Position {
            segment: a.parse().ok()?,
            offset: b.parse().ok()?,
        })
    }
}

/// A log group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub function: String,
    pub creation_time: i64,
    pub stored_bytes: u64,
}

/// A log stream as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub first_event: i64,
    pub last_event: i64,
    pub stored_bytes: u64,
}

/// The log store of one data directory.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
    retention: u64,
    writer: SyncSender<Msg>,
    warn: Arc<Warnings>,
}

#[derive(Debug, Default)]
struct Warnings {
    queue_full: AtomicBool,
    write_failed: AtomicBool,
}

enum Msg {
    Record {
        function: String,
        key: EnvKey,
        timestamp: i64,
        text: String,
    },
    Flush(SyncSender<()>),
}

/// One environment: (version, pool, environment).
type EnvKey = (String, u64, u64);

impl LogStore {
    /// The store under `data_dir/logs` (created); starts its writer thread.
    pub fn open(data_dir: &Path, retention: u64) -> Result<LogStore, LogError> {
        if retention < MIN_RETENTION_BYTES {
            return Err(LogError::Retention(retention));
        }
        let root = data_dir.join("logs");
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let (tx, rx) = sync_channel(QUEUE);
        let warn = Arc::new(Warnings::default());
        let mut writer = Writer {
            root: root.clone(),
            segment_bytes: (retention / 8).max(256),
            retention,
            groups: HashMap::new(),
            streams: HashMap::new(),
            warn: warn.clone(),
        };
        std::thread::Builder::new()
            .name("lambox-logs".into())
            .spawn(move || writer.run(rx))
            .map_err(io(&root))?;
        Ok(LogStore {
            root,
            retention,
            writer: tx,
            warn,
        })
    }

    /// The bound of one function's log.
    pub fn retention(&self) -> u64 {
        self.retention
    }

    /// A sink for the scheduler that writes into this store; `also` receives every record too
    /// (serve's stdout).
    pub fn sink(&self, also: Option<Arc<dyn LogSink>>) -> StoreSink {
        StoreSink {
            writer: self.writer.clone(),
            warn: self.warn.clone(),
            also,
        }
    }

    /// Waits (≤ 2 s) until every record handed to a sink so far is written to the files.
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.writer.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }

    fn group_dir(&self, function: &str) -> Result<PathBuf, LogError> {
        let dir = self.root.join(function);
        if crate::names::valid_name(function) && dir.join("group.json").is_file() {
            Ok(dir)
        } else {
            Err(LogError::NoGroup(format!("{GROUP_PREFIX}{function}")))
        }
    }

    /// Every function that has a log, by name.
    pub fn groups(&self) -> Result<Vec<GroupInfo>, LogError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(dir) = self.group_dir(&name) else {
                continue;
            };
            let stored_bytes = segments(&dir)?.iter().map(|s| s.1).sum();
            out.push(GroupInfo {
                creation_time: creation_time(&dir),
                function: name,
                stored_bytes,
            });
        }
        out.sort_by(|a, b| a.function.cmp(&b.function));
        Ok(out)
    }

    /// The streams of `function`'s log, by name.
    pub fn streams(&self, function: &str) -> Result<Vec<StreamInfo>, LogError> {
        let dir = self.group_dir(function)?;
        let mut streams: BTreeMap<String, StreamInfo> = BTreeMap::new();
        for (seq, _) in segments(&dir)? {
            read_segment(&dir, seq, 0, |_, line_len, r| {
                let s = streams.entry(r.stream.clone()).or_insert(StreamInfo {
                    name: r.stream,
                    first_event: r.timestamp,
                    last_event: r.timestamp,
                    stored_bytes: 0,
                });
                s.first_event = s.first_event.min(r.timestamp);
                s.last_event = s.last_event.max(r.timestamp);
                s.stored_bytes += line_len;
                true
            })?;
        }
        Ok(streams.into_values().collect())
    }

    /// `function`'s records from `from` on, in order, for which `keep` is true, until `visit`
    /// returns false. Returns whether the end of the log was reached.
    pub fn scan(
        &self,
        function: &str,
        from: Option<Position>,
        mut visit: impl FnMut(Position, StoredRecord) -> bool,
    ) -> Result<bool, LogError> {
        let dir = self.group_dir(function)?;
        for (seq, _) in segments(&dir)? {
            let offset = match from {
                Some(p) if p.segment > seq => continue,
                Some(p) if p.segment == seq => p.offset,
                _ => 0,
            };
            let mut stopped = false;
            read_segment(&dir, seq, offset, |pos, _, r| {
                let go = visit(pos, r);
                stopped = !go;
                go
            })?;
            if stopped {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The segments of a group directory, oldest first: (number, bytes).
fn segments(dir: &Path) -> Result<Vec<(u64, u64)>, LogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        // A segment deleted by retention meanwhile is simply not there.
        if let Ok(meta) = entry.metadata() {
            out.push((seq, meta.len()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.jsonl"))
}

fn creation_time(dir: &Path) -> i64 {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Group {
        creation_time: i64,
    }
    std::fs::read(dir.join("group.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Group>(&b).ok())
        .map_or(0, |g| g.creation_time)
}

/// Calls `f(position, line bytes, record)` for each whole, parseable line of segment `seq`
/// from `offset` on, until it returns false. A missing segment (deleted by retention) is
/// empty; a torn or garbled line is skipped.
fn read_segment(
    dir: &Path,
    seq: u64,
    offset: u64,
    mut f: impl FnMut(Position, u64, StoredRecord) -> bool,
) -> Result<(), LogError> {
    let path = segment_path(dir, seq);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&path)(e)),
    };
    file.seek(SeekFrom::Start(offset)).map_err(io(&path))?;
    let mut reader = BufReader::new(file);
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io(&path))? as u64;
        if n == 0 {
            return Ok(());
        }
        let here = Position {
            segment: seq,
            offset: pos,
        };
        pos += n;
        // Without its newline the line is still being written, or was torn by a kill.
        if line.last() != Some(&b'\n') {
            return Ok(());
        }
        match serde_json::from_slice::<StoredRecord>(&line) {
            Ok(r) => {
                if !f(here, n, r) {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::debug!(segment = %path.display(), offset = here.offset, error = %e, "skipping a damaged log line")
            }
        }
    }
}

/// The scheduler's sink: stamps records and queues them for the writer thread.
pub struct StoreSink {
    writer: SyncSender<Msg>,
    warn: Arc<Warnings>,
    also: Option<Arc<dyn LogSink>>,
}

impl std::fmt::Debug for StoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSink").finish_non_exhaustive()
    }
}

impl LogSink for StoreSink {
    fn write(&self, record: &LogRecord<'_>) {
        if let Some(also) = &self.also {
            also.write(record);
        }
        let msg = Msg::Record {
            function: record.function.to_owned(),
            key: (
                record.version.to_owned(),
                record.pool,
                record.environment.unwrap_or(0),
            ),
            timestamp: now_ms(),
            text: record.text.to_owned(),
        };
        match self.writer.try_send(msg) {
            Ok(()) => {
                self.warn.queue_full.store(false, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                if !self.warn.queue_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        function = record.function,
                        "the log writer is behind: dropping log records"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// One function's open log.
struct Group {
    dir: PathBuf,
    /// Closed and current segments, oldest first: (number, bytes).
    segments: VecDeque<(u64, u64)>,
    current: Option<BufWriter<File>>,
    dirty: bool,
}

struct Writer {
    root: PathBuf,
    segment_bytes: u64,
    retention: u64,
    groups: HashMap<String, Group>,
    streams: HashMap<(String, EnvKey), String>,
    warn: Arc<Warnings>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            self.handle(msg);
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg);
            }
            self.flush_all();
        }
        self.flush_all();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record {
                function,
                key,
                timestamp,
                text,
            } => {
                let stream = self
                    .streams
                    .entry((function.clone(), key))
                    .or_insert_with_key(|(_, (version, _, _))| stream_name(timestamp, version))
                    .clone();
                let record = StoredRecord {
                    timestamp,
                    stream,
                    text,
                };
                match self.append(&function, &record) {
                    Ok(()) => self.warn.write_failed.store(false, Ordering::Relaxed),
                    Err(e) => self.failed(&function, &e),
                }
            }
            Msg::Flush(done) => {
                self.flush_all();
                let _ = done.send(());
            }
        }
    }

    fn failed(&mut self, function: &str, e: &LogError) {
        if !self.warn.write_failed.swap(true, Ordering::Relaxed) {
            tracing::warn!(function, error = %e, "cannot write the function log: dropping records until it works again");
        }
        // Start over with a fresh segment: the buffered state is unknown.
        if let Some(g) = self.groups.get_mut(function) {
            g.current = None;
        }
    }

    fn flush_all(&mut self) {
        let mut failed = Vec::new();
        for (name, g) in &mut self.groups {
            if g.dirty {
                g.dirty = false;
                if let Some(w) = &mut g.current {
                    if let Err(e) = w.flush() {
                        failed.push((name.clone(), io(&g.dir)(e)));
                    }
                }
            }
        }
        for (name, e) in failed {
            self.failed(&name, &e);
        }
    }

    fn group(&mut self, function: &str) -> Result<&mut Group, LogError> {
        if !self.groups.contains_key(function) {
            let dir = self.root.join(function);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let meta = dir.join("group.json");
            if !meta.is_file() {
                let body = serde_json::json!({ "creationTime": now_ms() }).to_string();
                std::fs::write(&meta, body).map_err(io(&meta))?;
            }
            let segments = segments(&dir)?.into();
            self.groups.insert(
                function.to_owned(),
                Group {
                    dir,
                    segments,
                    current: None,
                    dirty: false,
                },
            );
        }
        self.groups
            .get_mut(function)
            .ok_or_else(|| LogError::NoGroup(function.to_owned()))
    }

    fn append(&mut self, function: &str, record: &StoredRecord) -> Result<(), LogError> {
        let segment_bytes = self.segment_bytes;
        let retention = self.retention;
        let g = self.group(function)?;
        let mut line = serde_json::to_vec(record).map_err(|e| io(&g.dir)(e.into()))?;
        line.push(b'\n');
        let len = line.len() as u64;
        let full = g.segments.back().is_some_and(|s| s.1 + len > segment_bytes);
        if g.current.is_none() || full {
            if let Some(mut w) = g.current.take() {
                w.flush().map_err(io(&g.dir))?;
            }
            let seq = g.segments.back().map_or(1, |s| s.0 + 1);
            let path = segment_path(&g.dir, seq);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            g.segments.push_back((seq, 0));
            g.current = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        let (Some(w), Some(last)) = (g.current.as_mut(), g.segments.back_mut()) else {
            return Ok(());
        };
        w.write_all(&line).map_err(io(&g.dir))?;
        last.1 += len;
        g.dirty = true;
        let mut total: u64 = g.segments.iter().map(|s| s.1).sum();
        while total > retention && g.segments.len() > 1 {
            let Some((seq, bytes)) = g.segments.pop_front() else {
                break;
            };
            let path = segment_path(&g.dir, seq);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            total -= bytes;
        }
        Ok(())
    }
}

/// `YYYY/MM/DD/[VERSION]<32 hex>`, as Lambda names an environment's stream.
fn stream_name(timestamp: i64, version: &str) -> String {
    let date = utc(timestamp);
    format!(
        "{}/{}/{}/[{version}]{}",
        &date[0..4],
        &date[5..7],
        &date[8..10],
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lambox_runtime::LogSource;

    /// A stdout record of `$LATEST`, environment `env` of pool 1.
    pub(crate) fn record(sink: &StoreSink, function: &str, env: u64, text: &str) {
        sink.write(&LogRecord {
            function,
            version: "$LATEST",
            pool: 1,
            environment: Some(env),
            request_id: None,
            source: LogSource::Stdout,
            text,
        });
    }

    fn texts(store: &LogStore, function: &str) -> Vec<String> {
        let mut out = Vec::new();
        store
            .scan(function, None, |_, r| {
                out.push(r.text);
                true
            })
            .expect("scan");
        out
    }

    fn group_bytes(dir: &Path, function: &str) -> u64 {
        segments(&dir.join("logs").join(function))
            .expect("segments")
            .iter()
            .map(|s| s.1)
            .sum()
    }

    #[test]
    fn records_round_trip_with_streams_and_multiline_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path(), DEFAULT_RETENTION_BYTES).expect("open");
        let sink = store.sink(None);
        record(&sink, "f", 1, "one");
        record(&sink, "f", 1, "Traceback:\n  line 2\n  line 3");
        record(&sink, "f", 2, "other env");
        record(&sink, "g", 1, "g's");
        store.flush();
        assert_eq!(
            texts(&store, "f"),
            ["one", "Traceback:\n  line 2\n  line 3", "other env"]
        );
        let streams = store.streams("f").expect("streams");
        assert_eq!(streams.len(), 2);
        for s in &streams {
            let (date, rest) = s.name.split_at(11);
            assert_eq!(&date[4..5], "/", "{}", s.name);
            let hex = rest.strip_prefix("[$LATEST]").expect("version");
            assert_eq!(hex.len(), 32);
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let groups = store.groups().expect("groups");
        assert_eq!(
            groups
                .iter()
                .map(|g| g.function.as_str())
                .collect::<Vec<_>>(),
            ["f", "g"]
        );
        assert!(
            matches!(store.streams("nope"), Err(LogError::NoGroup(g)) if g == "/aws/lambda/nope")
        );
    }

    #[test]
    fn rotation_keeps_the_newest_within_the_bound_and_reads_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path(), 4096).expect("open");
        let sink = store.sink(None);
        for i in 0..400 {
            record(&sink, "f", 1, &format!("line {i:04} {}", "x".repeat(20)));
        }
        store.flush();
        let bytes = group_bytes(dir.path(), "f");
        assert!(bytes <= 4096, "{bytes}");
        let segs = segments(&dir.path().join("logs/f")).expect("segments");
        assert!(segs.len() > 2, "{segs:?}");
        let texts = texts(&store, "f");
        assert!(texts.len() > 20, "{}", texts.len());
        assert!(texts.last().is_some_and(|t| t.starts_with("line 0399")));
        // In order and contiguous: only the oldest were dropped.
        let first: usize = texts[0][5..9].parse().expect("number");
        for (i, t) in texts.iter().enumerate() {
            assert!(t.starts_with(&format!("line {:04}", first + i)), "{t}");
        }
        // Reading from a position in a later segment starts there.
        let mut positions = Vec::new();
        store
            .scan("f", None, |p, _| {
                positions.push(p);
                true
            })
            .expect("scan");
        let mid = positions[positions.len() / 2];
        let mut n = 0;
        store
            .scan("f", Some(mid), |_, _| {
                n += 1;
                true
            })
            .expect("scan");
        assert_eq!(n, positions.len() - positions.len() / 2);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_a_reopen_writes_a_new_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = LogStore::open(dir.path(), DEFAULT_RETENTION_BYTES).expect("open");
            let sink = store.sink(None);
            record(&sink, "f", 1, "before");
            store.flush();
        }
        // What kill -9 in the middle of a write leaves.
        let seg = segment_path(&dir.path().join("logs/f"), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(br#"{"t":1,"s":"x","m":"tor"#).expect("write");
        drop(f);
        let store = LogStore::open(dir.path(), DEFAULT_RETENTION_BYTES).expect("open");
        let sink = store.sink(None);
        record(&sink, "f", 1, "after");
        store.flush();
        assert_eq!(texts(&store, "f"), ["before", "after"]);
        assert_eq!(segments(&dir.path().join("logs/f")).expect("segs").len(), 2);
    }

    #[test]
    fn an_unwritable_directory_drops_records_without_failing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path(), DEFAULT_RETENTION_BYTES).expect("open");
        // A file where the function's directory would go.
        std::fs::write(dir.path().join("logs/f"), b"").expect("write");
        let sink = store.sink(None);
        record(&sink, "f", 1, "lost");
        record(&sink, "g", 1, "kept");
        store.flush();
        assert_eq!(texts(&store, "g"), ["kept"]);
        assert!(store.streams("f").is_err());
    }

    #[test]
    fn tokens_and_dates() {
        let p = Position {
            segment: 3,
            offset: 120,
        };
        assert_eq!(Position::parse(&p.token()), Some(p));
        assert_eq!(Position::parse("x"), None);
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert!(stream_name(1_709_210_096_789, "3").starts_with("2024/02/29/[3]"));
        assert!(LogStore::open(Path::new("/nonexistent"), 10).is_err());
    }
}
