//! Bad uploads get a 4xx with a JSON error and change nothing: the parameters (compared as
//! bytes), the round and the roster are the same before and after each one.

use std::time::Duration;

use diloco_tests::frames::{RawTensor, bf16_bytes, frame};
use diloco_tests::processes::CoordinatorProcess;
use serde_json::Value;

use crate::upload_refusals::{self, Harness};

fn good(worker: &str) -> Vec<u8> {
    frame(
        worker,
        &[
            RawTensor {
                name: "w",
                dtype: "BF16",
                shape: &[4, 8],
                data: bf16_bytes(&[0.25; 32]),
            },
            RawTensor {
                name: "b",
                dtype: "BF16",
                shape: &[8],
                data: bf16_bytes(&[-0.5; 8]),
            },
        ],
    )
}

fn with_w(worker: &str, w: RawTensor<'_>) -> Vec<u8> {
    frame(
        worker,
        &[
            w,
            RawTensor {
                name: "b",
                dtype: "BF16",
                shape: &[8],
                data: bf16_bytes(&[0.0; 8]),
            },
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_upload_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let initial = upload_refusals::initial_values();
    let (coordinator, _) = upload_refusals::start(
        dir.path(),
        "training: {min_workers: 2, heartbeat_timeout_seconds: 300}\n\
         limits: {max_upload_bytes: 4096}\n",
    );
    let h = Harness {
        http: diloco_tests::http_client(),
        url: coordinator.url.clone(),
    };
    for id in ["w1", "w2"] {
        let r = h
            .http
            .post(format!("{}/register", h.url))
            .json(&serde_json::json!({"worker_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let valid = good("w1");
    h.refused(
        "truncated frame",
        valid[..valid.len() - 5].to_vec(),
        400,
        "body ended after",
    )
    .await;
    h.refused("truncated frame header", valid[..10].to_vec(), 400, "")
        .await;
    let mut not_json = 5u32.to_be_bytes().to_vec();
    not_json.extend_from_slice(b"nope!");
    not_json.extend_from_slice(&valid[30..]);
    h.refused("header that is not JSON", not_json, 400, "not valid JSON")
        .await;
    h.refused("unknown worker", good("ghost"), 404, "unknown worker ghost")
        .await;
    h.refused(
        "unknown tensor name",
        frame(
            "w1",
            &[
                RawTensor {
                    name: "w",
                    dtype: "BF16",
                    shape: &[4, 8],
                    data: bf16_bytes(&[0.0; 32]),
                },
                RawTensor {
                    name: "b",
                    dtype: "BF16",
                    shape: &[8],
                    data: bf16_bytes(&[0.0; 8]),
                },
                RawTensor {
                    name: "extra",
                    dtype: "BF16",
                    shape: &[1],
                    data: bf16_bytes(&[0.0]),
                },
            ],
        ),
        400,
        "unknown tensor name extra",
    )
    .await;
    h.refused(
        "missing tensor",
        frame(
            "w1",
            &[RawTensor {
                name: "w",
                dtype: "BF16",
                shape: &[4, 8],
                data: bf16_bytes(&[0.0; 32]),
            }],
        ),
        400,
        "missing tensors: b",
    )
    .await;
    h.refused(
        "wrong shape",
        with_w(
            "w1",
            RawTensor {
                name: "w",
                dtype: "BF16",
                shape: &[8, 4],
                data: bf16_bytes(&[0.0; 32]),
            },
        ),
        400,
        "shape [8, 4]",
    )
    .await;
    h.refused(
        "wrong dtype",
        with_w(
            "w1",
            RawTensor {
                name: "w",
                dtype: "F32",
                shape: &[4, 8],
                data: vec![0; 128],
            },
        ),
        400,
        "dtype F32, expected BF16",
    )
    .await;
    for (what, bits) in [("NaN", 0x7fc0u16), ("+Inf", 0x7f80), ("-Inf", 0xff80)] {
        let mut data = bf16_bytes(&[0.5; 32]);
        data[40..42].copy_from_slice(&bits.to_le_bytes());
        h.refused(
            what,
            with_w(
                "w1",
                RawTensor {
                    name: "w",
                    dtype: "BF16",
                    shape: &[4, 8],
                    data,
                },
            ),
            400,
            "w contains NaN or Inf",
        )
        .await;
    }
    h.refused(
        "body over the limit",
        with_w(
            "w1",
            RawTensor {
                name: "w",
                dtype: "BF16",
                shape: &[4, 8],
                data: vec![0; 5000],
            },
        ),
        413,
        "max_upload_bytes",
    )
    .await;
    let mut pickle = 18u32.to_be_bytes().to_vec();
    pickle.extend_from_slice(br#"{"worker_id":"w1"}"#);
    pickle.extend_from_slice(b"PK\x03\x04 torch.save archive");
    // Read as torch.save (absent fmt means pickle): a zip without its end record is malformed.
    h.refused("pickle payload (no fmt)", pickle, 400, "end record")
        .await;
    let mut zip = valid[..4 + u32::from_be_bytes(valid[..4].try_into().unwrap()) as usize].to_vec();
    zip.extend_from_slice(b"PK\x03\x04 torch.save archive");
    h.refused("zip payload claiming safetensors", zip, 415, "pickle")
        .await;

    // A second submission in the same round: w1's first one is folded and waits for w2.
    let first = {
        let http = h.http.clone();
        let url = h.url.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/submit_pseudograd"))
                .body(good("w1"))
                .send()
                .await
                .unwrap()
        })
    };
    for _ in 0..200 {
        if h.observe().await.pending == ["w1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        h.observe().await.pending,
        ["w1"],
        "w1's first upload is folded"
    );
    h.refused(
        "second submission in the same round",
        good("w1"),
        409,
        "already submitted in round 0",
    )
    .await;

    // After all that, a good round still closes, with exactly the two good uploads.
    let (status, _) = h.submit(good("w2")).await;
    assert_eq!(status, 200);
    assert_eq!(first.await.unwrap().status(), 200);
    let after = h.observe().await;
    assert_eq!(after.round, 1);
    // θ = θ0 − 0.7·(g + 0.9·g) with g the upload (both workers sent the same values).
    let theta = diloco_client::tensors::decode_safetensors(&after.params).unwrap();
    let w: Vec<f32> = Vec::try_from(&theta["w"].flatten(0, -1)).unwrap();
    // The layout is sorted by name: b (8 values) comes first, so w[0] started as initial[8].
    let expected = 0.25f32.mul_add(0.9, 0.25).mul_add(-0.7, initial[8]);
    assert_eq!(w[0].to_bits(), expected.to_bits(), "{} vs {expected}", w[0]);
}

/// A frame for `/init_params` whose safetensors header declares `declared` bytes of data but
/// carries 16.
fn claiming(declared: u64) -> Vec<u8> {
    let header = serde_json::json!({
        "w": {"dtype": "F32", "shape": [declared / 4], "data_offsets": [0, declared]}
    })
    .to_string();
    let mut blob = (header.len() as u64).to_le_bytes().to_vec();
    blob.extend_from_slice(header.as_bytes());
    blob.extend_from_slice(&[0; 16]);
    diloco_tests::frames::frame_with_blob("w0", &blob)
}

/// `/init_params` holds the size a header declares against `limits.max_upload_bytes` before
/// allocating anything, and allocates fallibly beyond: a header claiming 2^50 bytes is a 413,
/// the process stays up and uninitialized, and a real model is accepted afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn an_init_params_header_claiming_petabytes_is_refused_without_allocating() {
    let huge: u64 = 1 << 50;
    for (limits, needle) in [
        ("{}", "more than limits.max_upload_bytes"),
        // A limit above what the machine has: the allocation itself fails, cleanly.
        ("{max_upload_bytes: 4611686018427387904}", "cannot allocate"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = CoordinatorProcess::start(dir.path(), &format!("limits: {limits}\n"));
        let (http, url) = (diloco_tests::http_client(), coordinator.url.clone());
        let response = http
            .post(format!("{url}/init_params"))
            .body(claiming(huge))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{limits}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["kind"], "too_large");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{limits}: {body}"
        );
        let health = http.get(format!("{url}/health")).send().await.unwrap();
        assert_eq!(health.status(), 200, "the process is still up");
        let params = http
            .get(format!("{url}/global_params"))
            .send()
            .await
            .unwrap();
        assert_eq!(params.status(), 503, "still uninitialized");
        let model = frame(
            "w0",
            &[RawTensor {
                name: "w",
                dtype: "F32",
                shape: &[4],
                data: [1.0f32, 2.0, 3.0, 4.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            }],
        );
        let accepted = http
            .post(format!("{url}/init_params"))
            .body(model)
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 200);
    }
}
