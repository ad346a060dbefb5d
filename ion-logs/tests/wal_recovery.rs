//! The write-ahead log on real files: acknowledged appends survive reopen, torn tails are cut,
//! damaged segments are moved aside and counted, the disk budget refuses instead of dropping.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::Duration;

use ion_core::ErrorKind;
use ion_logs::codec::SEGMENT_HEADER_LEN;
use ion_logs::{Checkpoint, WalConfig, WalPosition, WriteAheadLog};

fn config(dir: &std::path::Path) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        node_name: "n1".into(),
        segment_bytes: 4096,
        commit_bytes: 1 << 20,
        commit_interval: Duration::from_millis(1),
        disk_budget_bytes: 1 << 30,
    }
}

fn payload(i: usize) -> Vec<u8> {
    format!("record-{i:05}-{}", "x".repeat(i % 50)).into_bytes()
}

fn read_all(wal: &WriteAheadLog) -> Vec<(WalPosition, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = wal.first_position();
    loop {
        let r = wal.read(pos, 1000).unwrap();
        if r.entries.is_empty() {
            return out;
        }
        out.extend(r.entries);
        pos = r.next;
    }
}

async fn fill(wal: &WriteAheadLog, n: usize) -> Vec<WalPosition> {
    let mut positions = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(7) {
        positions.extend(
            wal.append(chunk.iter().map(|i| payload(*i)).collect())
                .await
                .unwrap(),
        );
    }
    positions
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn acknowledged_appends_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, report, cp) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!(report.torn_bytes + report.lost_bytes, 0);
    assert!(cp.is_none());
    let positions = fill(&wal, 300).await;
    assert!(wal.sealed_segments().len() >= 3, "small segments roll");
    drop(wal);

    let (wal, report, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!(
        (
            report.torn_bytes,
            report.lost_bytes,
            report.corrupt_segments
        ),
        (0, 0, 0)
    );
    let got = read_all(&wal);
    assert_eq!(got.len(), 300);
    for (i, (pos, p)) in got.iter().enumerate() {
        assert_eq!(*pos, positions[i]);
        assert_eq!(*p, payload(i));
    }
    // A reopened WAL never appends at a position it used before: record ids stay unique.
    let more = wal.append(vec![payload(0)]).await.unwrap();
    assert!(more[0] > *positions.last().unwrap());
}

#[tokio::test]
async fn torn_tail_is_cut_and_acknowledged_records_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    fill(&wal, 20).await;
    drop(wal);
    let last = segment_files(dir.path()).pop().unwrap();
    // An interrupted write: a frame header promising 100 bytes, then only 10.
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&100u32.to_le_bytes()).unwrap();
    f.write_all(&[7u8; 14]).unwrap();
    drop(f);

    let (wal, report, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!(report.torn_bytes, 18);
    assert_eq!(report.lost_bytes, 0);
    assert_eq!(read_all(&wal).len(), 20);
}

#[tokio::test]
async fn damaged_segment_is_quarantined_counted_and_start_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    fill(&wal, 200).await;
    drop(wal);
    let files = segment_files(dir.path());
    let victim = &files[1];
    let mut bytes = fs::read(victim).unwrap();
    let len_before = bytes.len();
    let mid = SEGMENT_HEADER_LEN + 100;
    bytes[mid] ^= 0xff;
    fs::write(victim, &bytes).unwrap();

    let (wal, report, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!(report.corrupt_segments, 1);
    assert!(report.lost_bytes > 0 && report.lost_bytes < len_before as u64);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(
        fs::read(&report.quarantined[0]).unwrap(),
        bytes,
        "the damaged original is kept"
    );
    let got = read_all(&wal);
    assert!(
        got.len() < 200 && got.len() > 100,
        "only the damaged part is lost: {}",
        got.len()
    );
    // Everything read back is a record that was written.
    let written: BTreeSet<Vec<u8>> = (0..200).map(payload).collect();
    assert!(got.iter().all(|(_, p)| written.contains(p)));
    assert_eq!(
        wal.stats()
            .lost_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        report.lost_bytes
    );

    // A second start over the same directory is clean: no crash loop, no new loss.
    drop(wal);
    let (_, again, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!((again.corrupt_segments, again.lost_bytes), (0, 0));
}

#[tokio::test]
async fn unreadable_header_moves_the_segment_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    fill(&wal, 100).await;
    drop(wal);
    let files = segment_files(dir.path());
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[0..4].copy_from_slice(b"JUNK");
    fs::write(&files[0], &bytes).unwrap();
    let (wal, report, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!(report.corrupt_segments, 1);
    assert!(!files[0].exists());
    assert!(report.quarantined[0].exists());
    let got = read_all(&wal);
    assert!(!got.is_empty() && got.len() < 100);
}

#[tokio::test]
async fn disk_budget_refuses_new_appends_and_keeps_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.disk_budget_bytes = 6000;
    let (wal, _, _) = WriteAheadLog::open(&cfg).unwrap();
    let mut acked = 0;
    let mut refused = None;
    for i in 0..1000 {
        match wal.append(vec![payload(i)]).await {
            Ok(_) => acked += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the budget refuses eventually");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.retry_after().is_some());
    assert!(wal.disk_bytes() <= 6000);
    assert_eq!(
        read_all(&wal).len(),
        acked,
        "nothing acknowledged was dropped"
    );
    // Freeing a delivered segment makes room again.
    let sealed = wal.sealed_segments();
    assert!(!sealed.is_empty());
    wal.delete_segment(sealed[0]).unwrap();
    wal.append(vec![payload(1)]).await.unwrap();
}

#[tokio::test]
async fn checkpoint_is_saved_atomically_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = WriteAheadLog::open(&config(dir.path())).unwrap();
    let positions = fill(&wal, 10).await;
    let cp = Checkpoint {
        position: positions[5],
        state: serde_json::json!({"ledger": {"acme": 5}}),
    };
    wal.save_checkpoint(&cp).unwrap();
    drop(wal);
    // A leftover temporary file from a crash mid-save is ignored.
    fs::write(dir.path().join("checkpoint.json.tmp"), b"{\"posi").unwrap();
    let (_, _, loaded) = WriteAheadLog::open(&config(dir.path())).unwrap();
    assert_eq!(loaded, Some(cp));
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_get_distinct_positions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1 << 20;
    cfg.commit_interval = Duration::from_millis(2);
    let (wal, _, _) = WriteAheadLog::open(&cfg).unwrap();
    let wal = std::sync::Arc::new(wal);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..20 {
                got.extend(wal.append(vec![payload(t * 100 + i)]).await.unwrap());
            }
            got
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for p in t.await.unwrap() {
            assert!(all.insert(p));
        }
    }
    assert_eq!(all.len(), 320);
    let fsyncs = wal
        .stats()
        .fsyncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(fsyncs < 320, "group commit shares fsyncs: {fsyncs}");
}

#[tokio::test]
async fn wal_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(WriteAheadLog::open(&config(dir.path())).unwrap());
    let mut cfg = config(dir.path());
    cfg.node_name = "n2".into();
    let e = WriteAheadLog::open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}
