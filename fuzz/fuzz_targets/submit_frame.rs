//! The submit frame's header: any bytes give a header, a request for more, or an error —
//! never a panic — and a parsed header re-encodes to a frame that parses the same.
#![no_main]

use diloco_contract::wire::frame::{encode_frame, parse_frame_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, used))) = parse_frame_header(data) {
        assert!(used <= data.len());
        let again = encode_frame(&header, &data[used..]);
        let (reparsed, used_again) = parse_frame_header(&again)
            .expect("a re-encoded header parses")
            .expect("and is complete");
        assert_eq!(reparsed, header);
        assert_eq!(&again[used_again..], &data[used..]);
    }
    // Every prefix of the input is handled too (a body arrives in pieces).
    for cut in [1, 3, 4, 5, data.len() / 2] {
        let _ = parse_frame_header(&data[..cut.min(data.len())]);
    }
});
