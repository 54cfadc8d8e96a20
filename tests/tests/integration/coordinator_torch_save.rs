//! forgather's default codec on the real coordinator: a `torch.save` pseudo-gradient (frame
//! without `fmt`) is read by the restricted reader and folded like safetensors, and hostile
//! archives (globals that run code, opcodes outside the allowlist, missing records, lying
//! sizes, compressed entries) get a 4xx that names the problem and change nothing: the
//! parameters (as bytes), the round and the pending submissions are the same before and after.

use std::collections::BTreeMap;

use diloco_client::wire::dtype::{WireDtype, f32_to_bf16};
use diloco_client::wire::frame::{FrameHeader, PayloadFormat, encode_frame};
use diloco_client::wire::safetensors;
use diloco_client::wire::torch_save::{self, StorageDtype, TensorToWrite};
use serde_json::Value;

use crate::upload_refusals::{self, Harness};

/// A frame with no `fmt` (forgather's default: pickle) around `payload`.
fn pickle_frame(worker: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    let json = format!(r#"{{"worker_id":"{worker}"}}"#);
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(json.as_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn bf16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| f32_to_bf16(*v).to_le_bytes())
        .collect()
}

/// The pseudo-gradient every test worker sends, as a torch.save archive.
fn gradient_archive(w: f32, b: f32) -> Vec<u8> {
    let (w, b) = (bf16(&[w; 32]), bf16(&[b; 8]));
    torch_save::write(&[
        TensorToWrite {
            name: "w",
            dtype: StorageDtype::Bf16,
            shape: &[4, 8],
            data: &w,
        },
        TensorToWrite {
            name: "b",
            dtype: StorageDtype::Bf16,
            shape: &[8],
            data: &b,
        },
    ])
}

/// The pickle of `{"w": <GLOBAL module.name called with one string>}`.
fn calling(module: &str, name: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'(', b'X', 1, 0, 0, 0, b'w', b'c'];
    p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    p.extend_from_slice(&[b'X', 4, 0, 0, 0]);
    p.extend_from_slice(b"id -u");
    p.extend_from_slice(&[0x85, b'R', b'u', b'.']);
    p
}

/// Overwrites the start of data.pkl in a written archive with `pickle` (the entry keeps its size:
/// bytes the reader never reaches, after the hostile pickle's STOP) so the container stays valid.
fn with_pickle(archive: &[u8], pickle: &[u8]) -> Vec<u8> {
    let pickle_at = archive.windows(2).position(|w| w == [0x80, 2]).unwrap();
    let mut out = archive.to_vec();
    // Our writer puts no data descriptor after an entry: data.pkl ends at the next header.
    let original_len = out[pickle_at..]
        .windows(4)
        .position(|w| w == b"PK\x03\x04")
        .unwrap();
    assert!(
        pickle.len() <= original_len,
        "hostile pickle too long for the slot"
    );
    out[pickle_at..pickle_at + pickle.len()].copy_from_slice(pickle);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn torch_save_uploads_fold_and_hostile_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = upload_refusals::model();
    let (coordinator, _) = upload_refusals::start(
        dir.path(),
        "training: {min_workers: 1, heartbeat_timeout_seconds: 300}\n\
         limits: {max_upload_bytes: 65536}\n",
    );
    let h = Harness {
        http: diloco_tests::http_client(),
        url: coordinator.url.clone(),
    };
    let r = h
        .http
        .post(format!("{}/register", h.url))
        .json(&serde_json::json!({"worker_id": "w1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let good = gradient_archive(0.25, -0.5);
    let refused_global = with_pickle(&good, &calling("os", "system"));
    h.refused(
        "GLOBAL os.system",
        pickle_frame("w1", &refused_global),
        415,
        "os.system",
    )
    .await;
    let eval = with_pickle(&good, &calling("builtins", "eval"));
    h.refused(
        "REDUCE of builtins.eval",
        pickle_frame("w1", &eval),
        415,
        "builtins.eval",
    )
    .await;
    // A nested pickle travels as bytes (BINBYTES), which no state dict needs.
    let nested = with_pickle(
        &good,
        b"\x80\x02}(X\x01\x00\x00\x00wB\x04\x00\x00\x00\x80\x02N.u.",
    );
    h.refused(
        "nested pickle",
        pickle_frame("w1", &nested),
        415,
        "BINBYTES",
    )
    .await;
    // A persistent id to a storage record the archive does not hold.
    let mut missing = good.clone();
    // Storage key "0" is written as BINUNICODE "0" followed by BINUNICODE "cpu".
    let at = missing
        .windows(7)
        .position(|w| w == b"\x01\x00\x00\x000X\x03")
        .unwrap();
    missing[at + 4] = b'9';
    h.refused(
        "persistent id to a missing record",
        pickle_frame("w1", &missing),
        400,
        "data/9",
    )
    .await;
    // A deflated entry: nothing is ever inflated, so no zip bomb.
    let mut deflated = good.clone();
    let directory = deflated
        .windows(4)
        .position(|w| w == b"PK\x01\x02")
        .unwrap();
    deflated[directory + 10] = 8;
    h.refused(
        "compressed entry",
        pickle_frame("w1", &deflated),
        400,
        "compressed",
    )
    .await;
    // The central directory comes last: tensors that streamed in (and were stored, this being
    // the round's first upload) under a directory that then disagrees with what streamed by
    // are refused and dropped.
    let mut lying = gradient_archive(9.0, 9.0);
    let directory = lying.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let name_len = u16::from_le_bytes([lying[directory + 28], lying[directory + 29]]) as usize;
    lying[directory + 46 + name_len - 1] = b'X';
    h.refused(
        "central directory naming another entry",
        pickle_frame("w1", &lying),
        400,
        "not what streamed by",
    )
    .await;
    let mut trailing = gradient_archive(9.0, 9.0);
    trailing.push(0);
    h.refused(
        "a byte after the end record",
        pickle_frame("w1", &trailing),
        400,
        "end",
    )
    .await;
    h.refused(
        "not an archive",
        pickle_frame("w1", b"PK\x03\x04 and nothing"),
        400,
        "end record",
    )
    .await;

    // The real thing: folded, the round advances, θ moves by the outer step.
    let before = h.observe().await;
    let (status, reply) = h.submit(pickle_frame("w1", &good)).await;
    assert_eq!(status, 200, "{reply}");
    let after = h.observe().await;
    assert_eq!(after.round, before.round + 1);
    assert_ne!(after.params, before.params);
    // Same gradient in safetensors gives the same step: the codecs are interchangeable.
    let safetensors_frame = {
        let header = FrameHeader {
            worker_id: "w1".into(),
            fragment_id: None,
            fmt: PayloadFormat::Safetensors,
            round: None,
        };
        let mut blob = Vec::new();
        let values: Vec<f32> = [[-0.5f32; 8].as_slice(), [0.25f32; 32].as_slice()].concat();
        safetensors::encode_into(
            &layout,
            &values,
            WireDtype::Bf16,
            &BTreeMap::new(),
            &mut blob,
        );
        encode_frame(&header, &blob)
    };
    let (status, reply) = h.submit(safetensors_frame).await;
    assert_eq!(status, 200, "{reply}");
    let third = h.observe().await;
    assert_eq!(third.round, after.round + 1);
}

/// The codec of tensor responses: `/info` announces `training.wire_format`, responses use it
/// unless the request names another with `?wire_format=`, and both carry the same tensors.
#[tokio::test(flavor = "multi_thread")]
async fn responses_use_the_announced_codec_unless_the_request_names_another() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, blob) = upload_refusals::start(
        dir.path(),
        "training: {min_workers: 1, heartbeat_timeout_seconds: 300, wire_format: pickle}\n",
    );
    let http = diloco_tests::http_client();
    let url = &coordinator.url;
    let info: Value = http
        .get(format!("{url}/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["expected_client_settings"]["wire_format"], "pickle");
    let get = |query: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http
                .get(format!("{url}/global_params{query}"))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.bytes().await.unwrap().to_vec(),
            )
        }
    };
    let (status, announced) = get("").await;
    assert_eq!(status, 200);
    assert!(
        announced.starts_with(torch_save::MAGIC),
        "pickle by default"
    );
    let (status, pickle) = get("?wire_format=pickle").await;
    assert_eq!((status, &pickle), (200, &announced));
    let (status, safetensors_reply) = get("?wire_format=safetensors").await;
    assert_eq!(status, 200);
    // The published safetensors carry metadata (round, format) of their own: compare tensors.
    assert_eq!(
        tensors_of(&safetensors_reply),
        tensors_of(&blob),
        "the initial parameters"
    );
    // The archive holds the same tensors, byte for byte, in the download dtype.
    let tensors = torch_save::read(&pickle, &Default::default()).unwrap();
    let blob = safetensors_reply;
    let n = safetensors::header_length(&blob).unwrap().unwrap();
    let header = safetensors::parse_header(&blob[8..8 + n]).unwrap();
    assert_eq!(tensors.len(), header.tensors.len());
    for (t, e) in tensors.iter().zip(&header.tensors) {
        assert_eq!(
            (&t.name, t.dtype.safetensors_name(), &t.shape),
            (&e.name, e.dtype.as_str(), &e.shape)
        );
        assert_eq!(t.bytes(&pickle), &blob[8 + n..][e.data.clone()]);
    }
    let (status, _) = get("?wire_format=yaml").await;
    assert_eq!(status, 400);
    // /register answers in the codec asked for as well.
    let registered = http
        .post(format!("{url}/register?wire_format=safetensors"))
        .json(&serde_json::json!({"worker_id": "w1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    assert_eq!(
        tensors_of(&registered.bytes().await.unwrap()),
        tensors_of(&blob)
    );
    // The Rust client asks for safetensors whatever is announced.
    let client =
        diloco_client::CoordinatorClient::new(diloco_client::ClientConfig::new(url)).unwrap();
    let params = client.global_params().await.unwrap();
    assert_eq!(tensors_of(&params.bytes), tensors_of(&blob));
    let registration = diloco_client::contract::api::RegisterRequest {
        worker_id: "w2".into(),
        ..Default::default()
    };
    let params = client.register(&registration).await.unwrap();
    assert_eq!(tensors_of(&params.bytes), tensors_of(&blob));
}

/// `(name, dtype, shape, bytes)` of every tensor of a safetensors blob.
fn tensors_of(blob: &[u8]) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let n = safetensors::header_length(blob).unwrap().unwrap();
    let header = safetensors::parse_header(&blob[8..8 + n]).unwrap();
    let data = &blob[8 + n..];
    header
        .tensors
        .into_iter()
        .map(|t| (t.name, t.dtype, t.shape, data[t.data].to_vec()))
        .collect()
}
