//! A round engine on a tiny CPU model (`bias` [2], `weight` [2, 3]: θ = 0, 1, …, 7) for the
//! engine's unit tests, with uploads driven the way `http/tensors.rs` drives them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diloco_contract::api::{
    CommandRequest, ControlRequest, RegisterRequest, RelayedCommand, StatusReply,
};
use futures_util::FutureExt;

use super::{Coordinator, EngineError, Published};
use crate::checkpoint::Loaded;
use crate::config::Config;
use crate::fold::StreamStore;
use crate::identity::Caller;
use crate::model::ModelLayout;
use crate::upload::{DataSink, Expectation, StagedUpload, UploadReceiver};
use crate::wire::dtype::{WireDtype, decode_into};
use crate::wire::frame::{FrameHeader, PayloadFormat, frame_prefix};
use crate::wire::safetensors::{encode, header_length};

/// An engine and the model it runs.
pub struct Run {
    pub engine: Arc<Coordinator>,
    pub config: Config,
    layout: ModelLayout,
}

/// The tiny model's layout.
fn layout() -> ModelLayout {
    ModelLayout::new(vec![
        ("weight".to_string(), vec![2, 3]),
        ("bias".to_string(), vec![2]),
    ])
    .expect("a valid layout")
}

/// A `/register` body for `worker_id` (the whole model).
pub fn registration(worker_id: &str) -> RegisterRequest {
    RegisterRequest {
        worker_id: worker_id.to_string(),
        ..RegisterRequest::default()
    }
}

/// A submit frame header from `worker_id`, computed from `round`.
pub fn frame(worker_id: &str, round: Option<u64>) -> FrameHeader {
    FrameHeader {
        worker_id: worker_id.to_string(),
        fragment_id: None,
        fmt: PayloadFormat::Safetensors,
        round,
    }
}

impl Run {
    /// An initialized engine without workers, its configuration changed by `configure`.
    pub fn new(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        configure(&mut config);
        let layout = layout();
        let initial = Self::upload_of(&layout, &initial_theta(&layout), WireDtype::Fp32);
        Self {
            engine: Coordinator::new(config.clone(), tch::Device::Cpu, None, Some(initial)),
            config,
            layout,
        }
    }

    /// An engine without parameters (the first `/init_params` defines them).
    pub fn uninitialized() -> Self {
        let config = Config::default();
        Self {
            engine: Coordinator::new(config.clone(), tch::Device::Cpu, None, None),
            config,
            layout: layout(),
        }
    }

    /// An engine resumed from `loaded`.
    pub fn resumed(config: Config, loaded: Loaded) -> Self {
        Self {
            engine: Coordinator::new(config.clone(), tch::Device::Cpu, Some(loaded), None),
            config,
            layout: layout(),
        }
    }

    /// An initialized engine with `workers` registered (by the worker token).
    pub fn with_workers(workers: &[&str]) -> Self {
        Self::with_settings(workers, |_| {})
    }

    /// [`Run::with_workers`] with the configuration changed by `configure`.
    pub fn with_settings(workers: &[&str], configure: impl FnOnce(&mut Config)) -> Self {
        let run = Self::new(configure);
        for id in workers {
            // Nothing to wait for: the parameters are published and no step runs.
            let registered = run
                .engine
                .register(registration(id), &Caller::worker_token())
                .now_or_never()
                .expect("registration does not wait");
            registered.expect("the worker registers");
        }
        run
    }

    /// θ before any step.
    pub fn initial_theta(&self) -> Vec<f32> {
        initial_theta(&self.layout)
    }

    /// The initial parameters as `/init_params` would receive them.
    pub fn initial_upload(&self) -> StagedUpload {
        Self::upload_of(&self.layout, &self.initial_theta(), WireDtype::Fp32)
    }

    fn upload_of(layout: &ModelLayout, values: &[f32], dtype: WireDtype) -> StagedUpload {
        let mut receiver = UploadReceiver::new(Expectation::InitialParameters, u64::MAX);
        let payload = encode(layout, values, dtype, &BTreeMap::new());
        receiver
            .push(Bytes::from(frame_prefix(&frame("init", None))))
            .and_then(|()| receiver.push(Bytes::from(payload)))
            .expect("valid initial parameters");
        receiver.finish().expect("complete initial parameters")
    }

    /// θ in a published encoding (the download dtype is fp32).
    pub fn theta_of(&self, published: &Published) -> Vec<f32> {
        let bytes = &published.encoded;
        let header = header_length(bytes).unwrap().unwrap();
        let mut theta = vec![0.0; self.layout.total_elements()];
        decode_into(&bytes[8 + header..], WireDtype::Fp32, &mut theta);
        theta
    }

    /// Queues `command` for `worker_id` as `/control/command` does.
    pub fn queue_command(&self, command: RelayedCommand, worker_id: &str) {
        let request = ControlRequest::Command(CommandRequest {
            command,
            worker_id: Some(worker_id.to_string()),
        });
        self.engine.control(request).expect("the command is queued");
    }

    /// Uploads a pseudo-gradient of `value` everywhere from `worker_id`, computed from
    /// `round`, through the same steps as an HTTP upload; the round it joined.
    pub fn submit(&self, worker_id: &str, round: u64, value: f32) -> Result<u64, EngineError> {
        let header = frame(worker_id, Some(round));
        let mut ticket = self
            .engine
            .begin_upload(&header, Some(&Caller::worker_token()))?;
        let mut receiver = UploadReceiver::awaiting_expectation(u64::MAX);
        receiver
            .push(Bytes::from(frame_prefix(&header)))
            .expect("a valid frame header");
        let sink = if ticket.streaming {
            DataSink::Stream
        } else {
            let buffer = self.engine.staging_buffer().now_or_never();
            DataSink::Stage(buffer.expect("a free staging buffer"))
        };
        receiver
            .set_expectation(ticket.expectation.clone(), sink)
            .expect("the expectation applies");
        let values = vec![value; self.layout.total_elements()];
        let payload = encode(
            &self.layout,
            &values,
            self.config.training.upload_dtype,
            &BTreeMap::new(),
        );
        receiver
            .push(Bytes::from(payload))
            .expect("a valid pseudo-gradient");
        if ticket.streaming {
            let (dtype, tensors) = receiver.plan_so_far().expect("the header was read");
            let mut store = StreamStore::new(tensors.to_vec(), dtype);
            for (offset, bytes) in receiver.take_validated() {
                self.engine
                    .store_streamed(&ticket, &mut store, offset, &bytes)?;
            }
        }
        let upload = receiver.finish().expect("a complete upload");
        let joined = self.engine.complete_upload(&mut ticket, &upload)?;
        Ok(joined.expect("no other upload streams in these tests"))
    }

    /// The parameters after `round` outer steps (at once if they exist).
    pub async fn wait_for_round(&self, round: u64) -> Arc<Published> {
        let after = round.checked_sub(1).expect("round 0 needs no waiting");
        self.engine
            .await_round_after(after, Duration::from_secs(10))
            .await
            .expect("the round closes")
    }

    /// `/status`.
    pub fn status(&self) -> StatusReply {
        self.engine.status()
    }
}

fn initial_theta(layout: &ModelLayout) -> Vec<f32> {
    (0..layout.total_elements()).map(|i| i as f32).collect()
}
