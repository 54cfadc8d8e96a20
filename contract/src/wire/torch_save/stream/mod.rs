//! Reading a `torch.save` archive as it arrives, so an upload is checked and folded while the
//! rest of it is still on the wire instead of after the whole body was buffered.
//!
//! `torch.save` writes `data.pkl` first and the storage records after it, each with zero sizes
//! in its local header and the real size in a data descriptor behind the data (the sizes are
//! only certain in the central directory at the very end). So the reader:
//! - holds `data.pkl` (bounded by `max_pickle_bytes`) until its descriptor, recognised by its
//!   size matching the bytes before it, and reads the pickle: from then on every tensor's
//!   storage record has a known size (elements × element size);
//! - passes a record that is exactly one tensor's contiguous bytes, arriving in the dict's order,
//!   straight through as that tensor's data; any other record (shared, strided, offset, out of
//!   order) is held, bounded by `max_tensor_bytes`, and gathered once complete;
//! - keeps the central directory and end records, and at [`StreamReader::finish`] holds them
//!   against what streamed by: same entries, same offsets, same sizes. A descriptor that lied
//!   is caught there, and the caller throws away what it was given (as for a truncated body).
//!
//! Local headers that carry their sizes (our writer's, Python's `zipfile`) are taken at their
//! word, checked the same way at the end.

use std::collections::HashMap;

use bytes::Bytes;

mod local_header;
mod plan;

use local_header::{DESCRIPTOR, LocalHeader, find_descriptor, u16_at, u32_at, u64_at};
use plan::Plan;

use super::zip_reader::{
    self, CENTRAL_HEADER, END_OF_CENTRAL_DIRECTORY, LOCAL_HEADER, LOCAL_HEADER_LEN,
    ZIP64_END_OF_CENTRAL_DIRECTORY, zip,
};
use super::{ReadLimits, TorchSaveError};
use crate::wire::safetensors::SafetensorsHeader;

/// Largest record other than `data.pkl` and the storages read without a size in its header
/// (`byteorder`, `version`, `.format_version`, … hold a few bytes).
const SMALL_RECORD_MAX: usize = 1 << 20;

/// What the reader hands on.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The dict's tensors, described like a safetensors header whose data section is their
    /// row-major bytes in the dict's order. Comes once, before any data.
    Planned(SafetensorsHeader),
    /// The next bytes of that data section, starting at `offset`; pieces come in order.
    Data { offset: usize, bytes: Bytes },
}

/// A `torch.save` archive read chunk by chunk.
pub struct StreamReader {
    limits: ReadLimits,
    /// Archive bytes consumed (the position of the next byte not in `pending`).
    consumed: usize,
    /// Bytes of a header or descriptor that arrived but are not complete yet.
    pending: Vec<u8>,
    state: State,
    /// The folder every entry lives in, from the first entry.
    prefix: Option<String>,
    entries: Vec<StreamedEntry>,
    /// The pickle's plan, once `data.pkl` has been read.
    plan: Option<Plan>,
    /// Storage records that arrived before `data.pkl`, by key.
    early: HashMap<String, Bytes>,
    /// Bytes held in records waiting to be gathered or placed.
    held: u64,
    /// Where the central directory started, and the archive's bytes from there.
    tail: Option<(usize, Vec<u8>)>,
    failed: bool,
}

/// An entry as it streamed by, to be held against the central directory.
struct StreamedEntry {
    name: String,
    local_offset: usize,
    size: u64,
}

enum State {
    /// The next local header, or the central directory.
    Header,
    /// `left` more bytes of entry data, going to `to`; then a descriptor if `descriptor`.
    Data {
        left: u64,
        to: Target,
        descriptor: Option<bool>,
    },
    /// Data of an entry whose size only its descriptor says, held in `record` (at most
    /// `limit` bytes) until a descriptor whose size matches the bytes before it.
    Scanning {
        to: Target,
        limit: usize,
        scanned: usize,
    },
    /// The data descriptor of an entry of known size (`zip64`: 8-byte sizes).
    Descriptor { zip64: bool },
    /// The central directory and the end records.
    Tail,
}

/// Where an entry's data goes.
enum Target {
    /// `data.pkl`: held, then read.
    Pickle(Vec<u8>),
    /// The `byteorder` record: held, then checked.
    ByteOrder(Vec<u8>),
    /// A record nobody reads (`version`, an unreferenced storage, …).
    Skip,
    /// The same, when only its descriptor says how long it is: held (small) until then.
    SkipScanned(Vec<u8>),
    /// One tensor's bytes, passed straight through.
    Through { tensor: usize },
    /// A storage record, held until complete.
    Hold { key: String, bytes: Vec<u8> },
}

impl StreamReader {
    /// A reader holding at most what `limits` allows.
    pub fn new(limits: ReadLimits) -> Self {
        Self {
            limits,
            consumed: 0,
            pending: Vec::new(),
            state: State::Header,
            prefix: None,
            entries: Vec::new(),
            plan: None,
            early: HashMap::new(),
            held: 0,
            tail: None,
            failed: false,
        }
    }

    /// Reads the next chunk of the archive; what it makes ready is appended to `out`.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<StreamEvent>) -> Result<(), TorchSaveError> {
        if self.failed {
            return Err(zip("the archive was already refused"));
        }
        let result = self.consume(chunk, out);
        self.failed = result.is_err();
        result
    }

    /// Ends the archive: its central directory must describe exactly the entries that streamed
    /// by, and every tensor's data must have gone out.
    pub fn finish(self) -> Result<(), TorchSaveError> {
        if self.failed {
            return Err(zip("the archive was already refused"));
        }
        let Some((start, tail)) = &self.tail else {
            return Err(zip(format!(
                "the body ended after {} bytes without the archive's end record",
                self.consumed + self.pending.len()
            )));
        };
        let directory = zip_reader::central_directory_at(tail, *start, self.limits.max_entries)?;
        if directory.len() != self.entries.len() {
            return Err(zip(format!(
                "the central directory lists {} entries, {} streamed by",
                directory.len(),
                self.entries.len()
            )));
        }
        let by_offset: HashMap<usize, &StreamedEntry> =
            self.entries.iter().map(|e| (e.local_offset, e)).collect();
        for listed in &directory {
            let streamed = by_offset
                .get(&listed.local_offset)
                .filter(|e| e.name == listed.name && e.size == listed.size);
            if streamed.is_none() {
                return Err(zip(format!(
                    "the central directory's entry {:?} ({} bytes at byte {}) is not what \
                     streamed by",
                    listed.name, listed.size, listed.local_offset
                )));
            }
        }
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| zip("no data.pkl record"))?;
        if let Some(missing) = plan.tensors.get(plan.next) {
            return Err(zip(format!(
                "tensor {} refers to storage {}, which has no data/{} record",
                missing.name, missing.view.storage.key, missing.view.storage.key
            )));
        }
        Ok(())
    }

    fn consume(
        &mut self,
        mut chunk: Bytes,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TorchSaveError> {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Tail => {
                    let (_, tail) = self.tail.get_or_insert_with(|| (self.consumed, Vec::new()));
                    if tail.len() + chunk.len() > self.limits.max_pickle_bytes {
                        return Err(zip(format!(
                            "the central directory holds more than {} bytes",
                            self.limits.max_pickle_bytes
                        )));
                    }
                    tail.extend_from_slice(&chunk);
                    return Ok(());
                }
                State::Header => {
                    if let Some(header) = self.take_local_header(&mut chunk)? {
                        self.begin_entry(header, out)?;
                    }
                }
                State::Data { .. } => self.data(&mut chunk, out)?,
                State::Scanning { .. } => self.scan(&mut chunk, out)?,
                State::Descriptor { zip64 } => {
                    let zip64 = *zip64;
                    if self.descriptor(&mut chunk, zip64)? {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The next bytes of an entry of known size.
    fn data(
        &mut self,
        chunk: &mut Bytes,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TorchSaveError> {
        let State::Data {
            left,
            to,
            descriptor,
        } = &mut self.state
        else {
            return Ok(());
        };
        let n = usize::try_from(*left)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let piece = chunk.split_to(n);
        *left -= n as u64;
        let (done, descriptor) = (*left == 0, *descriptor);
        match to {
            Target::Through { .. } => {
                let plan = self.plan.as_mut().ok_or_else(|| zip("no plan"))?;
                out.push(StreamEvent::Data {
                    offset: plan.emitted,
                    bytes: piece,
                });
                plan.emitted += n;
            }
            Target::Skip => {}
            Target::Pickle(held)
            | Target::ByteOrder(held)
            | Target::SkipScanned(held)
            | Target::Hold { bytes: held, .. } => held.extend_from_slice(&piece),
        }
        self.consumed += n;
        if done {
            let next = match descriptor {
                Some(zip64) => State::Descriptor { zip64 },
                None => State::Header,
            };
            if let State::Data { to, .. } = std::mem::replace(&mut self.state, next) {
                self.end_entry(to, out)?;
            }
        }
        Ok(())
    }

    /// The data descriptor after an entry of known size: whether it is complete (and matched).
    /// A zip64 entry's has 8-byte sizes; a writer may also use them without saying so in the
    /// local header, so 8-byte sizes are read when 4-byte ones do not match.
    fn descriptor(&mut self, chunk: &mut Bytes, zip64: bool) -> Result<bool, TorchSaveError> {
        let (size, name) = self
            .entries
            .last()
            .map_or((0, String::new()), |e| (e.size, e.name.clone()));
        let refused = || {
            zip(format!(
                "entry {name:?}: no data descriptor of its {size} bytes after its data \
                 (descriptors without their signature are not read)"
            ))
        };
        if !self.take_pending(chunk, 16) {
            return Ok(false);
        }
        if u32_at(&self.pending, 0) != DESCRIPTOR {
            return Err(refused());
        }
        let short = u64::from(u32_at(&self.pending, 8)) == size
            && u64::from(u32_at(&self.pending, 12)) == size;
        let len = if short && !zip64 {
            16
        } else {
            if !self.take_pending(chunk, 24) {
                return Ok(false);
            }
            if u64_at(&self.pending, 8) != size || u64_at(&self.pending, 16) != size {
                return Err(refused());
            }
            24
        };
        self.pending.clear();
        self.consumed += len;
        Ok(true)
    }

    /// Moves bytes from `chunk` into `pending` until it holds `len`; whether it does.
    fn take_pending(&mut self, chunk: &mut Bytes, len: usize) -> bool {
        let need = len.saturating_sub(self.pending.len()).min(chunk.len());
        self.pending.extend_from_slice(&chunk.split_to(need));
        self.pending.len() >= len
    }

    /// The next local header, once all of it has arrived; switches to the tail at the central
    /// directory.
    fn take_local_header(
        &mut self,
        chunk: &mut Bytes,
    ) -> Result<Option<LocalHeader>, TorchSaveError> {
        if !self.take_pending(chunk, 4) {
            return Ok(None);
        }
        let signature = u32_at(&self.pending, 0);
        if matches!(
            signature,
            CENTRAL_HEADER | END_OF_CENTRAL_DIRECTORY | ZIP64_END_OF_CENTRAL_DIRECTORY
        ) {
            let start = std::mem::take(&mut self.pending);
            self.tail = Some((self.consumed, start));
            self.state = State::Tail;
            return Ok(None);
        }
        if signature != LOCAL_HEADER {
            return Err(zip(format!(
                "no local header or central directory at byte {}",
                self.consumed
            )));
        }
        if !self.take_pending(chunk, LOCAL_HEADER_LEN) {
            return Ok(None);
        }
        let p = &self.pending;
        let name_len = usize::from(u16_at(p, 26));
        let extra_len = usize::from(u16_at(p, 28));
        if !self.take_pending(chunk, LOCAL_HEADER_LEN + name_len + extra_len) {
            return Ok(None);
        }
        let header = LocalHeader::parse(&self.pending, self.consumed)?;
        self.consumed += self.pending.len();
        self.pending.clear();
        Ok(Some(header))
    }

    /// Decides where an entry's data goes, now that its header has arrived.
    fn begin_entry(
        &mut self,
        header: LocalHeader,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TorchSaveError> {
        let (top, record) = header
            .name
            .split_once('/')
            .ok_or_else(|| zip(format!("entry {:?} is not inside a folder", header.name)))?;
        match &self.prefix {
            None => self.prefix = Some(top.to_string()),
            Some(p) if p == top => {}
            Some(p) => {
                return Err(zip(format!(
                    "entry {:?} is outside the archive folder {p:?}",
                    header.name
                )));
            }
        }
        if self.entries.iter().any(|e| e.name == header.name) {
            return Err(zip(format!("entry {:?} appears twice", header.name)));
        }
        if self.entries.len() >= self.limits.max_entries {
            return Err(zip(format!(
                "more than the limit of {} entries",
                self.limits.max_entries
            )));
        }
        let record = record.to_string();
        // What the pickle says the record holds, for a storage it refers to.
        let storage_len = record
            .strip_prefix("data/")
            .and_then(|key| self.plan.as_ref()?.storages.get(key))
            .map(|s| s.record_len);
        let size = match (header.size, storage_len) {
            (Some(said), Some(expected)) if said != expected => {
                return Err(zip(format!(
                    "record {record} holds {said} bytes; the pickle's storage needs {expected}"
                )));
            }
            (Some(size), _) | (None, Some(size)) => Some(size),
            (None, None) => None,
        };
        let to = match self.target(&record, size)? {
            Target::Skip if size.is_none() => Target::SkipScanned(Vec::new()),
            to => to,
        };
        let descriptor = header.has_descriptor.then_some(header.zip64);
        self.entries.push(StreamedEntry {
            name: header.name,
            local_offset: header.offset,
            size: size.unwrap_or(0),
        });
        match size {
            Some(size) => {
                self.state = State::Data {
                    left: size,
                    to,
                    descriptor,
                };
                if size == 0 {
                    // Nothing will arrive to end it: end it now.
                    self.consume_empty_entry(out)?;
                }
            }
            None => {
                let limit = match to {
                    Target::Pickle(_) => self.limits.max_pickle_bytes,
                    _ => SMALL_RECORD_MAX,
                };
                self.state = State::Scanning {
                    to,
                    limit,
                    scanned: 0,
                };
            }
        }
        Ok(())
    }

    fn consume_empty_entry(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TorchSaveError> {
        let State::Data { to, descriptor, .. } = std::mem::replace(&mut self.state, State::Header)
        else {
            return Ok(());
        };
        if let Some(zip64) = descriptor {
            self.state = State::Descriptor { zip64 };
        }
        self.end_entry(to, out)
    }

    /// Where record `record` (its name inside the archive folder) goes.
    fn target(&mut self, record: &str, size: Option<u64>) -> Result<Target, TorchSaveError> {
        if record == "data.pkl" {
            return Ok(Target::Pickle(Vec::new()));
        }
        if record == "byteorder" {
            return Ok(Target::ByteOrder(Vec::new()));
        }
        let Some(key) = record.strip_prefix("data/") else {
            return Ok(Target::Skip);
        };
        let key = key.to_string();
        let Some(plan) = self.plan.as_ref() else {
            // Before data.pkl: held, if the header says how much (else it is scanned, small).
            let bytes = self.hold(size.unwrap_or(0))?;
            return Ok(Target::Hold { key, bytes });
        };
        let Some(storage) = plan.storages.get(&key) else {
            return Ok(Target::Skip);
        };
        if storage.arrived {
            return Err(zip(format!("storage {key} arrives twice")));
        }
        if let Some(next) = plan.tensors.get(plan.next)
            && next.whole_storage
            && next.view.storage.key == key
        {
            return Ok(Target::Through { tensor: plan.next });
        }
        let bytes = self.hold(storage.record_len)?;
        Ok(Target::Hold { key, bytes })
    }

    /// A buffer for a held record of `len` bytes, counted against the limit.
    fn hold(&mut self, len: u64) -> Result<Vec<u8>, TorchSaveError> {
        self.held = self.held.saturating_add(len);
        if self.held > self.limits.max_tensor_bytes {
            return Err(TorchSaveError::TooLarge {
                declared: self.held,
                limit: self.limits.max_tensor_bytes,
            });
        }
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
            .map_err(|_| zip(format!("cannot allocate {len} bytes for a storage record")))?;
        Ok(bytes)
    }

    /// Holds data of unknown size until its descriptor: `DESCRIPTOR`, a CRC, then the size
    /// twice, equal to the bytes before it.
    fn scan(
        &mut self,
        chunk: &mut Bytes,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TorchSaveError> {
        let name = self.entries.last().map_or("", |e| e.name.as_str());
        let State::Scanning { to, limit, scanned } = &mut self.state else {
            return Ok(());
        };
        let held = match to {
            Target::Pickle(held)
            | Target::ByteOrder(held)
            | Target::SkipScanned(held)
            | Target::Hold { bytes: held, .. } => held,
            // Skipped and passed-through records always have a known size.
            Target::Skip | Target::Through { .. } => {
                return Err(zip(format!("entry {name:?} has no size")));
            }
        };
        // The record and its descriptor (24 bytes at most) within the limit.
        let before = held.len();
        let room = (*limit + 24).saturating_sub(before);
        let take = room.min(chunk.len());
        held.extend_from_slice(&chunk[..take]);
        let Some((size, len)) = find_descriptor(held, *scanned) else {
            if held.len() >= *limit + 24 {
                return Err(zip(format!(
                    "entry {name:?} has no size in its local header and no data descriptor \
                     within {limit} bytes"
                )));
            }
            *scanned = held.len().saturating_sub(23);
            *chunk = chunk.slice(take..);
            return Ok(());
        };
        // The descriptor ends in the bytes just added (it was not complete before them).
        let used = (size + len).saturating_sub(before);
        held.truncate(size);
        *chunk = chunk.slice(used..);
        self.consumed += size + len;
        if let Some(entry) = self.entries.last_mut() {
            entry.size = size as u64;
        }
        let state = std::mem::replace(&mut self.state, State::Header);
        let State::Scanning { to, .. } = state else {
            return Ok(());
        };
        if let Target::Hold { bytes, .. } = &to {
            self.held = self.held.saturating_add(bytes.len() as u64);
            if self.held > self.limits.max_tensor_bytes {
                return Err(TorchSaveError::TooLarge {
                    declared: self.held,
                    limit: self.limits.max_tensor_bytes,
                });
            }
        }
        self.end_entry(to, out)
    }

    /// An entry's data is complete.
    fn end_entry(&mut self, to: Target, out: &mut Vec<StreamEvent>) -> Result<(), TorchSaveError> {
        match to {
            Target::Skip | Target::SkipScanned(_) => Ok(()),
            Target::ByteOrder(order) => {
                if order != b"little" {
                    return Err(TorchSaveError::Container(
                        "byteorder is not \"little\" (big-endian archives are not read)".into(),
                    ));
                }
                Ok(())
            }
            Target::Pickle(pickle) => self.read_pickle(&pickle, out),
            Target::Through { tensor } => {
                let plan = self.plan.as_mut().ok_or_else(|| zip("no plan"))?;
                let key = plan.tensors[tensor].view.storage.key.clone();
                if let Some(storage) = plan.storages.get_mut(&key) {
                    storage.arrived = true;
                    storage.views_left = 0;
                }
                plan.next += 1;
                self.flush(out)
            }
            Target::Hold { key, bytes } => {
                let Some(plan) = self.plan.as_mut() else {
                    self.early.insert(key, Bytes::from(bytes));
                    return Ok(());
                };
                let storage = plan
                    .storages
                    .get_mut(&key)
                    .ok_or_else(|| zip("no storage"))?;
                storage.arrived = true;
                storage.data = Some(Bytes::from(bytes));
                self.flush(out)
            }
        }
    }

    /// Reads `data.pkl` into the plan, announces it, and places records that came before it.
    fn read_pickle(
        &mut self,
        pickle: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TorchSaveError> {
        let (mut plan, header) = Plan::read(pickle, &self.limits)?;
        out.push(StreamEvent::Planned(header));
        for (key, bytes) in std::mem::take(&mut self.early) {
            plan.place_early(&key, bytes)?;
        }
        self.plan = Some(plan);
        self.flush(out)
    }

    /// Hands out what the plan can, and stops counting what it no longer holds.
    fn flush(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TorchSaveError> {
        if let Some(plan) = self.plan.as_mut() {
            let released = plan.flush(out)?;
            self.held = self.held.saturating_sub(released);
        }
        Ok(())
    }
}
