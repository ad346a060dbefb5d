//! `WriteAheadLog`: segmented, append-only, checksummed, group-commit fsync, crash recovery.
//!
//! One writer thread owns the active segment. Appends queue to it; it gathers every queued
//! append (up to `commit_bytes`, waiting at most `commit_interval` for more), writes them, calls
//! `fdatasync` once, and only then answers each append: an append that returned `Ok` is on disk.
//! Readers see only the durable prefix (`durable_end`), so nothing that a crash could still tear
//! is ever shipped, and a record id (derived from its position) is never reused for other data.
//!
//! Crash-safe metadata order: a new segment's header is written and fsynced, then the directory
//! is fsynced; the checkpoint is written to a temporary file, fsynced, renamed, and the directory
//! fsynced. Recovery truncates a torn tail, copies a damaged segment into `quarantine/` before
//! cutting it at the damage (counting the lost bytes), and never refuses to start over it. Every
//! start opens a fresh segment: a recovered segment is never appended to again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ion_core::{Error, Result, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::codec::{
    self, decode_segment_header, encode_frame, encode_segment_header, frame_len, NodeToken,
    ScanEnd, SegmentHeader, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Where a record lies in the WAL: segment number and byte offset of its frame.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WalPosition {
    /// Segment number.
    pub segment: u64,
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
}

/// Settings of a write-ahead log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WalConfig {
    /// Directory of the segments, checkpoint and metadata (one node's own).
    pub dir: PathBuf,
    /// This node's name (`[a-z][a-z0-9-]{0,23}`), part of every record id.
    pub node_name: String,
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u64,
    /// fsync as soon as this many bytes are waiting.
    pub commit_bytes: usize,
    /// Wait at most this long for more appends before an fsync (0: fsync what is queued).
    #[serde(with = "millis")]
    pub commit_interval: Duration,
    /// Most bytes the WAL may hold on disk; appends beyond it fail with `Unavailable`.
    pub disk_budget_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("wal"),
            node_name: "node".into(),
            segment_bytes: 64 << 20,
            commit_bytes: 4 << 20,
            commit_interval: Duration::from_millis(1),
            disk_budget_bytes: 8 << 30,
        }
    }
}

pub(crate) mod millis {
    //! Serde of a `Duration` as integer milliseconds.
    use std::time::Duration;
    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let ms = <u64 as serde::Deserialize>::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes of interrupted writes cut from segment tails (never acknowledged).
    pub torn_bytes: u64,
    /// Segments found damaged (copied to `quarantine/`, cut at the damage).
    pub corrupt_segments: u64,
    /// Bytes of once-durable data lost to damage.
    pub lost_bytes: u64,
    /// Copies of damaged segments.
    pub quarantined: Vec<PathBuf>,
    /// Segments present after recovery.
    pub segments: usize,
}

/// The shipper's durable progress, stored crash-safely beside the segments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Everything before this position is delivered (indexed or dead-lettered).
    pub position: WalPosition,
    /// The shipper's own state (its settled ledger).
    #[serde(default)]
    pub state: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct WalMeta {
    format: u32,
    node_name: String,
    incarnation: u32,
}

#[derive(Clone, Copy, Debug)]
struct SegMeta {
    /// Durable length in bytes.
    len: u64,
    sealed: bool,
}

/// Counters the WAL keeps (for metrics).
#[derive(Debug, Default)]
pub struct WalStats {
    /// Records appended and fsynced since start.
    pub appended: AtomicU64,
    /// fsync calls of the writer.
    pub fsyncs: AtomicU64,
    /// Appends refused because the disk budget was full.
    pub budget_refusals: AtomicU64,
    /// Bytes of once-durable data lost to damage (recovery and reads).
    pub lost_bytes: AtomicU64,
    /// Bytes of torn tails cut at recovery.
    pub torn_bytes: AtomicU64,
    /// Damaged segments found.
    pub corrupt_segments: AtomicU64,
}

struct Shared {
    dir: PathBuf,
    node: NodeToken,
    budget: u64,
    segments: Mutex<BTreeMap<u64, SegMeta>>,
    on_disk: AtomicU64,
    durable: watch::Sender<WalPosition>,
    poisoned: AtomicBool,
    stats: WalStats,
}

struct AppendRequest {
    payloads: Vec<Vec<u8>>,
    bytes: u64,
    reply: oneshot::Sender<Result<Vec<WalPosition>>>,
}

/// A segmented, checksummed, group-committed write-ahead log (see the module docs).
pub struct WriteAheadLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for WriteAheadLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteAheadLog")
            .field("dir", &self.shared.dir)
            .field("node", &self.shared.node)
            .finish()
    }
}

/// One batch read from the WAL.
#[derive(Clone, Debug, Default)]
pub struct WalRead {
    /// Entries (position, frame payload), in WAL order.
    pub entries: Vec<(WalPosition, Vec<u8>)>,
    /// Where the next read continues.
    pub next: WalPosition,
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016x}.wal"))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::unavailable(format!("wal {what} {}: {e}", path.display())).with_source(e)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync directory", dir, e))
}

/// Writes `data` to `path` crash-safely: temporary file, fsync, rename, fsync directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(data).map_err(|e| io_err("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    fs::rename(&tmp, &dst).map_err(|e| io_err("rename", &dst, e))?;
    fsync_dir(dir)
}

fn create_segment(dir: &Path, seg: u64) -> Result<File> {
    let path = segment_path(dir, seg);
    let mut f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("create segment", &path, e))?;
    let header = encode_segment_header(&SegmentHeader {
        segment: seg,
        created_ms: Timestamp::now().as_millis(),
    });
    f.write_all(&header)
        .map_err(|e| io_err("write header", &path, e))?;
    f.sync_all().map_err(|e| io_err("fsync", &path, e))?;
    fsync_dir(dir)?;
    Ok(f)
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        let n = Timestamp::now().as_millis() as u64 ^ u64::from(std::process::id());
        return (n ^ (n >> 32)) as u32;
    }
    u32::from_le_bytes(b)
}

impl WriteAheadLog {
    /// Opens (creating if needed) the WAL in `config.dir`, recovering from any crash.
    ///
    /// Returns the log, what recovery did, and the last saved checkpoint.
    pub fn open(config: &WalConfig) -> Result<(Self, RecoveryReport, Option<Checkpoint>)> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        let meta_path = dir.join("wal.json");
        let meta: WalMeta = match fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(format!("wal metadata {}: {e}", meta_path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = WalMeta {
                    format: 1,
                    node_name: config.node_name.clone(),
                    incarnation: random_u32(),
                };
                write_atomic(&dir, "wal.json", &serde_json::to_vec(&meta).expect("json"))?;
                meta
            }
            Err(e) => return Err(io_err("read", &meta_path, e)),
        };
        if meta.node_name != config.node_name {
            return Err(Error::invalid_config(format!(
                "node_name: the wal in {} belongs to node {}, not {}",
                dir.display(),
                meta.node_name,
                config.node_name
            )));
        }
        let node = NodeToken::new(&meta.node_name, meta.incarnation)?;
        let checkpoint: Option<Checkpoint> = match fs::read(dir.join("checkpoint.json")) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(c) => Some(c),
                Err(e) => {
                    // Written atomically, so this is damage: start from the beginning, which
                    // re-ships what is left (deterministic ids make that duplicate-free).
                    tracing::error!(error = %e, "wal checkpoint unreadable, replaying from the start");
                    None
                }
            },
            Err(_) => None,
        };

        let mut report = RecoveryReport::default();
        let quarantine = dir.join("quarantine");
        let mut seg_numbers: Vec<u64> = Vec::new();
        let mut max_seen = checkpoint.as_ref().map_or(0, |c| c.position.segment);
        for entry in fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))? {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".wal") {
                if let Ok(n) = u64::from_str_radix(hex, 16) {
                    seg_numbers.push(n);
                }
            }
        }
        if let Ok(rd) = fs::read_dir(&quarantine) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(n) = name
                    .split('.')
                    .next()
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                {
                    max_seen = max_seen.max(n);
                }
            }
        }
        seg_numbers.sort_unstable();
        let last = seg_numbers.last().copied();
        let mut segments = BTreeMap::new();
        let mut on_disk = 0u64;
        for seg in seg_numbers {
            max_seen = max_seen.max(seg);
            let path = segment_path(&dir, seg);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io_err("read", &path, e))?;
            let header_ok = matches!(decode_segment_header(&bytes), Ok(h) if h.segment == seg);
            if !header_ok {
                if bytes.len() <= SEGMENT_HEADER_LEN && Some(seg) == last {
                    // A crash while creating the segment: nothing was ever in it.
                    report.torn_bytes += bytes.len() as u64;
                    fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
                    fsync_dir(&dir)?;
                    continue;
                }
                fs::create_dir_all(&quarantine).map_err(|e| io_err("create", &quarantine, e))?;
                let dst = quarantine.join(format!("{seg:016x}.wal.bad-header"));
                fs::rename(&path, &dst).map_err(|e| io_err("quarantine", &path, e))?;
                fsync_dir(&dir)?;
                tracing::error!(segment = seg, path = %dst.display(), "wal segment header unreadable, moved aside");
                report.corrupt_segments += 1;
                report.lost_bytes += bytes.len().saturating_sub(SEGMENT_HEADER_LEN) as u64;
                report.quarantined.push(dst);
                continue;
            }
            let scan = codec::scan_frames(&bytes, SEGMENT_HEADER_LEN);
            let is_last = Some(seg) == last;
            let cut = (bytes.len() - scan.valid_end) as u64;
            match scan.end {
                ScanEnd::Clean => {}
                ScanEnd::Torn if is_last => report.torn_bytes += cut,
                _ => {
                    // Damage inside data that was once durable: keep a copy, count the loss,
                    // keep the valid prefix (its offsets, and so its record ids, stay the same).
                    fs::create_dir_all(&quarantine)
                        .map_err(|e| io_err("create", &quarantine, e))?;
                    let dst = quarantine.join(format!("{seg:016x}.wal.corrupt"));
                    fs::write(&dst, &bytes).map_err(|e| io_err("write", &dst, e))?;
                    fsync_dir(&quarantine)?;
                    tracing::error!(segment = seg, lost_bytes = cut, path = %dst.display(), "wal segment damaged, cut at the damage");
                    report.corrupt_segments += 1;
                    report.lost_bytes += cut;
                    report.quarantined.push(dst);
                }
            }
            if cut > 0 {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err("open", &path, e))?;
                f.set_len(scan.valid_end as u64)
                    .map_err(|e| io_err("truncate", &path, e))?;
                f.sync_all().map_err(|e| io_err("fsync", &path, e))?;
            }
            on_disk += scan.valid_end as u64;
            segments.insert(
                seg,
                SegMeta {
                    len: scan.valid_end as u64,
                    sealed: true,
                },
            );
        }
        report.segments = segments.len() + 1;

        let active = max_seen + 1;
        let file = create_segment(&dir, active)?;
        on_disk += SEGMENT_HEADER_LEN as u64;
        segments.insert(
            active,
            SegMeta {
                len: SEGMENT_HEADER_LEN as u64,
                sealed: false,
            },
        );
        let (durable, _) = watch::channel(WalPosition {
            segment: active,
            offset: SEGMENT_HEADER_LEN as u64,
        });
        let shared = Arc::new(Shared {
            dir,
            node,
            budget: config.disk_budget_bytes,
            segments: Mutex::new(segments),
            on_disk: AtomicU64::new(on_disk),
            durable,
            poisoned: AtomicBool::new(false),
            stats: WalStats::default(),
        });
        shared
            .stats
            .lost_bytes
            .store(report.lost_bytes, Ordering::Relaxed);
        shared
            .stats
            .torn_bytes
            .store(report.torn_bytes, Ordering::Relaxed);
        shared
            .stats
            .corrupt_segments
            .store(report.corrupt_segments, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            file,
            active,
            len: SEGMENT_HEADER_LEN as u64,
            segment_bytes: config.segment_bytes.max(SEGMENT_HEADER_LEN as u64 + 1),
            commit_bytes: config.commit_bytes.max(1) as u64,
            interval: config.commit_interval,
        };
        let handle = std::thread::Builder::new()
            .name("ion-wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::unexpected(format!("spawn wal writer: {e}")))?;
        Ok((
            Self {
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
            },
            report,
            checkpoint,
        ))
    }

    /// The node token that record ids of this WAL carry.
    pub fn node(&self) -> &NodeToken {
        &self.shared.node
    }

    /// Appends frame payloads; resolves once they are fsynced, with their positions.
    ///
    /// Fails with `Unavailable` (and a retry hint) when the disk budget would be exceeded: old
    /// data is never dropped to make room.
    pub async fn append(&self, payloads: Vec<Vec<u8>>) -> Result<Vec<WalPosition>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = payloads.iter().map(|p| frame_len(p.len()) as u64).sum();
        let (reply, rx) = oneshot::channel();
        {
            let tx = self.tx.lock().expect("wal sender lock");
            let Some(tx) = tx.as_ref() else {
                return Err(Error::unavailable("wal is closed"));
            };
            tx.send(AppendRequest {
                payloads,
                bytes,
                reply,
            })
            .map_err(|_| Error::unavailable("wal writer stopped"))?;
        }
        rx.await
            .map_err(|_| Error::unavailable("wal writer stopped"))?
    }

    /// The end of the durable data: readers see everything before it.
    pub fn durable_end(&self) -> WalPosition {
        *self.shared.durable.borrow()
    }

    /// Notifies on every fsync.
    pub fn subscribe(&self) -> watch::Receiver<WalPosition> {
        self.shared.durable.subscribe()
    }

    /// Bytes the WAL holds on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.on_disk.load(Ordering::Relaxed)
    }

    /// The disk budget.
    pub fn disk_budget(&self) -> u64 {
        self.shared.budget
    }

    /// True when a write error left the WAL unable to accept appends.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Relaxed)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }

    /// The position of the first record the WAL still holds.
    pub fn first_position(&self) -> WalPosition {
        let segs = self.shared.segments.lock().expect("wal segments lock");
        let first = *segs
            .keys()
            .next()
            .expect("the active segment always exists");
        WalPosition {
            segment: first,
            offset: SEGMENT_HEADER_LEN as u64,
        }
    }

    /// Reads durable entries from `from`, about `max_bytes` of them (at least one frame when
    /// any is available). Blocking file I/O: call from a blocking context.
    pub fn read(&self, from: WalPosition, max_bytes: usize) -> Result<WalRead> {
        let mut pos = from;
        loop {
            let (seg, meta) = {
                let segs = self.shared.segments.lock().expect("wal segments lock");
                match segs.range(pos.segment..).next() {
                    Some((s, m)) => (*s, *m),
                    None => {
                        return Ok(WalRead {
                            entries: Vec::new(),
                            next: pos,
                        })
                    }
                }
            };
            if seg != pos.segment || pos.offset < SEGMENT_HEADER_LEN as u64 {
                pos = WalPosition {
                    segment: seg,
                    offset: SEGMENT_HEADER_LEN as u64,
                };
            }
            if pos.offset >= meta.len {
                if meta.sealed {
                    pos = WalPosition {
                        segment: seg + 1,
                        offset: SEGMENT_HEADER_LEN as u64,
                    };
                    continue;
                }
                return Ok(WalRead {
                    entries: Vec::new(),
                    next: pos,
                });
            }
            let path = segment_path(&self.shared.dir, seg);
            let file = File::open(&path).map_err(|e| io_err("open", &path, e))?;
            let avail = meta.len - pos.offset;
            let mut want = avail.min(max_bytes.max(FRAME_HEADER_LEN) as u64) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, pos.offset)
                .map_err(|e| io_err("read", &path, e))?;
            let mut scan = codec::scan_frames(&buf, 0);
            if scan.frames.is_empty() && buf.len() >= FRAME_HEADER_LEN {
                // One frame larger than max_bytes: read exactly it.
                let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as u64;
                let need = FRAME_HEADER_LEN as u64 + len;
                if need <= avail && need as usize > want {
                    want = need as usize;
                    buf = vec![0u8; want];
                    file.read_exact_at(&mut buf, pos.offset)
                        .map_err(|e| io_err("read", &path, e))?;
                    scan = codec::scan_frames(&buf, 0);
                }
            }
            if scan.frames.is_empty() {
                // Durable bytes that do not decode: damage after the write. Count and skip to
                // the end of the segment's durable data rather than stall the shipper.
                let lost = meta.len - pos.offset;
                self.shared
                    .stats
                    .lost_bytes
                    .fetch_add(lost, Ordering::Relaxed);
                tracing::error!(
                    segment = seg,
                    offset = pos.offset,
                    lost_bytes = lost,
                    "durable wal data does not decode, skipped"
                );
                pos.offset = meta.len;
                continue;
            }
            let entries = scan
                .frames
                .iter()
                .map(|(off, r)| {
                    (
                        WalPosition {
                            segment: seg,
                            offset: pos.offset + *off as u64,
                        },
                        buf[r.clone()].to_vec(),
                    )
                })
                .collect();
            return Ok(WalRead {
                entries,
                next: WalPosition {
                    segment: seg,
                    offset: pos.offset + scan.valid_end as u64,
                },
            });
        }
    }

    /// Sealed segments (no longer written), oldest first.
    pub fn sealed_segments(&self) -> Vec<u64> {
        let segs = self.shared.segments.lock().expect("wal segments lock");
        segs.iter()
            .filter(|(_, m)| m.sealed)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The whole file of a sealed segment (for archiving). Blocking.
    pub fn segment_bytes(&self, segment: u64) -> Result<Vec<u8>> {
        let len = {
            let segs = self.shared.segments.lock().expect("wal segments lock");
            match segs.get(&segment) {
                Some(m) if m.sealed => m.len,
                _ => return Err(Error::not_found(format!("no sealed segment {segment}"))),
            }
        };
        let path = segment_path(&self.shared.dir, segment);
        let mut f = File::open(&path).map_err(|e| io_err("open", &path, e))?;
        let mut out = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_exact(&mut out))
            .map_err(|e| io_err("read", &path, e))?;
        Ok(out)
    }

    /// Deletes a sealed segment (after it is delivered and archived). Blocking.
    pub fn delete_segment(&self, segment: u64) -> Result<()> {
        let len = {
            let segs = self.shared.segments.lock().expect("wal segments lock");
            match segs.get(&segment) {
                Some(m) if m.sealed => m.len,
                Some(_) => return Err(Error::invalid_input("the active segment is never deleted")),
                None => return Ok(()),
            }
        };
        let path = segment_path(&self.shared.dir, segment);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path, e)),
        }
        fsync_dir(&self.shared.dir)?;
        self.shared
            .segments
            .lock()
            .expect("wal segments lock")
            .remove(&segment);
        self.shared.on_disk.fetch_sub(len, Ordering::Relaxed);
        Ok(())
    }

    /// Saves the checkpoint crash-safely (write, fsync, rename, fsync directory). Blocking.
    pub fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let data = serde_json::to_vec(checkpoint).expect("checkpoints serialize");
        write_atomic(&self.shared.dir, "checkpoint.json", &data)
    }

    /// Stops the writer after the appends already queued; later appends fail.
    pub fn close(&self) {
        self.tx.lock().expect("wal sender lock").take();
        if let Some(h) = self.writer.lock().expect("wal writer lock").take() {
            let _ = h.join();
        }
    }
}

impl Drop for WriteAheadLog {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    active: u64,
    len: u64,
    segment_bytes: u64,
    commit_bytes: u64,
    interval: Duration,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<AppendRequest>) {
        while let Ok(first) = rx.recv() {
            let mut bytes = first.bytes;
            let mut group = vec![first];
            let deadline = Instant::now() + self.interval;
            while bytes < self.commit_bytes {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.bytes;
                        group.push(r);
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match rx.recv_timeout(deadline - now) {
                            Ok(r) => {
                                bytes += r.bytes;
                                group.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            self.commit(group);
        }
        let _ = self.file.sync_data();
    }

    fn refuse(&self, req: AppendRequest, e: Error) {
        let _ = req.reply.send(Err(e));
    }

    fn commit(&mut self, group: Vec<AppendRequest>) {
        if self.shared.poisoned.load(Ordering::Relaxed) {
            for r in group {
                self.refuse(r, Error::unavailable("wal is failed after a write error"));
            }
            return;
        }
        let start_len = self.len;
        let start_seg = self.active;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut accepted: Vec<(AppendRequest, Vec<WalPosition>)> = Vec::new();
        let mut added = 0u64;
        let mut failure: Option<Error> = None;
        for req in group {
            if failure.is_some() {
                let e = Error::unavailable("wal write failed");
                self.refuse(req, e);
                continue;
            }
            let on_disk = self.shared.on_disk.load(Ordering::Relaxed);
            if on_disk + added + req.bytes + SEGMENT_HEADER_LEN as u64 > self.shared.budget {
                self.shared
                    .stats
                    .budget_refusals
                    .fetch_add(1, Ordering::Relaxed);
                let e = Error::unavailable("wal disk budget is full")
                    .with_retry_after(Duration::from_secs(1));
                self.refuse(req, e);
                continue;
            }
            let mut positions = Vec::with_capacity(req.payloads.len());
            for p in &req.payloads {
                let flen = frame_len(p.len()) as u64;
                let pending = self.len + buf.len() as u64;
                if pending + flen > self.segment_bytes && pending > SEGMENT_HEADER_LEN as u64 {
                    if let Err(e) = self.roll(&mut buf) {
                        failure = Some(e);
                        break;
                    }
                    added += SEGMENT_HEADER_LEN as u64;
                }
                positions.push(WalPosition {
                    segment: self.active,
                    offset: self.len + buf.len() as u64,
                });
                encode_frame(p, &mut buf);
                added += flen;
            }
            if failure.is_some() {
                self.refuse(req, Error::unavailable("wal write failed"));
                continue;
            }
            accepted.push((req, positions));
        }
        if failure.is_none() && !buf.is_empty() {
            let res = self
                .file
                .write_all_at(&buf, self.len)
                .and_then(|_| self.file.sync_data());
            self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            match res {
                Ok(()) => self.len += buf.len() as u64,
                Err(e) => failure = Some(Error::unavailable(format!("wal write: {e}"))),
            }
        }
        if let Some(e) = failure {
            tracing::error!(error = %e, "wal write failed");
            // Cut what may be half-written so the segment stays a valid prefix; if even that
            // fails the WAL refuses appends from now on (and health says so).
            if self.active == start_seg {
                if self
                    .file
                    .set_len(start_len)
                    .and_then(|_| self.file.sync_all())
                    .is_err()
                {
                    self.shared.poisoned.store(true, Ordering::Relaxed);
                }
                self.len = start_len;
            } else {
                self.shared.poisoned.store(true, Ordering::Relaxed);
            }
            for (req, _) in accepted {
                self.refuse(req, Error::unavailable("wal write failed"));
            }
            return;
        }
        let count: usize = accepted.iter().map(|(r, _)| r.payloads.len()).sum();
        {
            let mut segs = self.shared.segments.lock().expect("wal segments lock");
            if let Some(m) = segs.get_mut(&self.active) {
                m.len = self.len;
            }
        }
        self.shared.on_disk.fetch_add(added, Ordering::Relaxed);
        self.shared
            .stats
            .appended
            .fetch_add(count as u64, Ordering::Relaxed);
        self.shared.durable.send_replace(WalPosition {
            segment: self.active,
            offset: self.len,
        });
        for (req, positions) in accepted {
            let _ = req.reply.send(Ok(positions));
        }
    }

    /// Seals the active segment (writing and fsyncing `buf` first) and starts the next one.
    fn roll(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let dir = self.shared.dir.clone();
        if !buf.is_empty() {
            self.file
                .write_all_at(buf, self.len)
                .and_then(|_| self.file.sync_data())
                .map_err(|e| Error::unavailable(format!("wal write: {e}")))?;
            self.len += buf.len() as u64;
            buf.clear();
        }
        let next = self.active + 1;
        let file = create_segment(&dir, next)?;
        {
            let mut segs = self.shared.segments.lock().expect("wal segments lock");
            if let Some(m) = segs.get_mut(&self.active) {
                m.len = self.len;
                m.sealed = true;
            }
            segs.insert(
                next,
                SegMeta {
                    len: SEGMENT_HEADER_LEN as u64,
                    sealed: false,
                },
            );
        }
        self.file = file;
        self.active = next;
        self.len = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }
}
