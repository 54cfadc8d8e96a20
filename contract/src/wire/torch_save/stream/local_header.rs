//! The pieces of a zip stream read before their entry's data: local headers, and the data
//! descriptors `torch.save` writes after each entry instead of sizes in its header.

use super::super::TorchSaveError;
use super::super::zip_reader::{self, LOCAL_HEADER_LEN, ZIP64_EXTRA, zip};

/// Signature of a data descriptor (`torch.save`'s writer always writes it).
pub(super) const DESCRIPTOR: u32 = 0x0807_4b50;
/// Flag bit 3: the sizes follow the data, in a data descriptor.
const FLAG_DESCRIPTOR: u16 = 1 << 3;

/// A local header, read.
pub(super) struct LocalHeader {
    pub(super) name: String,
    pub(super) offset: usize,
    /// The data's size, when the header carries it.
    pub(super) size: Option<u64>,
    pub(super) has_descriptor: bool,
    pub(super) zip64: bool,
}

impl LocalHeader {
    pub(super) fn parse(h: &[u8], offset: usize) -> Result<Self, TorchSaveError> {
        let flags = u16_at(h, 6);
        let method = u16_at(h, 8);
        let mut compressed = u64::from(u32_at(h, 18));
        let mut size = u64::from(u32_at(h, 22));
        let name_len = usize::from(u16_at(h, 26));
        let name_end = LOCAL_HEADER_LEN + name_len;
        let name = std::str::from_utf8(&h[LOCAL_HEADER_LEN..name_end])
            .map_err(|_| zip(format!("the entry name at byte {offset} is not UTF-8")))?
            .to_string();
        zip_reader::check_entry(&name, flags, method)?;
        let mut zip64 = false;
        let mut extra = &h[name_end..];
        while extra.len() >= 4 {
            let id = u16_at(extra, 0);
            let len = usize::from(u16_at(extra, 2));
            let field = extra
                .get(4..4 + len)
                .ok_or_else(|| zip(format!("entry {name:?} has a truncated extra field")))?;
            if id == ZIP64_EXTRA {
                zip64 = true;
                // In a local header the zip64 field holds both sizes, uncompressed first.
                if field.len() >= 16 {
                    if size == 0xffff_ffff {
                        size = u64_at(field, 0);
                    }
                    if compressed == 0xffff_ffff {
                        compressed = u64_at(field, 8);
                    }
                }
            }
            extra = &extra[4 + len..];
        }
        let has_descriptor = flags & FLAG_DESCRIPTOR != 0;
        if !has_descriptor && (compressed != size || size == 0xffff_ffff) {
            return Err(zip(format!(
                "stored entry {name:?} claims {compressed} stored bytes for {size} bytes of data"
            )));
        }
        Ok(Self {
            name,
            offset,
            size: (!has_descriptor).then_some(size),
            has_descriptor,
            zip64,
        })
    }
}

/// Where the data descriptor in `held` is, searching from `from`: `(data size, descriptor
/// length)`. A descriptor's sizes equal the bytes before it.
pub(super) fn find_descriptor(held: &[u8], from: usize) -> Option<(usize, usize)> {
    let signature = DESCRIPTOR.to_le_bytes();
    let mut at = from;
    while let Some(found) = held.get(at..)?.windows(4).position(|w| w == signature) {
        let p = at + found;
        let size = p as u64;
        if held.len() >= p + 16
            && u64::from(u32_at(held, p + 8)) == size
            && u64::from(u32_at(held, p + 12)) == size
        {
            return Some((p, 16));
        }
        if held.len() >= p + 24 && u64_at(held, p + 8) == size && u64_at(held, p + 16) == size {
            return Some((p, 24));
        }
        if held.len() < p + 24 {
            // Not all of it has arrived: look here again when more has.
            return None;
        }
        at = p + 1;
    }
    None
}

pub(super) fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

pub(super) fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

pub(super) fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}
