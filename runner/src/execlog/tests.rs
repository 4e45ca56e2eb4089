use super::*;

fn data_of(items: &[Item]) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut out = Vec::new();
    let mut gaps = Vec::new();
    for i in items {
        match i {
            Item::Data { data, .. } => out.extend_from_slice(data),
            Item::Gap { from, to } => gaps.push((*from, *to)),
        }
    }
    (out, gaps)
}

fn read_all(log: &std::sync::Arc<ExecLog>, from: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut r = log.reader(from);
    let mut items = Vec::new();
    loop {
        let got = r.read(10_000).unwrap();
        if got.is_empty() {
            break;
        }
        items.extend(got);
    }
    data_of(&items)
}

#[test]
fn appends_read_back_from_any_cursor_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let log = ExecLog::open(dir.path(), LogConfig { segment_bytes: 100, retention_bytes: 1 << 30 }).unwrap();
    let mut expected = Vec::new();
    for i in 0..50u64 {
        let chunk = format!("line {i}\n").into_bytes();
        let cursor = expected.len() as u64;
        log.append(1 + (i % 2) as u8, cursor, &chunk).unwrap();
        // A replay of the same bytes (a pump restarted from an older cursor) changes nothing.
        log.append(1 + (i % 2) as u8, cursor, &chunk).unwrap();
        expected.extend(chunk);
    }
    log.sync().unwrap();
    assert_eq!(log.position(), Position { start: 0, end: expected.len() as u64 });
    assert!(std::fs::read_dir(dir.path()).unwrap().count() > 3, "small segments roll");
    for from in [0, 1, 7, 100, 250, expected.len() as u64] {
        assert_eq!(read_all(&log, from).0, expected[from as usize..], "from {from}");
    }
    // An overlapping append stores only the new tail; a hole is refused.
    let end = expected.len() as u64;
    log.append(1, end - 3, b"\n!\nnew").unwrap();
    assert_eq!(log.position().end, end + 3);
    assert!(matches!(log.append(1, end + 10, b"x"), Err(LogError::Hole { .. })));
    assert!(matches!(log.reader(end + 100).read(10), Err(LogError::Beyond { .. })));
}

#[test]
fn torn_tail_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = ExecLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(1, 0, b"complete record one|").unwrap();
        log.append(2, 20, b"complete record two|").unwrap();
        log.sync().unwrap();
    }
    // A crash mid-write: half a record at the end of the segment.
    let seg = segment_path(dir.path(), 0);
    let mut torn = Vec::new();
    record::encode(1, 40, b"this record was cut short", &mut torn);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&torn[..torn.len() - 7]).unwrap();
    drop(f);

    let log = ExecLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.position().end, 40);
    assert_eq!(read_all(&log, 0).0, b"complete record one|complete record two|");
    // The pump resumes at the log's end; the data after the cut comes again and lands exactly once.
    log.append(1, 40, b"this record was cut short").unwrap();
    assert_eq!(read_all(&log, 30).0, b"ecord two|this record was cut short");
}

#[test]
fn retention_drops_oldest_segments_and_readers_see_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let log = ExecLog::open(dir.path(), LogConfig { segment_bytes: 1000, retention_bytes: 3000 }).unwrap();
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    for (i, c) in payload.chunks(100).enumerate() {
        log.append(1, (i * 100) as u64, c).unwrap();
    }
    let pos = log.position();
    assert_eq!(pos.end, 20_000);
    assert!(pos.start > 0 && pos.end - pos.start <= 3000 + 1000, "retained {pos:?}");
    let (data, gaps) = read_all(&log, 0);
    assert_eq!(gaps, vec![(0, pos.start)]);
    assert_eq!(data, payload[pos.start as usize..]);
    // A reader inside the retained range sees no gap.
    let (data, gaps) = read_all(&log, pos.start + 5);
    assert!(gaps.is_empty());
    assert_eq!(data, payload[pos.start as usize + 5..]);
}

/// Large appends (a guest batch is up to 1 MiB) are split at segment boundaries, so no segment outgrows
/// `segment_bytes` and the retention bound "cap plus one segment" holds whatever the append sizes.
#[test]
fn large_appends_keep_segments_and_retention_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1000, retention_bytes: 3000 };
    let log = ExecLog::open(dir.path(), config).unwrap();
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let mut at = 0;
    for size in [1, 2500, 999, 7000, 30, 12_000, 1000, 26_470] {
        log.append(2, at as u64, &payload[at..at + size]).unwrap();
        at += size;
        let pos = log.position();
        assert!(pos.end - pos.start <= 3000 + 1000, "retained {pos:?} after an append of {size}");
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let len = e.unwrap().metadata().unwrap().len();
            assert!(
                len <= config.segment_bytes,
                "a segment of {len} bytes (records included) > {}",
                config.segment_bytes
            );
        }
    }
    assert_eq!(at, payload.len());
    let pos = log.position();
    let (data, gaps) = read_all(&log, 0);
    assert_eq!(gaps, vec![(0, pos.start)]);
    assert_eq!(data, payload[pos.start as usize..]);
    // Reopened, the log appends to its newest segment within the same bound.
    drop(log);
    let log = ExecLog::open(dir.path(), config).unwrap();
    log.append(2, payload.len() as u64, &[7u8; 5000]).unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        assert!(e.unwrap().metadata().unwrap().len() <= config.segment_bytes);
    }
}

#[test]
fn a_reader_tails_a_growing_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = ExecLog::open(dir.path(), LogConfig { segment_bytes: 4096, retention_bytes: 1 << 30 }).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut cursor = 0u64;
            for i in 0..2000u32 {
                let line = format!("{i}\n");
                log.append(1, cursor, line.as_bytes()).unwrap();
                cursor += line.len() as u64;
            }
        })
    };
    let expected: String = (0..2000u32).map(|i| format!("{i}\n")).collect();
    let mut got = Vec::new();
    let mut r = log.reader(0);
    while got.len() < expected.len() {
        for item in r.read(1000).unwrap() {
            match item {
                Item::Data { data, .. } => got.extend(data),
                Item::Gap { .. } => panic!("no retention configured"),
            }
        }
    }
    writer.join().unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
}
