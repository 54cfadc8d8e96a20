//! The newest records of the audit log (`GET /audit`), read from the end of the file: the log
//! grows for the coordinator's whole life, so it is never read whole. The file is read
//! backwards in chunks until enough complete lines are found, the start is reached, or
//! [`MAX_TAIL_BYTES`] have been read (then the records found so far are returned). A last line
//! without its newline is a record still being written and is left out; a line that is not
//! JSON (a torn write after a crash) is skipped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

/// Bytes read from the end of the file at most, whatever the limit asks for.
pub const MAX_TAIL_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes read per step backwards.
const CHUNK_BYTES: u64 = 64 * 1024;

/// The newest `limit` records of the log at `path`, oldest first; none when the file does not
/// exist yet.
pub fn read_tail(path: &Path, limit: usize) -> std::io::Result<Vec<Value>> {
    read_tail_within(path, limit, MAX_TAIL_BYTES)
}

fn read_tail_within(path: &Path, limit: usize, max_bytes: u64) -> std::io::Result<Vec<Value>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let end = file.seek(SeekFrom::End(0))?;
    let mut start = end;
    // Chunks from the end backwards; joined once at the end.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    // limit + 1 newlines: the line before the first wanted one has ended, so that one is whole.
    while start > 0 && newlines <= limit && end - start < max_bytes {
        let size = CHUNK_BYTES.min(start).min(max_bytes - (end - start));
        start -= size;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        chunks.push(chunk);
    }
    let mut tail: Vec<u8> = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for chunk in chunks.iter().rev() {
        tail.extend_from_slice(chunk);
    }
    // The text after the last newline is a record being written: not yet a record.
    let complete = match tail.iter().rposition(|b| *b == b'\n') {
        Some(last) => &tail[..=last],
        None => return Ok(Vec::new()),
    };
    // Unless the read reached the start of the file, its first line began before the read.
    let whole = if start > 0 {
        match complete.iter().position(|b| *b == b'\n') {
            Some(first) => &complete[first + 1..],
            None => &[][..],
        }
    } else {
        complete
    };
    let records: Vec<Value> = whole
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let skip = records.len().saturating_sub(limit);
    Ok(records.into_iter().skip(skip).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(n: usize) -> String {
        format!(
            "{{\"ts\":\"2026-12-03T00:00:00Z\",\"event\":\"register\",\"round\":{n},\"details\":{{\"pad\":\"{}\"}}}}\n",
            "x".repeat(n % 300)
        )
    }

    fn rounds(records: &[Value]) -> Vec<u64> {
        records
            .iter()
            .map(|r| r["round"].as_u64().unwrap())
            .collect()
    }

    /// A log of ~10 MB (far more than one chunk): the newest N records, oldest first, each
    /// as written; older ones are never needed.
    #[test]
    fn the_newest_records_come_from_the_end_of_a_large_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut file = File::create(&path).unwrap();
        let total = 60_000;
        for n in 0..total {
            file.write_all(record(n).as_bytes()).unwrap();
        }
        file.flush().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > MAX_TAIL_BYTES);
        let tail = read_tail(&path, 1000).unwrap();
        assert_eq!(
            rounds(&tail),
            ((total - 1000)..total)
                .map(|n| n as u64)
                .collect::<Vec<_>>()
        );
        let written: Value = serde_json::from_str(&record(total - 1)).unwrap();
        assert_eq!(tail.last().unwrap(), &written);
        assert_eq!(rounds(&read_tail(&path, 1).unwrap()), [total as u64 - 1]);
    }

    /// A last line still being written (no newline yet) is not a record; a torn line is
    /// skipped; the start of the file is reached when the log is short.
    #[test]
    fn a_partial_last_line_and_a_torn_line_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let text = format!(
            "{}{}{{\"event\":\"torn\n{}{{\"ts\":\"2026-12-03T00:00:00Z\",\"event\":\"contr",
            record(1),
            record(2),
            record(3)
        );
        std::fs::write(&path, text).unwrap();
        assert_eq!(rounds(&read_tail(&path, 100).unwrap()), [1, 2, 3]);
        assert_eq!(rounds(&read_tail(&path, 2).unwrap()), [2, 3]);
    }

    /// No file yet (nothing audited so far) is no records; so is a limit of 0.
    #[test]
    fn a_missing_log_has_no_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        assert!(read_tail(&path, 10).unwrap().is_empty());
        std::fs::write(&path, record(1)).unwrap();
        assert!(read_tail(&path, 0).unwrap().is_empty());
    }

    /// The byte bound holds whatever the limit: only complete records found within it.
    #[test]
    fn the_read_stops_at_the_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut file = File::create(&path).unwrap();
        for n in 0..1000 {
            file.write_all(record(n * 300).as_bytes()).unwrap();
        }
        // The last records all have six-digit rounds: the same length.
        let line = record(999 * 300).len() as u64;
        let found = read_tail_within(&path, 1000, 10 * line + line / 2).unwrap();
        assert_eq!(
            rounds(&found),
            (990..1000).map(|n| n * 300).collect::<Vec<u64>>()
        );
    }
}
