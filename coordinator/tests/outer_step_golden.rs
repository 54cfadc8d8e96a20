//! The outer step is bit-identical to `torch.optim.SGD`: golden fixtures made by PyTorch
//! (`tests/fixtures/make_outer_step_fixtures.py`) replayed through the coordinator's own data
//! path — upload receiver, fold, average, fused step — for 50 rounds of 3 workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use diloco_coordinator::model::ModelLayout;
use diloco_coordinator::outer_optimizer::OuterOptimizer;
use diloco_coordinator::outer_state::OuterState;
use diloco_coordinator::upload::{Expectation, UploadReceiver};
use diloco_coordinator::wire::dtype::WireDtype;
use diloco_coordinator::wire::frame::{FrameHeader, PayloadFormat, encode_frame};
use diloco_coordinator::wire::safetensors::{header_length, parse_header};

struct Fixture {
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, (String, Vec<usize>, Vec<u8>)>,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let path = format!(
            "{}/tests/fixtures/{name}.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let blob = std::fs::read(&path).unwrap();
        let n = header_length(&blob).unwrap().unwrap();
        let header = parse_header(&blob[8..8 + n]).unwrap();
        let data = &blob[8 + n..];
        let tensors = header
            .tensors
            .into_iter()
            .map(|t| (t.name, (t.dtype, t.shape, data[t.data].to_vec())))
            .collect();
        Self {
            metadata: header.metadata,
            tensors,
        }
    }

    fn meta<T: std::str::FromStr>(&self, key: &str) -> T {
        self.metadata[key].parse().ok().unwrap()
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        let (dtype, _, bytes) = &self.tensors[name];
        assert_eq!(dtype, "F32", "{name}");
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// A safetensors blob of the given tensors, as a worker would send it.
fn safetensors_blob(tensors: &[(&str, &str, &[usize], &[u8])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let json = serde_json::Value::Object(header).to_string();
    let mut blob = (json.len() as u64).to_le_bytes().to_vec();
    blob.extend_from_slice(json.as_bytes());
    for (_, _, _, bytes) in tensors {
        blob.extend_from_slice(bytes);
    }
    blob
}

fn replay(name: &str) {
    let fixture = Fixture::load(name);
    let optimizer = OuterOptimizer {
        lr: fixture.meta("lr"),
        momentum: fixture.meta("momentum"),
        nesterov: fixture.meta("nesterov"),
    };
    let rounds: usize = fixture.meta("rounds");
    let workers: usize = fixture.meta("workers");
    let shapes: BTreeMap<String, Vec<usize>> =
        serde_json::from_str(&fixture.metadata["parameters"]).unwrap();
    let layout = Arc::new(ModelLayout::new(shapes.clone().into_iter().collect()).unwrap());
    let mut initial = vec![0f32; layout.total_elements()];
    for p in layout.params() {
        initial[p.range()].copy_from_slice(&fixture.f32s(&format!("init/{}", p.name)));
    }
    let upload_dtype = if fixture.tensors["round00/worker0/scale"].0 == "BF16" {
        WireDtype::Bf16
    } else {
        WireDtype::Fp32
    };
    let mut state = OuterState::new(layout.clone(), &initial, tch::Device::Cpu);

    for round in 0..rounds {
        for worker in 0..workers {
            let prefix = format!("round{round:02}/worker{worker}/");
            let sent: Vec<_> = fixture
                .tensors
                .iter()
                .filter_map(|(k, (dtype, shape, bytes))| {
                    k.strip_prefix(&prefix)
                        .map(|n| (n, dtype.as_str(), shape.as_slice(), bytes.as_slice()))
                })
                .collect();
            let frame = encode_frame(
                &FrameHeader {
                    worker_id: format!("w{worker}"),
                    fragment_id: None,
                    fmt: PayloadFormat::Safetensors,
                    round: None,
                },
                &safetensors_blob(&sent),
            );
            let frame_bytes = frame.len() as u64;
            let mut receiver = UploadReceiver::new(
                Expectation::PseudoGradient {
                    layout: layout.clone(),
                    dtype: upload_dtype,
                    required: Arc::new(Vec::new()),
                },
                frame_bytes,
            );
            // Odd chunk sizes: elements and headers straddle chunk boundaries.
            let mut rest = Bytes::from(frame);
            let mut size = 7 + round % 5;
            while !rest.is_empty() {
                let chunk = rest.split_to(size.min(rest.len()));
                receiver.push(chunk).unwrap();
                size = size * 3 % 1013 + 1;
            }
            state.fold(&receiver.finish().unwrap());
        }
        state.step(&optimizer).unwrap();
        state.with_theta_on_cpu(|theta| {
            for p in layout.params() {
                let expected = fixture.f32s(&format!("round{round:02}/theta/{}", p.name));
                for (i, (got, want)) in theta[p.range()].iter().zip(&expected).enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{name}: round {round}, {}[{i}]: ours {got:e}, torch {want:e}",
                        p.name
                    );
                }
            }
        });
    }
    state.with_momentum_on_cpu(|momentum, ready| {
        for (index, p) in layout.params().iter().enumerate() {
            let key = format!("momentum/{}", p.name);
            assert_eq!(
                ready[index],
                fixture.tensors.contains_key(&key),
                "{name}: {key}"
            );
            if ready[index] {
                let expected = fixture.f32s(&key);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&momentum[p.range()]), bits(&expected), "{name}: {key}");
            }
        }
    });
}

#[test]
fn nesterov_with_bf16_uploads_matches_torch_bit_for_bit() {
    replay("sgd_nesterov_bf16");
}

#[test]
fn classic_momentum_with_fp32_uploads_matches_torch_bit_for_bit() {
    replay("sgd_momentum_fp32");
}

#[test]
fn plain_sgd_matches_torch_bit_for_bit() {
    replay("sgd_plain_fp32");
}
