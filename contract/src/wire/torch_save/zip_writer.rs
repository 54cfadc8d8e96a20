//! Writes the zip container the way `torch.save` does: STORED entries whose data start on a
//! 64-byte boundary (padded with an extra field, as PyTorch's writer pads them), a central
//! directory, and a zip64 end record, so archives past 4 GiB need nothing special.

const ALIGNMENT: usize = 64;
/// Extra-field id of the padding PyTorch writes ("FB").
const PADDING_EXTRA: u16 = 0x4246;
const ZIP64_EXTRA: u16 = 0x0001;
/// Version needed to extract: 4.5, zip64.
const VERSION_ZIP64: u16 = 45;
/// General-purpose flag bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 0x0800;

struct Written {
    name: String,
    crc: u32,
    size: u64,
    local_offset: u64,
}

/// A zip archive being written into a buffer, one entry at a time.
pub struct ZipWriter<'a> {
    out: &'a mut Vec<u8>,
    entries: Vec<Written>,
    /// The open entry: index of its CRC field in `out` and where its data starts.
    open: Option<(usize, usize)>,
}

impl<'a> ZipWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            entries: Vec::new(),
            open: None,
        }
    }

    /// Writes a whole entry.
    pub fn entry(&mut self, name: &str, data: &[u8]) {
        self.start(name, data.len() as u64);
        self.out.extend_from_slice(data);
        self.finish();
    }

    /// Starts an entry of `size` bytes; the caller appends exactly that many bytes to
    /// [`Self::buffer`], then calls [`Self::finish`].
    pub fn start(&mut self, name: &str, size: u64) {
        let local_offset = self.out.len() as u64;
        // Sizes always go to a zip64 field too: simple, and valid at any size.
        let zip64_len = 4 + 16;
        let before_padding = self.out.len() + 30 + name.len() + zip64_len + 4;
        let padding = (ALIGNMENT - before_padding % ALIGNMENT) % ALIGNMENT;
        let out = &mut *self.out;
        put32(out, 0x0403_4b50);
        put16(out, VERSION_ZIP64);
        put16(out, FLAG_UTF8);
        put16(out, 0); // stored
        put16(out, 0); // time
        put16(out, 0); // date
        let crc_at = out.len();
        put32(out, 0); // CRC, patched by finish()
        put32(out, 0xffff_ffff);
        put32(out, 0xffff_ffff);
        put16(out, name.len() as u16);
        put16(out, (zip64_len + 4 + padding) as u16);
        out.extend_from_slice(name.as_bytes());
        put16(out, ZIP64_EXTRA);
        put16(out, 16);
        put64(out, size);
        put64(out, size);
        put16(out, PADDING_EXTRA);
        put16(out, padding as u16);
        out.resize(out.len() + padding, b'Z');
        self.open = Some((crc_at, out.len()));
        self.entries.push(Written {
            name: name.to_string(),
            crc: 0,
            size,
            local_offset,
        });
    }

    /// The buffer the open entry's data is appended to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Ends the open entry: its CRC goes into its local header.
    pub fn finish(&mut self) {
        let Some((crc_at, data_start)) = self.open.take() else {
            return;
        };
        let crc = crc32fast::hash(&self.out[data_start..]);
        self.out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        if let Some(entry) = self.entries.last_mut() {
            entry.crc = crc;
            debug_assert_eq!(entry.size, (self.out.len() - data_start) as u64);
        }
    }

    /// Writes the central directory and the end records.
    pub fn close(mut self) {
        self.finish();
        let out = &mut *self.out;
        let directory_start = out.len() as u64;
        for e in &self.entries {
            put32(out, 0x0201_4b50);
            put16(out, VERSION_ZIP64); // made by
            put16(out, VERSION_ZIP64); // needed
            put16(out, FLAG_UTF8);
            put16(out, 0);
            put16(out, 0);
            put16(out, 0);
            put32(out, e.crc);
            put32(out, 0xffff_ffff);
            put32(out, 0xffff_ffff);
            put16(out, e.name.len() as u16);
            put16(out, 4 + 24);
            put16(out, 0); // comment
            put16(out, 0); // disk
            put16(out, 0); // internal attributes
            put32(out, 0); // external attributes
            put32(out, 0xffff_ffff);
            out.extend_from_slice(e.name.as_bytes());
            put16(out, ZIP64_EXTRA);
            put16(out, 24);
            put64(out, e.size);
            put64(out, e.size);
            put64(out, e.local_offset);
        }
        let directory_size = out.len() as u64 - directory_start;
        let zip64_record = out.len() as u64;
        let count = self.entries.len() as u64;
        put32(out, 0x0606_4b50);
        put64(out, 44); // size of the rest of this record
        put16(out, VERSION_ZIP64);
        put16(out, VERSION_ZIP64);
        put32(out, 0);
        put32(out, 0);
        put64(out, count);
        put64(out, count);
        put64(out, directory_size);
        put64(out, directory_start);
        put32(out, 0x0706_4b50);
        put32(out, 0);
        put64(out, zip64_record);
        put32(out, 1);
        put32(out, 0x0605_4b50);
        put16(out, 0);
        put16(out, 0);
        put16(out, count.min(0xffff) as u16);
        put16(out, count.min(0xffff) as u16);
        put32(out, directory_size.min(0xffff_ffff) as u32);
        put32(out, directory_start.min(0xffff_ffff) as u32);
        put16(out, 0);
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
