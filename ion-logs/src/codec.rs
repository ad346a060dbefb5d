//! The write-ahead log's on-disk format: versioned segment headers and checksummed record frames.
//!
//! Pure: no I/O. A segment file is a [`SegmentHeader`] followed by frames. A frame is a 4-byte
//! little-endian payload length, a 4-byte crc32c of the payload, then the payload. The payload of
//! a WAL entry is the tenant (length-prefixed) followed by the record's JSON, so a reader can
//! pick one tenant's entries without parsing JSON.
//!
//! Scanning distinguishes a *torn tail* (the last write of a crash stopped part-way: incomplete
//! frame, or a bad frame followed by nothing but zeros) from *corruption* (a bad frame with data
//! after it). Only data after the last fsync can be torn, and the node acknowledges nothing
//! before its fsync, so a torn tail holds no acknowledged record; corruption may, and is counted.

use std::collections::BTreeMap;

use ion_core::{AppId, FieldName, InstanceId, LogLevel, LogRecord, RecordId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};

/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"IONW";
/// The segment format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 28;
/// Bytes in a frame header (length + crc32c).
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload a frame may carry; a longer length field is corruption.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// The header at the start of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number (never reused by one WAL).
    pub segment: u64,
    /// When the segment was created (milliseconds since the epoch).
    pub created_ms: i64,
}

/// Why a segment header did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    TooShort,
    /// Not a WAL segment.
    BadMagic,
    /// Written by a format this build cannot read.
    UnsupportedVersion(u16),
    /// The header's checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort => f.write_str("segment header is truncated"),
            HeaderError::BadMagic => f.write_str("not a wal segment (bad magic)"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported segment version {v}"),
            HeaderError::BadChecksum => f.write_str("segment header checksum mismatch"),
        }
    }
}

/// Encodes a segment header: magic, version, reserved, segment, created, crc32c of the rest.
pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..4].copy_from_slice(&SEGMENT_MAGIC);
    out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&h.segment.to_le_bytes());
    out[16..24].copy_from_slice(&h.created_ms.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a segment header from the start of `buf`.
pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(HeaderError::TooShort);
    }
    if buf[0..4] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let crc = u32::from_le_bytes(buf[24..28].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[0..24]) != crc {
        return Err(HeaderError::BadChecksum);
    }
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(SegmentHeader {
        segment: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
        created_ms: i64::from_le_bytes(buf[16..24].try_into().expect("8 bytes")),
    })
}

/// Appends one frame carrying `payload` to `out`.
///
/// # Panics
///
/// When `payload` is longer than [`MAX_PAYLOAD`]; callers bound record sizes far below it.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= MAX_PAYLOAD,
        "wal payload over the frame limit"
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Bytes a frame carrying `payload_len` bytes occupies.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

/// How a scan of frames ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a valid frame.
    Clean,
    /// The tail after `valid_end` is an interrupted write (holds nothing acknowledged).
    Torn,
    /// A damaged frame at `valid_end` with data after it: bytes from there on are lost.
    Corrupt,
}

/// The result of scanning frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// `(offset, payload range)` of every valid frame, in order; offsets are absolute in `buf`.
    pub frames: Vec<(usize, std::ops::Range<usize>)>,
    /// The end of the last valid frame.
    pub valid_end: usize,
    /// How the scan ended.
    pub end: ScanEnd,
}

/// Scans the frames of `buf` starting at `start` (a frame boundary).
pub fn scan_frames(buf: &[u8], start: usize) -> Scan {
    let mut frames = Vec::new();
    let mut at = start.min(buf.len());
    loop {
        let rest = &buf[at..];
        if rest.is_empty() {
            return Scan {
                frames,
                valid_end: at,
                end: ScanEnd::Clean,
            };
        }
        let all_zero_from = |from: usize| buf[from.min(buf.len())..].iter().all(|b| *b == 0);
        if rest.len() < FRAME_HEADER_LEN {
            return Scan {
                frames,
                valid_end: at,
                end: ScanEnd::Torn,
            };
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_PAYLOAD {
            let end = if all_zero_from(at) {
                ScanEnd::Torn
            } else {
                ScanEnd::Corrupt
            };
            return Scan {
                frames,
                valid_end: at,
                end,
            };
        }
        let body_start = at + FRAME_HEADER_LEN;
        let body_end = body_start + len;
        if body_end > buf.len() {
            return Scan {
                frames,
                valid_end: at,
                end: ScanEnd::Torn,
            };
        }
        if crc32c::crc32c(&buf[body_start..body_end]) != crc {
            // A bad last frame, or one followed only by zeros, is an interrupted write; a bad
            // frame with real data after it is damage to data that was once durable.
            let end = if body_end == buf.len() || all_zero_from(body_end) {
                ScanEnd::Torn
            } else {
                ScanEnd::Corrupt
            };
            return Scan {
                frames,
                valid_end: at,
                end,
            };
        }
        frames.push((at, body_start..body_end));
        at = body_end;
    }
}

/// One log line as the WAL stores it: everything of a [`LogRecord`] but its id, which is
/// derived from where the entry lies in the WAL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalEntry {
    /// Owner, from the ingest credentials.
    pub tenant: TenantId,
    /// App that logged it.
    pub app: AppId,
    /// Instance that logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// When it was logged (the receive time when the line had none).
    pub time: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// Extra string fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<FieldName, String>,
}

#[derive(Serialize, Deserialize)]
struct EntryBody {
    app: AppId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<InstanceId>,
    time: Timestamp,
    level: LogLevel,
    message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<FieldName, String>,
}

impl WalEntry {
    /// The frame payload: tenant length (1 byte), tenant, then the JSON body.
    pub fn encode(&self) -> Vec<u8> {
        let body = EntryBody {
            app: self.app.clone(),
            instance: self.instance.clone(),
            time: self.time,
            level: self.level,
            message: self.message.clone(),
            fields: self.fields.clone(),
        };
        let tenant = self.tenant.as_str().as_bytes();
        let mut out = Vec::with_capacity(1 + tenant.len() + 64 + self.message.len());
        out.push(tenant.len() as u8);
        out.extend_from_slice(tenant);
        serde_json::to_writer(&mut out, &body).expect("wal entries serialize");
        out
    }

    /// Decodes a frame payload; `None` when it is not a valid entry.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let tenant = payload_tenant(payload)?;
        let body: EntryBody = serde_json::from_slice(&payload[1 + tenant.as_str().len()..]).ok()?;
        Some(Self {
            tenant,
            app: body.app,
            instance: body.instance,
            time: body.time,
            level: body.level,
            message: body.message,
            fields: body.fields,
        })
    }

    /// The record this entry becomes, with its deterministic id.
    pub fn into_record(self, id: RecordId) -> LogRecord {
        LogRecord {
            id,
            tenant: self.tenant,
            app: self.app,
            instance: self.instance,
            time: self.time,
            level: self.level,
            message: self.message,
            fields: self.fields,
        }
    }
}

/// The tenant of a frame payload, read without parsing the JSON body.
pub fn payload_tenant(payload: &[u8]) -> Option<TenantId> {
    let len = *payload.first()? as usize;
    let raw = payload.get(1..1 + len)?;
    TenantId::parse(std::str::from_utf8(raw).ok()?).ok()
}

/// A node's identity inside record ids: its configured name plus the WAL's incarnation, so a
/// node that lost its disk and starts a fresh WAL never reissues an id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeToken(String);

impl NodeToken {
    /// Builds the token from a node name (`[a-z][a-z0-9-]{0,23}`) and the WAL incarnation.
    pub fn new(name: &str, incarnation: u32) -> ion_core::Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 24
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ion_core::Error::invalid_config(
                "node_name must match [a-z][a-z0-9-]{0,23}",
            ));
        }
        Ok(Self(format!("{name}-{incarnation:08x}")))
    }

    /// Parses a token as written by [`NodeToken::new`] (used when reading archived segments).
    pub fn parse(s: &str) -> Option<Self> {
        let (name, inc) = s.rsplit_once('-')?;
        if inc.len() != 8 {
            return None;
        }
        let inc = u32::from_str_radix(inc, 16).ok()?;
        Self::new(name, inc).ok()
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The deterministic id of the record at `offset` of `segment` written by `node` for `tenant`:
/// `<tenant>_<node>_<segment hex>_<offset hex>`. Lowercase, so it is also a valid document id
/// for the dead-letter store.
pub fn record_id(tenant: &TenantId, node: &NodeToken, segment: u64, offset: u64) -> RecordId {
    RecordId::parse(&format!(
        "{tenant}_{}_{segment:x}_{offset:x}",
        node.as_str()
    ))
    .expect("tenants, node tokens and hex digits form valid record ids")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(tenant: &str, message: &str) -> WalEntry {
        WalEntry {
            tenant: TenantId::parse(tenant).unwrap(),
            app: AppId::parse("web").unwrap(),
            instance: None,
            time: Timestamp::from_millis(1_700_000_000_000),
            level: LogLevel::Info,
            message: message.to_owned(),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            segment: 42,
            created_ms: 7,
        };
        let bytes = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&bytes), Ok(h));
        assert_eq!(
            decode_segment_header(&bytes[..10]),
            Err(HeaderError::TooShort)
        );
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadMagic));
        let mut bad = bytes;
        bad[9] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadChecksum));
        let mut v2 = bytes;
        v2[4] = 2;
        let crc = crc32c::crc32c(&v2[0..24]);
        v2[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_segment_header(&v2),
            Err(HeaderError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn entry_round_trips_and_tenant_reads_without_json() {
        let e = entry("acme", "hello \u{1F600} world");
        let payload = e.encode();
        assert_eq!(payload_tenant(&payload).unwrap().as_str(), "acme");
        assert_eq!(WalEntry::decode(&payload), Some(e));
        assert_eq!(WalEntry::decode(b"\x05ac"), None);
    }

    #[test]
    fn record_ids_are_distinct_per_position_and_valid_document_ids() {
        let node = NodeToken::new("node-1", 0xdead_beef).unwrap();
        let t = TenantId::parse("acme").unwrap();
        let a = record_id(&t, &node, 1, 28);
        let b = record_id(&t, &node, 1, 36);
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "acme_node-1-deadbeef_1_1c");
        assert!(ion_core::DocumentId::parse(a.as_str()).is_ok());
        assert_eq!(NodeToken::parse(node.as_str()), Some(node));
        assert!(NodeToken::new("Node", 1).is_err());
    }

    #[test]
    fn zero_filled_tail_is_torn_and_damage_before_data_is_corrupt() {
        let mut buf = Vec::new();
        encode_frame(b"one", &mut buf);
        encode_frame(b"two", &mut buf);
        let good_end = buf.len();
        buf.extend_from_slice(&[0u8; 64]);
        let s = scan_frames(&buf, 0);
        assert_eq!(
            (s.frames.len(), s.valid_end, s.end),
            (2, good_end, ScanEnd::Torn)
        );

        let mut buf = Vec::new();
        encode_frame(b"one", &mut buf);
        let first_end = buf.len();
        encode_frame(b"two", &mut buf);
        encode_frame(b"three", &mut buf);
        buf[first_end + FRAME_HEADER_LEN] ^= 0xff; // damage "two", "three" follows
        let s = scan_frames(&buf, 0);
        assert_eq!(
            (s.frames.len(), s.valid_end, s.end),
            (1, first_end, ScanEnd::Corrupt)
        );
    }

    proptest! {
        #[test]
        fn frames_round_trip(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20)) {
            let mut buf = Vec::new();
            for p in &payloads {
                encode_frame(p, &mut buf);
            }
            let s = scan_frames(&buf, 0);
            prop_assert_eq!(s.end, ScanEnd::Clean);
            prop_assert_eq!(s.valid_end, buf.len());
            let got: Vec<Vec<u8>> = s.frames.iter().map(|(_, r)| buf[r.clone()].to_vec()).collect();
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn truncation_anywhere_keeps_exactly_the_complete_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..100), 1..10),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            let mut ends = vec![];
            for p in &payloads {
                encode_frame(p, &mut buf);
                ends.push(buf.len());
            }
            let cut = cut.index(buf.len() + 1);
            let s = scan_frames(&buf[..cut], 0);
            let complete = ends.iter().filter(|e| **e <= cut).count();
            prop_assert_eq!(s.frames.len(), complete);
            prop_assert_ne!(s.end, ScanEnd::Corrupt);
            prop_assert_eq!(s.valid_end, if complete == 0 { 0 } else { ends[complete - 1] });
        }

        #[test]
        fn a_flipped_bit_never_yields_a_wrong_payload(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..100), 1..10),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut buf = Vec::new();
            for p in &payloads {
                encode_frame(p, &mut buf);
            }
            let at = at.index(buf.len());
            buf[at] ^= 1 << bit;
            let s = scan_frames(&buf, 0);
            // Every frame the scan returns is one that was written, in order: damage only
            // ever shortens the valid prefix.
            for (i, (_, r)) in s.frames.iter().enumerate() {
                prop_assert_eq!(&buf[r.clone()], &payloads[i][..]);
            }
            prop_assert!(s.frames.len() < payloads.len() || s.end == ScanEnd::Clean);
        }

        #[test]
        fn scanning_arbitrary_bytes_never_panics(buf in prop::collection::vec(any::<u8>(), 0..2000)) {
            let s = scan_frames(&buf, 0);
            prop_assert!(s.valid_end <= buf.len());
            let _ = decode_segment_header(&buf);
            for (_, r) in &s.frames {
                let _ = WalEntry::decode(&buf[r.clone()]);
            }
        }
    }
}
