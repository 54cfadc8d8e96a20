//! The JSON request bodies (`/register`, `/heartbeat`, `/deregister`): any bytes are refused
//! or parsed, never a panic, and the worker-id rule holds for whatever parses.
#![no_main]

use diloco_contract::api::{
    HeartbeatRequest, RegisterRequest, WorkerRef, valid_worker_id,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<RegisterRequest>(data) {
        let ok = valid_worker_id(&request.worker_id);
        assert_eq!(
            ok,
            !request.worker_id.is_empty()
                && request.worker_id.len() <= 253
                && request
                    .worker_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
        );
        if let Some(shapes) = &request.param_shapes {
            for shape in shapes.values() {
                // What the server does with a shape: compare it, count it without overflow.
                let _ = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
            }
        }
    }
    let _ = serde_json::from_slice::<HeartbeatRequest>(data);
    let _ = serde_json::from_slice::<WorkerRef>(data);
});
