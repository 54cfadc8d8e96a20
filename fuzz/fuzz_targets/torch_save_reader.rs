//! The `torch.save` readers: any bytes are refused or give tensors whose byte lengths match
//! their shapes and dtypes, within the byte limit; the streaming reader, in any chunking, gives
//! the same bytes as the whole one whenever both read; and what they read, our writer writes
//! back into an archive that reads the same. It never panics and never allocates past the limit
//! (the run's `-rss_limit_mb` would catch it).
#![no_main]

use bytes::Bytes;
use diloco_contract::wire::torch_save::{
    self, ReadLimits, StreamEvent, StreamReader, TensorToWrite,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: ReadLimits = ReadLimits {
    max_tensor_bytes: 1 << 20,
    max_entries: 1 << 12,
    max_pickle_bytes: 1 << 20,
    max_pickle_values: 1 << 16,
};

/// The data section the streaming reader hands out for `data` fed in `chunk`-byte pieces.
fn streamed(data: &[u8], chunk: usize) -> Option<Vec<u8>> {
    let mut reader = StreamReader::new(LIMITS);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    for piece in data.chunks(chunk) {
        reader.push(Bytes::copy_from_slice(piece), &mut events).ok()?;
        for event in events.drain(..) {
            if let StreamEvent::Data { offset, bytes } = event {
                assert_eq!(offset, out.len(), "pieces come in order");
                out.extend_from_slice(&bytes);
            }
        }
    }
    assert!(out.len() as u64 <= LIMITS.max_tensor_bytes);
    reader.finish().ok().map(|()| out)
}

fuzz_target!(|data: &[u8]| {
    // Streamed in any chunking, the reader never panics; what it reads, reading whole reads
    // the same.
    let streams = [streamed(data, 1), streamed(data, 37), streamed(data, data.len().max(1))];
    let Ok(tensors) = torch_save::read(data, &LIMITS) else {
        return;
    };
    let whole: Vec<u8> = tensors.iter().flat_map(|t| t.bytes(data).to_vec()).collect();
    for stream in streams.into_iter().flatten() {
        assert_eq!(stream, whole);
    }
    let mut total = 0usize;
    for t in &tensors {
        let numel: usize = t.shape.iter().product();
        assert_eq!(t.byte_len(), numel * t.dtype.size(), "{}", t.name);
        assert_eq!(t.bytes(data).len(), t.byte_len());
        total += t.byte_len();
    }
    assert!(total as u64 <= LIMITS.max_tensor_bytes);
    assert_eq!(torch_save::safetensors_header(&tensors).data_len, total);
    let again: Vec<_> = tensors
        .iter()
        .map(|t| TensorToWrite {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: t.bytes(data),
        })
        .collect();
    let archive = torch_save::write(&again);
    let back = torch_save::read(&archive, &LIMITS).expect("our own archive reads back");
    assert_eq!(back.len(), tensors.len());
    for (a, b) in tensors.iter().zip(&back) {
        assert_eq!((&a.name, a.dtype, &a.shape), (&b.name, b.dtype, &b.shape));
        assert_eq!(a.bytes(data), b.bytes(&archive));
    }
});
