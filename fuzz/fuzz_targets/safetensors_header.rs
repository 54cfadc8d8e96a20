//! The safetensors header: any bytes are refused or give tensors whose data ranges tile the
//! data section exactly, and a model layout built from them (as `/init_params` does) never
//! panics.
#![no_main]

use diloco_contract::wire::layout::ModelLayout;
use diloco_contract::wire::safetensors::{header_length, parse_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(length)) = header_length(data) else {
        // Also try the whole input as a bare JSON header.
        check(data);
        return;
    };
    if let Some(json) = data.get(8..8 + length) {
        check(json);
    }
});

fn check(json: &[u8]) {
    let Ok(header) = parse_header(json) else {
        return;
    };
    let mut end = 0;
    for t in &header.tensors {
        assert_eq!(t.data.start, end, "contiguous");
        end = t.data.end;
    }
    assert_eq!(end, header.data_len);
    let tensors = header
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    if let Ok(layout) = ModelLayout::new(tensors) {
        let total: usize = layout.params().iter().map(|p| p.numel).sum();
        assert_eq!(total, layout.total_elements());
    }
}
