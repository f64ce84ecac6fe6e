//! Function logs: the environment's stdout and stderr, line by line, framed by Lambda's
//! platform lines, delivered to a [`LogSink`], and kept per invoke for `X-Amz-Log-Type: Tail`.
//!
//! # Records
//!
//! Each line the function writes (up to `\n`) is one [`LogRecord`]. A line longer than
//! 256 KiB (Lambda's largest log event) is cut into records of that size. Bytes that are not
//! UTF-8 are replaced with U+FFFD.
//!
//! A `\r` inside a line does **not** start a new record: AWS's runtime interface clients write
//! one multi-line record (a traceback) as one line whose inner line breaks are `\r` (awslambdaric
//! `bootstrap.py`, `StandardLogSink.log_error`). Such a record is kept whole and its `\r` are
//! turned into `\n`, so [`LogRecord::text`] may hold several lines: a sink prints it as one block
//! (what CloudWatch shows for one event), never interleaved with another record. A `\r`
//! directly before the `\n` (CRLF) is dropped.
//!
//! # Platform lines
//!
//! Formats, from real Lambda transcripts (reference §1.8, §2.3; a CloudWatch console copy with
//! `Runtime.InvalidEntrypoint`):
//!
//! ```text
//! INIT_REPORT Init Duration: 0.79 ms\tPhase: init\tStatus: error\tError Type: Runtime.InvalidEntrypoint
//! START RequestId: <id> Version: $LATEST (or the version number)
//! RequestId: <id> Error: Runtime exited with error: exit status 1\nRuntime.ExitError
//! 2019-09-18T00:02:46.542Z <id> Task timed out after 3.01 seconds
//! END RequestId: <id>
//! REPORT RequestId: <id>\tDuration: 10.05 ms\tBilled Duration: 11 ms\tMemory Size: 128 MB\tMax Memory Used: 3 MB\t
//! ```
//!
//! `REPORT` fields are each followed by a tab, as the raw CloudWatch message and RIE have it;
//! on a cold start `Init Duration: X.XX ms\t` follows `Max Memory Used`, and after a platform
//! failure `Status: timeout\t` or `Status: error\tError Type: T\t` ends the line.
//!
//! # Tail
//!
//! Everything from `START` to `REPORT` (those included), each record followed by `\n`, is the
//! invoke's log; its last 4096 bytes are what `X-Amz-Log-Result` carries base64-encoded.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::net::unix::pipe;

use crate::clock;
use crate::wire::LOG_TAIL_BYTES;

/// Largest record; longer lines are cut (Lambda's maximum log event size).
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The function's standard output.
    Stdout,
    /// The function's standard error.
    Stderr,
    /// A line Lambda itself writes (`START`, `END`, `REPORT`, `INIT_REPORT`, errors).
    Platform,
}

/// One log record.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// Function name.
    pub function: &'a str,
    /// The version the pool runs (`$LATEST` or a number).
    pub version: &'a str,
    /// The pool, unique in this process (a pool rebuilt for a new RevisionId is a new pool,
    /// its environment numbers start again): with `environment`, names one environment.
    pub pool: u64,
    /// Which execution environment of the pool wrote it, when one did.
    pub environment: Option<u64>,
    /// The invoke it belongs to, when it was written during one.
    pub request_id: Option<&'a str>,
    /// Where it came from.
    pub source: LogSource,
    /// The record, without a trailing newline; may contain `\n` (see the module docs).
    pub text: &'a str,
}

/// Receives every log record of a pool, in order. Called synchronously from the log pipeline
/// (possibly while it holds locks): must not block for long.
pub trait LogSink: Send + Sync + 'static {
    /// One record.
    fn write(&self, record: &LogRecord<'_>);
}

/// Prints each record's text and a newline to this process's stdout (what `lambox run` shows).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutLogSink;

impl LogSink for StdoutLogSink {
    fn write(&self, record: &LogRecord<'_>) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not take the server down: ignore write errors.
        let _ = out.write_all(record.text.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// A record as [`MemoryLogSink`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLogRecord {
    /// See [`LogRecord::environment`].
    pub environment: Option<u64>,
    /// See [`LogRecord::request_id`].
    pub request_id: Option<String>,
    /// See [`LogRecord::source`].
    pub source: LogSource,
    /// See [`LogRecord::text`].
    pub text: String,
}

/// Keeps every record in memory (tests, or a server that shows recent logs).
#[derive(Debug, Clone, Default)]
pub struct MemoryLogSink {
    records: Arc<Mutex<Vec<OwnedLogRecord>>>,
}

impl MemoryLogSink {
    /// An empty sink; clones share the records.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the records so far.
    pub fn records(&self) -> Vec<OwnedLogRecord> {
        lock(&self.records).clone()
    }

    /// The records' texts, one `\n`-terminated line each, as a printer would show them.
    pub fn text(&self) -> String {
        lock(&self.records)
            .iter()
            .map(|r| format!("{}\n", r.text))
            .collect()
    }
}

impl LogSink for MemoryLogSink {
    fn write(&self, record: &LogRecord<'_>) {
        lock(&self.records).push(OwnedLogRecord {
            environment: record.environment,
            request_id: record.request_id.map(str::to_owned),
            source: record.source,
            text: record.text.to_owned(),
        });
    }
}

/// Locks, ignoring poisoning (a panicking sink must not wedge every later invoke).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pool's view of its sink: the sink plus the function name.
#[derive(Clone)]
pub(crate) struct Emitter {
    sink: Arc<dyn LogSink>,
    function: Arc<str>,
    version: Arc<str>,
    pool: u64,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl Emitter {
    pub(crate) fn new(sink: Arc<dyn LogSink>, function: &str, version: &str) -> Self {
        static NEXT_POOL: AtomicU64 = AtomicU64::new(1);
        Emitter {
            sink,
            function: function.into(),
            version: version.into(),
            pool: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(crate) fn write(
        &self,
        environment: Option<u64>,
        request_id: Option<&str>,
        source: LogSource,
        text: &str,
    ) {
        self.sink.write(&LogRecord {
            function: &self.function,
            version: &self.version,
            pool: self.pool,
            environment,
            request_id,
            source,
            text,
        });
    }
}

/// The log of one invoke, `START` to `REPORT`: records go to the sink and into the tail.
#[derive(Debug)]
pub(crate) struct InvokeLog {
    emitter: Emitter,
    environment: Mutex<Option<u64>>,
    request_id: String,
    tail: Mutex<Vec<u8>>,
}

impl InvokeLog {
    pub(crate) fn new(emitter: Emitter, request_id: &str) -> Self {
        InvokeLog {
            emitter,
            environment: Mutex::new(None),
            request_id: request_id.to_owned(),
            tail: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn set_environment(&self, environment: Option<u64>) {
        *lock(&self.environment) = environment;
    }

    /// A platform line of this invoke.
    pub(crate) fn platform(&self, text: &str) {
        self.record(LogSource::Platform, text);
    }

    fn record(&self, source: LogSource, text: &str) {
        let env = *lock(&self.environment);
        let mut tail = lock(&self.tail);
        self.emitter
            .write(env, Some(&self.request_id), source, text);
        tail.extend_from_slice(text.as_bytes());
        tail.push(b'\n');
        // Keep memory bounded: only the last LOG_TAIL_BYTES are ever returned.
        if tail.len() > 16 * LOG_TAIL_BYTES {
            let cut = tail.len() - LOG_TAIL_BYTES;
            tail.drain(..cut);
        }
    }

    /// The last 4 KB of this invoke's log.
    pub(crate) fn tail(&self) -> Bytes {
        let tail = lock(&self.tail);
        let start = tail.len().saturating_sub(LOG_TAIL_BYTES);
        Bytes::copy_from_slice(&tail[start..])
    }
}

/// The log of one execution environment: function output goes to the current invoke's log, or
/// straight to the sink between invokes (init, background work).
#[derive(Debug)]
pub(crate) struct EnvLog {
    emitter: Emitter,
    environment: u64,
    current: Mutex<Option<Arc<InvokeLog>>>,
}

impl EnvLog {
    pub(crate) fn new(emitter: Emitter, environment: u64) -> Self {
        EnvLog {
            emitter,
            environment,
            current: Mutex::new(None),
        }
    }

    /// From now on function output belongs to `invoke` (or to no invoke).
    pub(crate) fn attach(&self, invoke: Option<Arc<InvokeLog>>) {
        if let Some(inv) = &invoke {
            inv.set_environment(Some(self.environment));
        }
        *lock(&self.current) = invoke;
    }

    fn function_line(&self, source: LogSource, text: &str) {
        let current = lock(&self.current).clone();
        match current {
            Some(inv) => inv.record(source, text),
            None => self
                .emitter
                .write(Some(self.environment), None, source, text),
        }
    }
}

/// Turns raw line bytes into record text (see the module docs).
pub(crate) fn record_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).replace('\r', "\n")
}

/// Splits a byte stream into lines.
#[derive(Debug, Default)]
struct LineBuf {
    partial: Vec<u8>,
    eof: bool,
}

impl LineBuf {
    fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                emit_cut(&data[..nl], &mut emit);
            } else {
                self.partial.extend_from_slice(&data[..nl]);
                emit_cut(&self.partial, &mut emit);
                self.partial.clear();
            }
            data = &data[nl + 1..];
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() >= MAX_RECORD_BYTES {
            let rest = self.partial.split_off(MAX_RECORD_BYTES);
            emit(&self.partial);
            self.partial = rest;
        }
    }

    fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

fn emit_cut(line: &[u8], emit: &mut impl FnMut(&[u8])) {
    if line.is_empty() {
        emit(line);
    }
    for chunk in line.chunks(MAX_RECORD_BYTES) {
        emit(chunk);
    }
}

/// One of the environment's output pipes (non-blocking), read by a task and drained on demand.
///
/// The drain is what keeps `END` after the function's last lines: every byte the function
/// wrote before it called `/next` is in the pipe or already emitted when the driver sees that
/// call, and [`Pipe::drain`] reads the pipe dry under the same lock the reader task holds while
/// it reads and emits.
#[derive(Debug)]
pub(crate) struct Pipe {
    rx: pipe::Receiver,
    source: LogSource,
    lines: Mutex<LineBuf>,
    log: Arc<EnvLog>,
}

enum ReadOutcome {
    WouldBlock,
    Eof,
}

impl Pipe {
    /// Takes the pipe (made non-blocking) and starts its reader task.
    pub(crate) fn start(
        fd: OwnedFd,
        source: LogSource,
        log: Arc<EnvLog>,
    ) -> std::io::Result<(Arc<Pipe>, tokio::task::JoinHandle<()>)> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        let pipe = Arc::new(Pipe {
            // Not necessarily a pipe (a launcher may hand over a socket): any readable,
            // now non-blocking descriptor works.
            rx: pipe::Receiver::from_owned_fd_unchecked(fd)?,
            source,
            lines: Mutex::new(LineBuf::default()),
            log,
        });
        let reader = pipe.clone();
        let task = tokio::spawn(async move { reader.read_loop().await });
        Ok((pipe, task))
    }

    async fn read_loop(&self) {
        loop {
            if let Err(e) = self.rx.readable().await {
                tracing::debug!(error = %e, "log pipe closed");
                return;
            }
            if let ReadOutcome::Eof = self.read_available(usize::MAX, true) {
                return;
            }
        }
    }

    /// Reads and emits what the pipe holds now (up to about `budget` bytes). `via_tokio`
    /// reads through tokio so that an empty pipe clears its readiness (the reader task);
    /// otherwise the descriptor is read directly, whatever tokio believes (the drain).
    fn read_available(&self, budget: usize, via_tokio: bool) -> ReadOutcome {
        let mut lines = lock(&self.lines);
        if lines.eof {
            return ReadOutcome::Eof;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut read = 0usize;
        let emit = |line: &[u8]| self.log.function_line(self.source, &record_text(line));
        loop {
            let result = if via_tokio {
                self.rx.try_read(&mut buf)
            } else {
                rustix::io::read(&self.rx, &mut buf).map_err(std::io::Error::from)
            };
            match result {
                Ok(0) => {
                    lines.flush(emit);
                    lines.eof = true;
                    return ReadOutcome::Eof;
                }
                Ok(n) => {
                    lines.feed(&buf[..n], emit);
                    read += n;
                    if read >= budget {
                        return ReadOutcome::WouldBlock;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return ReadOutcome::WouldBlock
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading a log pipe failed");
                    lines.flush(emit);
                    lines.eof = true;
                    return ReadOutcome::Eof;
                }
            }
        }
    }

    /// Emits everything written so far, including an unterminated last line.
    pub(crate) fn drain(&self) {
        // A function writing without pause cannot hold the invoke's end back for long.
        let _ = self.read_available(4 * 1024 * 1024, false);
        let emit = |line: &[u8]| self.log.function_line(self.source, &record_text(line));
        lock(&self.lines).flush(emit);
    }
}

/// `START RequestId: <id> Version: <version>` (`$LATEST` or a number).
pub(crate) fn start_line(request_id: &str, version: &str) -> String {
    format!("START RequestId: {request_id} Version: {version}")
}

/// `END RequestId: <id>`.
pub(crate) fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

/// How an invoke ended, for `REPORT … Status:` and `INIT_REPORT … Status:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlatformStatus {
    /// No status field (success, or an error the function itself reported).
    None,
    /// `Status: timeout`.
    Timeout,
    /// `Status: error\tError Type: T`.
    Error(String),
}

/// The fields of a `REPORT` line.
#[derive(Debug, Clone)]
pub(crate) struct Report<'a> {
    pub request_id: &'a str,
    pub duration: Duration,
    pub billed_ms: u64,
    pub memory_mb: u32,
    pub max_memory_used_mb: u64,
    pub init_duration: Option<Duration>,
    pub status: PlatformStatus,
}

/// `REPORT RequestId: …\tDuration: …` (see the module docs).
pub(crate) fn report_line(r: &Report<'_>) -> String {
    let mut line = format!(
        "REPORT RequestId: {}\tDuration: {} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
        r.request_id,
        clock::millis_2(r.duration),
        r.billed_ms,
        r.memory_mb,
        r.max_memory_used_mb
    );
    if let Some(init) = r.init_duration {
        line.push_str(&format!("Init Duration: {} ms\t", clock::millis_2(init)));
    }
    match &r.status {
        PlatformStatus::None => {}
        PlatformStatus::Timeout => line.push_str("Status: timeout\t"),
        PlatformStatus::Error(t) => line.push_str(&format!("Status: error\tError Type: {t}\t")),
    }
    line
}

/// `INIT_REPORT Init Duration: X ms\tPhase: init|invoke\tStatus: …`.
pub(crate) fn init_report_line(duration: Duration, phase: &str, status: &PlatformStatus) -> String {
    let mut line = format!(
        "INIT_REPORT Init Duration: {} ms\tPhase: {phase}",
        clock::millis_2(duration)
    );
    match status {
        PlatformStatus::None => line.push_str("\tStatus: success"),
        PlatformStatus::Timeout => line.push_str("\tStatus: timeout"),
        PlatformStatus::Error(t) => line.push_str(&format!("\tStatus: error\tError Type: {t}")),
    }
    line
}

/// `<ISO time> <id> Task timed out after 3.01 seconds`.
pub(crate) fn timeout_line(now: SystemTime, request_id: &str, elapsed: Duration) -> String {
    format!(
        "{} {request_id} Task timed out after {:.2} seconds",
        clock::iso8601_millis(now),
        elapsed.as_secs_f64()
    )
}

/// `RequestId: <id> Error: <message>` and the error type on a second line.
pub(crate) fn error_line(request_id: &str, message: &str, error_type: &str) -> String {
    format!("RequestId: {request_id} Error: {message}\n{error_type}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut buf = LineBuf::default();
        let mut out = Vec::new();
        for c in chunks {
            buf.feed(c, |l| out.push(record_text(l)));
        }
        buf.flush(|l| out.push(record_text(l)));
        out
    }

    #[test]
    fn splits_lines_and_keeps_cr_records_whole() {
        assert_eq!(
            lines_of(&[
                b"a\nb",
                b"c\r\n",
                b"[ERROR] x\rTraceback\r  File\n",
                b"tail"
            ]),
            ["a", "bc", "[ERROR] x\nTraceback\n  File", "tail"]
        );
        assert_eq!(lines_of(&[b"\n\n"]), ["", ""]);
        assert_eq!(lines_of(&[b"\xff\n"]), ["\u{fffd}"]);
    }

    #[test]
    fn cuts_long_lines() {
        let long = vec![b'x'; MAX_RECORD_BYTES + 10];
        let out = lines_of(&[&long, b"\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_RECORD_BYTES);
        assert_eq!(out[1].len(), 10);
    }

    #[test]
    fn platform_line_formats() {
        let id = "8f507cfc-xmpl-4697-b07a-ac58fc914c95";
        assert_eq!(
            start_line(id, "$LATEST"),
            format!("START RequestId: {id} Version: $LATEST")
        );
        assert_eq!(end_line(id), format!("END RequestId: {id}"));
        let mut r = Report {
            request_id: id,
            duration: Duration::from_micros(15_740),
            billed_ms: 16,
            memory_mb: 128,
            max_memory_used_mb: 56,
            init_duration: None,
            status: PlatformStatus::None,
        };
        assert_eq!(
            report_line(&r),
            format!("REPORT RequestId: {id}\tDuration: 15.74 ms\tBilled Duration: 16 ms\tMemory Size: 128 MB\tMax Memory Used: 56 MB\t")
        );
        r.init_duration = Some(Duration::from_micros(130_260));
        r.status = PlatformStatus::Error("Runtime.ExitError".into());
        assert_eq!(
            report_line(&r),
            format!("REPORT RequestId: {id}\tDuration: 15.74 ms\tBilled Duration: 16 ms\tMemory Size: 128 MB\tMax Memory Used: 56 MB\tInit Duration: 130.26 ms\tStatus: error\tError Type: Runtime.ExitError\t")
        );
        assert_eq!(
            init_report_line(
                Duration::from_micros(790),
                "init",
                &PlatformStatus::Error("Runtime.InvalidEntrypoint".into())
            ),
            "INIT_REPORT Init Duration: 0.79 ms\tPhase: init\tStatus: error\tError Type: Runtime.InvalidEntrypoint"
        );
        assert_eq!(
            init_report_line(
                Duration::from_millis(10_000),
                "invoke",
                &PlatformStatus::Timeout
            ),
            "INIT_REPORT Init Duration: 10000.00 ms\tPhase: invoke\tStatus: timeout"
        );
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_568_764_966_542);
        assert_eq!(
            timeout_line(t, "f2704689", Duration::from_millis(5_010)),
            "2019-09-18T00:02:46.542Z f2704689 Task timed out after 5.01 seconds"
        );
    }

    #[test]
    fn tail_keeps_the_last_4_kb() {
        let sink = MemoryLogSink::new();
        let log = InvokeLog::new(Emitter::new(Arc::new(sink.clone()), "f", "$LATEST"), "id");
        for i in 0..1000 {
            log.platform(&format!("line {i:04} ................................"));
        }
        let tail = log.tail();
        assert_eq!(tail.len(), LOG_TAIL_BYTES);
        assert!(tail.ends_with(b"line 0999 ................................\n"));
        assert_eq!(sink.records().len(), 1000);
        assert_eq!(sink.records()[0].request_id.as_deref(), Some("id"));
    }
}
