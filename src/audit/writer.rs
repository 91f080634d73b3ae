//! The JSON-lines sink: a bounded queue in front of one writer thread.

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::auditor::AuditSink;
use super::chain::{Chain, ChainKey};
use super::event::{AuditEvent, EventType};
use crate::error::ConfigError;

/// Queue capacity by default.
pub const DEFAULT_CAPACITY: usize = 8192;
/// The writer writes its batch when it grows beyond this many bytes, and whenever the queue
/// is empty.
const BATCH_BYTES: usize = 256 * 1024;
/// Line buffers the writer hands back for reuse, at most: the request path formats its line
/// into one instead of allocating. Enough for the lines of one poll interval at about
/// 100,000 requests per second.
const SPARE_LINES: usize = 512;
/// Spare line buffers a recording thread takes from the shared pool at a time.
const LOCAL_LINES: usize = 32;
/// Capacity a new line buffer starts with: room for a typical line, so it rarely grows.
const LINE_CAPACITY: usize = 512;
/// Line buffers that grew beyond this many bytes (an event with a large detail) are freed
/// instead of reused, so one huge event does not pin memory in the pool.
const MAX_SPARE_CAPACITY: usize = 4096;
/// While busy the writer polls the queue every few milliseconds instead of sleeping on it, so
/// producers never pay for a wake-up; after this many empty polls (about 100 ms without
/// events) it sleeps until woken. Each poll costs the writer a context switch and a `write`:
/// at 40,000 requests per second a 1 ms interval spent about 0.4 µs of CPU per request on
/// them (docs/benchmarks.md), 5 ms a fifth of that, while lines still reach the file within
/// 5 ms.
const IDLE_POLLS: u32 = 20;
const POLL: Duration = Duration::from_millis(5);

/// What [`JsonLinesSink::record`](AuditSink::record) does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for room: nothing is lost, but a request thread stalls while the writer is
    /// behind (a slow or full disk slows the service down). The default.
    Block,
    /// Drop the event and count it: the service never stalls on the audit trail, and every
    /// loss is counted ([`SinkStats::dropped`], metric `portcullis_audit_events_dropped_total`)
    /// and written into the log itself as an `audit.loss` event.
    Drop,
}

/// Counters of a [`JsonLinesSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SinkStats {
    /// Events accepted into the queue.
    pub enqueued: u64,
    /// Event lines written (not counting `audit.loss` and `audit.sealed` lines).
    pub written: u64,
    /// Events lost: dropped on overflow, offered after shutdown, or in a write that failed.
    pub dropped: u64,
    /// Events waiting in the queue.
    pub queued: u64,
}

/// What [`JsonLinesSink::shutdown`] leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Final counters.
    pub stats: SinkStats,
    /// The hash of the last line (the seal) of a chained file, hex: keep it apart from the
    /// file (another system, a ticket) to detect later truncation back to an earlier seal.
    pub last_hash: Option<String>,
    /// Lines in the chained file (its last `seq`).
    pub lines: Option<u64>,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    processed: AtomicU64,
}

enum Msg {
    /// An event's line without its closing brace (see [`AuditEvent::write_json_fields`]):
    /// the writer finishes it, chaining it when the file is chained.
    Line(Vec<u8>),
    Flush(SyncSender<io::Result<()>>),
    Shutdown(SyncSender<io::Result<ShutdownReport>>),
}

enum Target {
    Stdout,
    File(PathBuf),
    Writer(Box<dyn Write + Send>),
}

/// Writes audit events as JSON lines (schema in `docs/audit-events.md`) to stdout, a file or
/// any writer, from a background thread fed through a bounded queue.
///
/// The request path formats the event's line into a reused buffer and queues the bytes (as
/// `tracing-appender`'s non-blocking writer does): the event itself never crosses threads.
/// Hashing and I/O happen on the writer thread, which writes in batches. A file is always
/// hash-chained (see [`chain`](super::chain)): opening an existing file continues its chain
/// after its last line. [`shutdown`](JsonLinesSink::shutdown) writes everything queued before
/// it, seals a file and syncs it to disk. Dropping every handle without it lets the thread
/// finish in the background, but the process may exit first: call `shutdown`.
///
/// ```
/// use portcullis::audit::{AuditEvent, Auditor, EventType, JsonLinesSink, VerifyOptions, verify_file};
///
/// let dir = std::env::temp_dir().join(format!("portcullis-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("audit.jsonl");
/// # let _ = std::fs::remove_file(&path);
/// let sink = JsonLinesSink::file(&path).build().unwrap();
/// let auditor = Auditor::builder().sink(sink.clone()).build().unwrap();
/// for _ in 0..3 {
///     auditor.record(AuditEvent::new(EventType::AuthzDeny));
/// }
/// let report = sink.shutdown().unwrap();
/// assert_eq!(report.stats.written, 3);
/// // Three events and the seal.
/// assert_eq!(verify_file(&path, &VerifyOptions::default()).unwrap().lines, 4);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct JsonLinesSink {
    inner: Arc<Shared>,
}

struct Shared {
    tx: SyncSender<Msg>,
    overflow: Overflow,
    counters: Arc<Counters>,
    spare: Arc<Spare>,
    thread: Mutex<Option<JoinHandle<()>>>,
    chained: bool,
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("overflow", &self.inner.overflow)
            .field("chained", &self.inner.chained)
            .field("stats", &self.stats())
            .finish()
    }
}

impl JsonLinesSink {
    /// Lines on standard output (not chained).
    pub fn stdout() -> JsonLinesSinkBuilder {
        JsonLinesSinkBuilder::new(Target::Stdout)
    }

    /// A hash-chained file, created with mode 0600 when absent, appended to otherwise.
    pub fn file(path: impl Into<PathBuf>) -> JsonLinesSinkBuilder {
        JsonLinesSinkBuilder::new(Target::File(path.into()))
    }

    /// Lines to any writer (not chained), for instance a pipe or a test buffer. The writer
    /// is used from the background thread only.
    pub fn writer(writer: impl Write + Send + 'static) -> JsonLinesSinkBuilder {
        JsonLinesSinkBuilder::new(Target::Writer(Box::new(writer)))
    }

    /// Current counters.
    pub fn stats(&self) -> SinkStats {
        let c = &self.inner.counters;
        let enqueued = c.enqueued.load(Ordering::Relaxed);
        SinkStats {
            enqueued,
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            queued: enqueued.saturating_sub(c.processed.load(Ordering::Relaxed)),
        }
    }

    /// Waits until every event queued before this call is written (and a file synced).
    pub fn flush(&self) -> io::Result<()> {
        let (ack, done) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Msg::Flush(ack))
            .map_err(|_| io::Error::other("the audit writer has stopped"))?;
        done.recv()
            .map_err(|_| io::Error::other("the audit writer has stopped"))?
    }

    /// Writes everything queued before this call, seals and syncs a chained file, and stops
    /// the writer thread. Events recorded afterwards are counted as dropped. Call it after the
    /// server has stopped accepting requests (axum's graceful shutdown) so nothing is lost.
    pub fn shutdown(&self) -> io::Result<ShutdownReport> {
        let (ack, done) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Msg::Shutdown(ack))
            .map_err(|_| io::Error::other("the audit writer has already stopped"))?;
        let report = done
            .recv()
            .map_err(|_| io::Error::other("the audit writer has stopped"))?;
        let handle = self
            .inner
            .thread
            .lock()
            .map(|mut slot| slot.take())
            .unwrap_or(None);
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        report.map(|mut r| {
            r.stats = self.stats();
            r
        })
    }
}

impl AuditSink for JsonLinesSink {
    fn record(&self, event: &AuditEvent) {
        let mut line = self.inner.spare.take();
        event.write_json_fields(&mut line);
        let msg = Msg::Line(line);
        let counters = &self.inner.counters;
        let refused = match self.inner.overflow {
            Overflow::Block => self.inner.tx.send(msg).err().map(|e| e.0),
            Overflow::Drop => match self.inner.tx.try_send(msg) {
                Ok(()) => None,
                Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => Some(msg),
            },
        };
        match refused {
            None => {
                counters.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Some(msg) => {
                if let Msg::Line(line) = msg {
                    self.inner.spare.give_back(line);
                }
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                super::metrics::audit_dropped(1);
            }
        }
    }

    fn record_owned(&self, event: AuditEvent) {
        // Formatted here, the event is dropped on the thread that built it (its `Principal`
        // and route reference counts stay on this core).
        self.record(&event);
    }
}

/// Configures a [`JsonLinesSink`].
#[must_use]
pub struct JsonLinesSinkBuilder {
    target: Target,
    capacity: usize,
    overflow: Overflow,
    key: Option<ChainKey>,
}

impl fmt::Debug for JsonLinesSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSinkBuilder")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl JsonLinesSinkBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            capacity: DEFAULT_CAPACITY,
            overflow: Overflow::Block,
            key: None,
        }
    }

    /// Queue capacity in events. Default [`DEFAULT_CAPACITY`] (8192). Larger absorbs longer
    /// bursts of a slow disk at the cost of memory (a queued event is its formatted line, a
    /// few hundred bytes).
    pub fn capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.capacity = capacity.get();
        self
    }

    /// What to do when the queue is full. Default [`Overflow::Block`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Chains the file with HMAC-SHA-256 under `key` instead of plain SHA-256, so only a
    /// holder of the key can rewrite it undetected. Files only.
    pub fn hmac_key(mut self, key: ChainKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Opens the target (continuing a file's chain) and starts the writer thread.
    pub fn build(self) -> Result<JsonLinesSink, ConfigError> {
        let (out, chain): (Out, Option<Chain>) = match self.target {
            Target::Stdout => {
                if self.key.is_some() {
                    return Err(ConfigError::new("an HMAC key needs a file sink"));
                }
                (Out::Stdout, None)
            }
            Target::Writer(w) => {
                if self.key.is_some() {
                    return Err(ConfigError::new("an HMAC key needs a file sink"));
                }
                (Out::Writer(w), None)
            }
            Target::File(path) => {
                let chain = Chain::resume(&path, self.key)?;
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let file = options
                    .open(&path)
                    .map_err(|e| ConfigError::new(format!("audit file {}: {e}", path.display())))?;
                (Out::File(file), Some(chain))
            }
        };
        let chained = chain.is_some();
        let (tx, rx) = mpsc::sync_channel(self.capacity);
        let counters = Arc::new(Counters::default());
        let spare = Arc::new(Spare::default());
        let writer = Writer {
            rx,
            out,
            chain,
            counters: counters.clone(),
            buf: Vec::with_capacity(BATCH_BYTES + 4096),
            pending: 0,
            reported_dropped: 0,
            reported_depth: None,
            spare: spare.clone(),
            emptied: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || writer.run())
            .map_err(|e| ConfigError::new(format!("cannot start the audit writer: {e}")))?;
        Ok(JsonLinesSink {
            inner: Arc::new(Shared {
                tx,
                overflow: self.overflow,
                counters,
                spare,
                thread: Mutex::new(Some(thread)),
                chained,
            }),
        })
    }
}

enum Out {
    Stdout,
    File(File),
    Writer(Box<dyn Write + Send>),
}

struct Writer {
    rx: Receiver<Msg>,
    out: Out,
    chain: Option<Chain>,
    counters: Arc<Counters>,
    buf: Vec<u8>,
    /// Event lines in `buf`.
    pending: u64,
    reported_dropped: u64,
    /// The queue depth last given to the gauge, so an idle writer does not set it to zero
    /// again on every poll.
    reported_depth: Option<u64>,
    spare: Arc<Spare>,
    /// Buffers of written lines, cleared here, handed back to `spare` a batch at a time.
    emptied: Vec<Vec<u8>>,
}

/// Empty line buffers for reuse (see [`SPARE_LINES`]).
#[derive(Default)]
struct Spare {
    lines: Mutex<Vec<Vec<u8>>>,
}

impl Spare {
    /// An empty buffer, reused when one is spare.
    ///
    /// Each thread takes spare buffers [`LOCAL_LINES`] at a time into its own stock, so the
    /// shared pool's lock is taken once per batch instead of once per event (the workers
    /// would otherwise contend for it on every request). Buffers are interchangeable: a
    /// thread's stock serves every sink, and holds at most [`LOCAL_LINES`] buffers of at most
    /// [`MAX_SPARE_CAPACITY`] bytes.
    fn take(&self) -> Vec<u8> {
        thread_local! {
            static STOCK: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        }
        STOCK
            .try_with(|stock| {
                let mut stock = stock.try_borrow_mut().ok()?;
                if stock.is_empty()
                    && let Ok(mut shared) = self.lines.lock()
                {
                    let from = shared.len().saturating_sub(LOCAL_LINES);
                    stock.extend(shared.drain(from..));
                }
                stock.pop()
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY))
    }

    /// Keeps the buffer of a line that was not queued (dropped on overflow).
    fn give_back(&self, line: Vec<u8>) {
        if let Some(line) = reusable(line)
            && let Ok(mut lines) = self.lines.lock()
            && lines.len() < SPARE_LINES
        {
            lines.push(line);
        }
    }
}

/// `line` emptied for reuse, unless it grew beyond [`MAX_SPARE_CAPACITY`].
fn reusable(mut line: Vec<u8>) -> Option<Vec<u8>> {
    (line.capacity() <= MAX_SPARE_CAPACITY).then(|| {
        line.clear();
        line
    })
}

impl Writer {
    /// Sets the queue-depth gauge: events handed over but not yet processed.
    fn report_depth(&mut self) {
        let c = &self.counters;
        let depth = c
            .enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(c.processed.load(Ordering::Relaxed));
        self.set_depth(depth);
    }

    fn set_depth(&mut self, depth: u64) {
        if self.reported_depth != Some(depth) {
            self.reported_depth = Some(depth);
            super::metrics::audit_queue_depth(depth);
        }
    }

    fn run(mut self) {
        if self.chain.as_ref().is_some_and(Chain::resumed_unclean) {
            // Whatever the previous writer still had queued when it stopped is gone; say so in
            // the log itself.
            let event = AuditEvent::new(EventType::AuditLoss)
                .with_reason_code("unclean_restart")
                .with_reason("the previous writer of this file stopped without sealing it; events it still had queued are lost");
            self.line(&event);
            let _ = self.write_out();
        }
        let mut idle = 0u32;
        loop {
            let msg = match self.rx.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) => {
                    self.hand_back();
                    let _ = self.write_out();
                    self.report_loss();
                    if idle == 0 {
                        // Events were processed since the last empty poll: report 0 again, so a
                        // recorder installed after this thread started sees the gauge too.
                        self.reported_depth = None;
                    }
                    self.set_depth(0);
                    if idle < IDLE_POLLS {
                        idle += 1;
                        std::thread::sleep(POLL);
                        continue;
                    }
                    match self.rx.recv() {
                        Ok(msg) => msg,
                        Err(_) => {
                            let _ = self.finish();
                            return;
                        }
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    let _ = self.finish();
                    return;
                }
            };
            idle = 0;
            match msg {
                Msg::Line(line) => {
                    self.counters.processed.fetch_add(1, Ordering::Relaxed);
                    self.append_line(&line);
                    self.recycle(line);
                    if self.buf.len() >= BATCH_BYTES {
                        let _ = self.write_out();
                        self.report_depth();
                    }
                }
                Msg::Flush(ack) => {
                    self.report_depth();
                    let result = self.write_out().and_then(|()| {
                        self.report_loss();
                        self.write_out()
                    });
                    let result = result.and_then(|()| self.sync());
                    let _ = ack.send(result);
                }
                Msg::Shutdown(ack) => {
                    // A writer that never found its queue empty has not reported a depth yet.
                    self.report_depth();
                    let _ = ack.send(self.finish());
                    return;
                }
            }
        }
    }

    /// Keeps a written line's buffer for reuse, unless it grew too large.
    fn recycle(&mut self, line: Vec<u8>) {
        if self.emptied.len() < SPARE_LINES
            && let Some(line) = reusable(line)
        {
            self.emptied.push(line);
        }
        // A writer that never finds its queue empty hands buffers back in groups too.
        if self.emptied.len() >= SPARE_LINES / 4 {
            self.hand_back();
        }
    }

    /// Hands the emptied buffers to the request path, up to [`SPARE_LINES`] waiting there.
    fn hand_back(&mut self) {
        if self.emptied.is_empty() {
            return;
        }
        if let Ok(mut lines) = self.spare.lines.lock() {
            let room = SPARE_LINES.saturating_sub(lines.len());
            let n = room.min(self.emptied.len());
            lines.extend(self.emptied.drain(..n));
        }
        self.emptied.clear();
    }

    /// Appends an event line formatted on the request path and finishes it (chain fields or
    /// the closing brace), in queue order.
    fn append_line(&mut self, fields: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(fields);
        self.close(start);
        self.pending += 1;
    }

    /// Formats one of the writer's own events (`audit.loss`, `audit.sealed`): not counted as
    /// written.
    fn line(&mut self, event: &AuditEvent) {
        let start = self.buf.len();
        event.write_json_fields(&mut self.buf);
        self.close(start);
    }

    /// Closes the line that starts at `start` in the batch.
    fn close(&mut self, start: usize) {
        match &mut self.chain {
            Some(chain) => chain.finish_line(&mut self.buf, start),
            None => self.buf.extend_from_slice(b"}\n"),
        }
    }

    /// Writes a line about lost events when the drop counter moved.
    fn report_loss(&mut self) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_dropped {
            let event = AuditEvent::new(EventType::AuditLoss)
                .with_detail("dropped", dropped - self.reported_dropped)
                .with_detail("dropped_total", dropped);
            self.reported_dropped = dropped;
            self.line(&event);
            let _ = self.write_out();
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = match &mut self.out {
            Out::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(&self.buf).and_then(|()| stdout.flush())
            }
            Out::File(file) => file.write_all(&self.buf),
            Out::Writer(w) => w.write_all(&self.buf).and_then(|()| w.flush()),
        };
        self.buf.clear();
        let lines = std::mem::take(&mut self.pending);
        match &result {
            Ok(()) => {
                self.counters.written.fetch_add(lines, Ordering::Relaxed);
                super::metrics::audit_written(lines);
            }
            Err(e) => {
                // The lines are lost; a chained file now shows a gap where they were.
                self.counters.dropped.fetch_add(lines, Ordering::Relaxed);
                super::metrics::audit_dropped(lines);
                tracing::error!(target: "portcullis::audit::writer", error = %e, lost = lines, "audit write failed");
            }
        }
        result
    }

    fn sync(&mut self) -> io::Result<()> {
        match &mut self.out {
            Out::File(file) => file.sync_data(),
            _ => Ok(()),
        }
    }

    /// Drains the queue, reports losses, seals a chained file, syncs.
    fn finish(&mut self) -> io::Result<ShutdownReport> {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Line(line) => {
                    self.counters.processed.fetch_add(1, Ordering::Relaxed);
                    self.append_line(&line);
                }
                Msg::Flush(ack) => {
                    let _ = ack.send(Ok(()));
                }
                Msg::Shutdown(ack) => {
                    let _ = ack.send(Err(io::Error::other("shut down twice")));
                }
            }
        }
        self.write_out()?;
        self.report_loss();
        if let Some(chain) = &self.chain {
            let event = AuditEvent::new(EventType::AuditSealed)
                .with_detail("lines", chain.seq() + 1)
                .with_detail("dropped_total", self.reported_dropped);
            self.line(&event);
        }
        self.write_out()?;
        self.sync()?;
        Ok(ShutdownReport {
            stats: SinkStats::default(),
            last_hash: self.chain.as_ref().map(Chain::last_hash),
            lines: self.chain.as_ref().map(Chain::seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{AuthMethod, Principal};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn principal() -> Principal {
        Principal::builder(
            "alice",
            AuthMethod::ApiKey {
                key_id: "ak_1".into(),
            },
        )
        .build()
    }

    /// Reused buffers carry nothing of the line they held before.
    #[test]
    fn reused_buffers_write_exactly_the_events_recorded() {
        let buffer = Buffer::default();
        let sink = JsonLinesSink::writer(buffer.clone()).build().unwrap();
        let principal = principal();
        let mut expected = Vec::new();
        for i in 0..2000u64 {
            let event = if i % 3 == 0 {
                let mut e = AuditEvent::new(EventType::AuthzDeny)
                    .with_principal(principal.clone())
                    .with_route("/api/{id}")
                    .with_policy_id("has_role(admin)")
                    .with_reason("denied")
                    .with_detail("n", i);
                e.status = Some(403);
                e
            } else {
                AuditEvent::new(EventType::AuthzAllow)
            };
            expected.push(event.to_json());
            if i % 2 == 0 {
                sink.record_owned(event);
            } else {
                sink.record(&event);
            }
            if i % 500 == 0 {
                sink.flush().unwrap();
            }
        }
        sink.shutdown().unwrap();
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, expected);
        assert!(sink.inner.spare.lines.lock().unwrap().len() <= SPARE_LINES);
    }

    /// A recording thread takes spare buffers from the shared pool a batch at a time.
    #[test]
    fn a_thread_takes_spare_buffers_in_batches() {
        let spare = Arc::new(Spare::default());
        let pooled = LOCAL_LINES + 8;
        spare
            .lines
            .lock()
            .unwrap()
            .extend((0..pooled).map(|_| Vec::with_capacity(LINE_CAPACITY)));
        let shared = spare.clone();
        // A fresh thread, so its stock starts empty.
        std::thread::spawn(move || {
            let pool_len = || shared.lines.lock().unwrap().len();
            assert!(shared.take().capacity() >= LINE_CAPACITY);
            assert_eq!(pool_len(), pooled - LOCAL_LINES);
            for _ in 1..LOCAL_LINES {
                assert!(shared.take().capacity() >= LINE_CAPACITY);
            }
            // Served from the thread's stock: the pool was not touched.
            assert_eq!(pool_len(), pooled - LOCAL_LINES);
            shared.take();
            assert_eq!(pool_len(), 0);
        })
        .join()
        .unwrap();
    }

    /// Lines formatted on several threads at once reach the output whole, each exactly once,
    /// and a buffer grown by a huge event is not kept for reuse.
    #[test]
    fn lines_from_several_threads_are_written_intact() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 1500;
        let buffer = Buffer::default();
        let sink = JsonLinesSink::writer(buffer.clone())
            .capacity(NonZeroUsize::new(16).unwrap())
            .build()
            .unwrap();
        let principal = principal();
        let mut expected: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (sink, principal) = (sink.clone(), principal.clone());
                    scope.spawn(move || {
                        let mut expected = Vec::new();
                        for i in 0..PER_THREAD {
                            let mut event = AuditEvent::new(EventType::AuthzDeny)
                                .with_principal(principal.clone())
                                .with_detail("thread", t)
                                .with_detail("n", i);
                            if i % 7 == 0 {
                                // Lines of very different lengths share the pool.
                                let long = "x".repeat((i as usize * 13) % 9000);
                                event = event.with_reason(long);
                            }
                            expected.push(event.to_json());
                            sink.record_owned(event);
                        }
                        expected
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let report = sink.shutdown().unwrap();
        assert_eq!(report.stats.written, THREADS * PER_THREAD);
        assert_eq!(report.stats.dropped, 0);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        expected.sort();
        assert_eq!(lines, expected);
        let spare = sink.inner.spare.lines.lock().unwrap();
        assert!(spare.len() <= SPARE_LINES);
        assert!(
            spare
                .iter()
                .all(|l| l.is_empty() && l.capacity() <= MAX_SPARE_CAPACITY)
        );
    }

    /// A line refused by a full queue under [`Overflow::Drop`] is counted, and its buffer is
    /// kept for the next event.
    #[test]
    fn dropped_lines_are_counted_and_their_buffers_reused() {
        // A writer that blocks until released, so the queue fills.
        let (release, gate) = mpsc::channel::<()>();
        struct Gated(Receiver<()>, Buffer);
        impl Write for Gated {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                let _ = self.0.recv();
                self.1.write(bytes)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let sink = JsonLinesSink::writer(Gated(gate, buffer.clone()))
            .capacity(NonZeroUsize::new(1).unwrap())
            .overflow(Overflow::Drop)
            .build()
            .unwrap();
        let mut recorded = 0u64;
        // Record until one is dropped: the writer holds at most one line being written and
        // the queue one more.
        while sink.stats().dropped == 0 {
            sink.record(&AuditEvent::new(EventType::AuthzAllow));
            recorded += 1;
            assert!(recorded < 1000, "the queue of one never filled");
        }
        assert!(!sink.inner.spare.lines.lock().unwrap().is_empty());
        drop(release);
        let report = sink.shutdown().unwrap();
        assert_eq!(report.stats.written + report.stats.dropped, recorded);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let allows = text.lines().filter(|l| l.contains("authz.allow")).count() as u64;
        assert_eq!(allows, report.stats.written);
        assert!(text.contains("\"event\":\"audit.loss\""));
    }
}
