//! The zip container of a `torch.save` file, read from its central directory.
//!
//! `torch.save` writes every record STORED (uncompressed) with a data descriptor, the real
//! sizes only in the central directory, and always a zip64 end record. This reader accepts
//! exactly that shape: stored entries only (so there is nothing to inflate and no zip bomb),
//! names under one top-level folder, no duplicates, no `..`, no absolute paths, every entry's
//! bytes inside the body and before the central directory, no two entries overlapping. Every
//! size and offset is checked against the body length before it is used, so a lying zip64
//! record cannot make us read or allocate past what was sent.
//!
//! CRCs are not verified: PyTorch builds miniz with `MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS`,
//! so `torch.load` does not check them either, and the transport (TCP, TLS) already protects
//! the bytes. Checking them would cost a pass over every upload for no safety gain.

use std::collections::HashMap;
use std::ops::Range;

use super::TorchSaveError;

pub(super) const LOCAL_HEADER: u32 = 0x0403_4b50;
pub(super) const CENTRAL_HEADER: u32 = 0x0201_4b50;
pub(super) const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
pub(super) const ZIP64_END_OF_CENTRAL_DIRECTORY: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// The extra-field id of zip64 sizes and offsets.
pub(super) const ZIP64_EXTRA: u16 = 0x0001;
const END_RECORD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_END_RECORD_LEN: usize = 56;
const CENTRAL_HEADER_LEN: usize = 46;
pub(super) const LOCAL_HEADER_LEN: usize = 30;
/// Compression method "stored": the only one accepted.
const METHOD_STORED: u16 = 0;
/// General-purpose flag bit 0: the entry is encrypted.
const FLAG_ENCRYPTED: u16 = 1;

/// The entries of an archive: each name with the byte range of its data in the body.
#[derive(Debug)]
pub struct ZipArchive {
    /// The top-level folder every entry lives in (`archive` for a buffer `torch.save`).
    prefix: String,
    entries: HashMap<String, Range<usize>>,
}

impl ZipArchive {
    /// Reads the central directory of `body`, holding at most `max_entries` entries.
    pub fn parse(body: &[u8], max_entries: usize) -> Result<Self, TorchSaveError> {
        let window = Cursor { body, base: 0 };
        let directory = CentralDirectory::locate(&window)?;
        // Each central header takes at least 46 bytes: a count the directory cannot hold is a
        // lie, refused before anything is allocated for it.
        if directory.entries > directory.range.len() / CENTRAL_HEADER_LEN {
            return Err(zip(format!(
                "the end record claims {} entries, more than a {}-byte central directory holds",
                directory.entries,
                directory.range.len()
            )));
        }
        if directory.entries > max_entries {
            return Err(zip(format!(
                "{} entries, more than the limit of {max_entries}",
                directory.entries
            )));
        }
        let mut entries = HashMap::with_capacity(directory.entries);
        let mut spans = Vec::with_capacity(directory.entries);
        let mut prefix: Option<String> = None;
        let mut cursor = directory.range.start;
        for _ in 0..directory.entries {
            let entry = CentralEntry::parse(&window, cursor, directory.range.end)?;
            cursor = entry.next;
            let (top, _) = entry
                .name
                .split_once('/')
                .ok_or_else(|| zip(format!("entry {:?} is not inside a folder", entry.name)))?;
            match &prefix {
                None => prefix = Some(top.to_string()),
                Some(p) if p == top => {}
                Some(p) => {
                    return Err(zip(format!(
                        "entry {:?} is outside the archive folder {p:?}",
                        entry.name
                    )));
                }
            }
            let data = entry.data_range(body, directory.range.start)?;
            spans.push((entry.local_offset, data.end, entry.name.clone()));
            if entries.insert(entry.name.clone(), data).is_some() {
                return Err(zip(format!("entry {:?} appears twice", entry.name)));
            }
        }
        if cursor != directory.range.end {
            return Err(zip("the central directory has bytes after its last entry"));
        }
        // Overlapping entries are how "overlap" zip bombs multiply their size; a torch.save
        // archive never has them.
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(zip(format!(
                    "entries {:?} and {:?} overlap",
                    pair[0].2, pair[1].2
                )));
            }
        }
        Ok(Self {
            prefix: prefix.ok_or_else(|| zip("the archive has no entries"))?,
            entries,
        })
    }

    /// The byte range of record `name` (relative to the archive folder), if present.
    pub fn record(&self, name: &str) -> Option<Range<usize>> {
        self.entries
            .get(&format!("{}/{name}", self.prefix))
            .cloned()
    }
}

pub(super) fn zip(problem: impl Into<String>) -> TorchSaveError {
    TorchSaveError::Container(problem.into())
}

/// Reads little-endian integers at checked positions of a window of the archive: `body` holds
/// the archive's bytes from `base` on (all of it for a buffered archive, its tail when the
/// archive streamed by and only the central directory was kept). Positions are the archive's.
struct Cursor<'a> {
    body: &'a [u8],
    base: usize,
}

impl Cursor<'_> {
    /// Bytes of the whole archive (the window ends where the archive does).
    fn archive_len(&self) -> usize {
        self.base + self.body.len()
    }
    fn bytes(&self, at: usize, len: usize) -> Result<&[u8], TorchSaveError> {
        at.checked_sub(self.base)
            .and_then(|start| Some(start..start.checked_add(len)?))
            .and_then(|range| self.body.get(range))
            .ok_or_else(|| {
                zip(format!(
                    "a record at byte {at} runs past the end of the body"
                ))
            })
    }
    fn u16(&self, at: usize) -> Result<u16, TorchSaveError> {
        let b = self.bytes(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: usize) -> Result<u32, TorchSaveError> {
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: usize) -> Result<u64, TorchSaveError> {
        let b = self.bytes(at, 8)?;
        let mut x = [0u8; 8];
        x.copy_from_slice(b);
        Ok(u64::from_le_bytes(x))
    }
}

/// Where the central directory is and how many entries it claims.
struct CentralDirectory {
    range: Range<usize>,
    entries: usize,
}

/// A u64 from the file as an offset into the body, refused when it points past the end.
fn within(value: u64, body_len: usize, what: &str) -> Result<usize, TorchSaveError> {
    usize::try_from(value)
        .ok()
        .filter(|v| *v <= body_len)
        .ok_or_else(|| {
            zip(format!(
                "{what} {value} is past the end of the {body_len}-byte body"
            ))
        })
}

impl CentralDirectory {
    fn locate(c: &Cursor<'_>) -> Result<Self, TorchSaveError> {
        // torch.save writes no archive comment, so the end record is the last 22 bytes.
        let end = c
            .archive_len()
            .checked_sub(END_RECORD_LEN)
            .ok_or_else(|| zip("the body is too short to be a zip archive"))?;
        if c.u32(end)? != END_OF_CENTRAL_DIRECTORY {
            return Err(zip(
                "no end-of-central-directory record at the end of the body (archive comments \
                 are not accepted)",
            ));
        }
        if c.u16(end + 4)? != 0 || c.u16(end + 6)? != 0 {
            return Err(zip("multi-disk archives are not accepted"));
        }
        let mut entries = u64::from(c.u16(end + 10)?);
        let mut size = u64::from(c.u32(end + 12)?);
        let mut offset = u64::from(c.u32(end + 16)?);
        let mut directory_end = end;
        if let Some(locator) = end.checked_sub(ZIP64_LOCATOR_LEN)
            && c.u32(locator)? == ZIP64_LOCATOR
        {
            let record = within(
                c.u64(locator + 8)?,
                c.archive_len(),
                "the zip64 end record offset",
            )?;
            if record.checked_add(ZIP64_END_RECORD_LEN) != Some(locator) {
                return Err(zip(format!(
                    "the zip64 locator points at byte {record}, not at the record just before it"
                )));
            }
            if c.u32(record)? != ZIP64_END_OF_CENTRAL_DIRECTORY {
                return Err(zip("the zip64 locator points at no zip64 end record"));
            }
            let zip64_entries = c.u64(record + 32)?;
            let zip64_size = c.u64(record + 40)?;
            let zip64_offset = c.u64(record + 48)?;
            // The 32-bit fields either hold the same value or say "see zip64" (all ones).
            for (short, long, all_ones, what) in [
                (entries, zip64_entries, 0xffff, "entry count"),
                (size, zip64_size, 0xffff_ffff, "directory size"),
                (offset, zip64_offset, 0xffff_ffff, "directory offset"),
            ] {
                if short != long && short != all_ones {
                    return Err(zip(format!(
                        "the zip64 end record's {what} ({long}) disagrees with the end record's \
                         ({short})"
                    )));
                }
            }
            (entries, size, offset) = (zip64_entries, zip64_size, zip64_offset);
            directory_end = record;
        }
        let start = within(offset, c.archive_len(), "the central directory offset")?;
        let size = within(size, c.archive_len(), "the central directory size")?;
        if start.checked_add(size) != Some(directory_end) {
            return Err(zip(format!(
                "the central directory [{start}, +{size}) does not end where the end record \
                 starts ({directory_end})"
            )));
        }
        Ok(Self {
            range: start..directory_end,
            // Bounded by the directory size just below (46 bytes per entry).
            entries: usize::try_from(entries).unwrap_or(usize::MAX),
        })
    }
}

/// One central-directory entry.
pub(super) struct CentralEntry {
    pub name: String,
    pub size: u64,
    pub local_offset: usize,
    next: usize,
}

impl CentralEntry {
    fn parse(c: &Cursor<'_>, at: usize, directory_end: usize) -> Result<Self, TorchSaveError> {
        if at.saturating_add(CENTRAL_HEADER_LEN) > directory_end || c.u32(at)? != CENTRAL_HEADER {
            return Err(zip(format!("no central directory entry at byte {at}")));
        }
        let flags = c.u16(at + 8)?;
        let method = c.u16(at + 10)?;
        let mut compressed = u64::from(c.u32(at + 20)?);
        let mut size = u64::from(c.u32(at + 24)?);
        let name_len = usize::from(c.u16(at + 28)?);
        let extra_len = usize::from(c.u16(at + 30)?);
        let comment_len = usize::from(c.u16(at + 32)?);
        let disk = c.u16(at + 34)?;
        let mut local_offset = u64::from(c.u32(at + 42)?);
        let name_at = at + CENTRAL_HEADER_LEN;
        let next = name_at + name_len + extra_len + comment_len;
        if next > directory_end {
            return Err(zip(format!(
                "the central directory entry at byte {at} runs past the directory"
            )));
        }
        let name = std::str::from_utf8(c.bytes(name_at, name_len)?)
            .map_err(|_| zip(format!("the entry name at byte {at} is not UTF-8")))?
            .to_string();
        check_entry(&name, flags, method)?;
        if disk != 0 && disk != 0xffff {
            return Err(zip(format!("entry {name:?} is on another disk")));
        }
        // zip64 sizes and offset, in this order, for each field that is all ones.
        let mut extra = c.bytes(name_at + name_len, extra_len)?;
        while extra.len() >= 4 {
            let id = u16::from_le_bytes([extra[0], extra[1]]);
            let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
            let field = extra
                .get(4..4 + len)
                .ok_or_else(|| zip(format!("entry {name:?} has a truncated extra field")))?;
            if id == ZIP64_EXTRA {
                let mut values = field
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                let mut take = |value: &mut u64| -> Result<(), TorchSaveError> {
                    if *value == 0xffff_ffff {
                        *value = values.next().ok_or_else(|| {
                            zip(format!("entry {name:?} lacks a zip64 value it announces"))
                        })?;
                    }
                    Ok(())
                };
                take(&mut size)?;
                take(&mut compressed)?;
                take(&mut local_offset)?;
            }
            extra = &extra[4 + len..];
        }
        if compressed != size {
            return Err(zip(format!(
                "stored entry {name:?} claims {compressed} stored bytes for {size} bytes of data"
            )));
        }
        Ok(Self {
            local_offset: within(local_offset, c.archive_len(), "a local header offset")?,
            name,
            size,
            next,
        })
    }

    /// The entry's data, after its local header; it must end before the central directory.
    fn data_range(
        &self,
        body: &[u8],
        directory_start: usize,
    ) -> Result<Range<usize>, TorchSaveError> {
        let c = Cursor { body, base: 0 };
        let at = self.local_offset;
        if c.u32(at)? != LOCAL_HEADER {
            return Err(zip(format!(
                "entry {:?}: no local header at byte {at}",
                self.name
            )));
        }
        let name_len = usize::from(c.u16(at + 26)?);
        let extra_len = usize::from(c.u16(at + 28)?);
        if c.bytes(at + LOCAL_HEADER_LEN, name_len)? != self.name.as_bytes() {
            return Err(zip(format!(
                "entry {:?}: the local header names another file",
                self.name
            )));
        }
        let start = at + LOCAL_HEADER_LEN + name_len + extra_len;
        let end = usize::try_from(self.size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|end| *end <= directory_start)
            .ok_or_else(|| {
                zip(format!(
                    "entry {:?} claims {} bytes from byte {start}, past the central directory at \
                     {directory_start}",
                    self.name, self.size
                ))
            })?;
        Ok(start..end)
    }
}

/// The central directory of an archive that streamed by, read from `tail`: the archive's
/// bytes from `base` (where its last entry ended) to its end. The directory must start at
/// `base`; its entries are returned in order, at most `max_entries` of them.
pub(super) fn central_directory_at(
    tail: &[u8],
    base: usize,
    max_entries: usize,
) -> Result<Vec<CentralEntry>, TorchSaveError> {
    let window = Cursor { body: tail, base };
    let directory = CentralDirectory::locate(&window)?;
    if directory.range.start != base {
        return Err(zip(format!(
            "the central directory is said to start at byte {}, but the last entry ended at {base}",
            directory.range.start
        )));
    }
    if directory.entries > directory.range.len() / CENTRAL_HEADER_LEN
        || directory.entries > max_entries
    {
        return Err(zip(format!(
            "the end record claims {} entries, more than the {}-byte central directory or the \
             limit of {max_entries} allows",
            directory.entries,
            directory.range.len()
        )));
    }
    let mut entries = Vec::with_capacity(directory.entries);
    let mut cursor = directory.range.start;
    for _ in 0..directory.entries {
        let entry = CentralEntry::parse(&window, cursor, directory.range.end)?;
        cursor = entry.next;
        entries.push(entry);
    }
    if cursor != directory.range.end {
        return Err(zip("the central directory has bytes after its last entry"));
    }
    Ok(entries)
}

/// Refuses an entry `torch.save` never writes: a name a path-joining reader could be tricked
/// with, an encrypted entry, a compressed one (nothing is ever inflated, so no zip bomb).
pub(super) fn check_entry(name: &str, flags: u16, method: u16) -> Result<(), TorchSaveError> {
    check_name(name)?;
    if flags & FLAG_ENCRYPTED != 0 {
        return Err(zip(format!("entry {name:?} is encrypted")));
    }
    if method != METHOD_STORED {
        return Err(zip(format!(
            "entry {name:?} is compressed (method {method}); torch.save stores entries \
             uncompressed and nothing is inflated here"
        )));
    }
    Ok(())
}

/// Refuses names a path-joining reader could be tricked with.
fn check_name(name: &str) -> Result<(), TorchSaveError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.contains(':')
        || name
            .split('/')
            .any(|part| part == ".." || part == "." || part.is_empty());
    if bad {
        return Err(zip(format!(
            "entry name {name:?} is not a plain relative path"
        )));
    }
    Ok(())
}
