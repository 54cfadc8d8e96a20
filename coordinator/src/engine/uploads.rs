//! Receiving pseudo-gradients: an upload is admitted ([`Coordinator::begin_upload`]) before
//! any tensor data is read, then either streamed into the accumulator as it arrives (the
//! round's first upload) or staged in a bounded buffer, and folded into the round once complete
//! and valid ([`Coordinator::complete_upload`]). Also the model's definition by the first
//! worker's parameters ([`Coordinator::initialize`]).

use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use super::{Coordinator, EngineError, Published, Shared, lock};
use crate::fold::StreamStore;
use crate::identity::Caller;
use crate::model::ModelLayout;
use crate::outer_state::OuterState;
use crate::staging::StagingBuffer;
use crate::upload::{Expectation, StagedUpload};
use crate::wire::frame::FrameHeader;

/// An upload in progress. Dropping it without [`Coordinator::complete_upload`] (a refused
/// or broken upload) frees the worker to try again.
pub struct UploadTicket {
    coordinator: Arc<Coordinator>,
    worker_id: String,
    /// The round it was started in.
    round: u64,
    /// It is the round's first upload and is stored into the accumulator as it arrives.
    pub streaming: bool,
    /// What the upload must contain.
    pub expectation: Expectation,
    finished: bool,
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        if !self.finished {
            let mut shared = lock(&self.coordinator.shared);
            shared.receiving.remove(&self.worker_id);
            if self.streaming && shared.stream_owner.as_deref() == Some(&self.worker_id) {
                self.coordinator.release_stream(&mut shared);
            }
        }
    }
}

impl Coordinator {
    /// Starts an upload from `worker_id`: refuses unknown workers, callers other than the one
    /// that registered it and second uploads in the same round before any tensor data is read.
    /// `caller` is `None` on a listener without authentication (a cleartext bulk plane), where
    /// nobody can be told apart.
    pub fn begin_upload(
        self: &Arc<Self>,
        frame: &FrameHeader,
        caller: Option<&Caller>,
    ) -> Result<UploadTicket, EngineError> {
        let worker_id = frame.worker_id.as_str();
        let mut shared = lock(&self.shared);
        let layout = shared.layout.clone().ok_or(EngineError::Uninitialized)?;
        let round = shared.round.number;
        check_round(frame, round)?;
        let worker = shared
            .roster
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| EngineError::UnknownWorker(worker_id.to_string()))?;
        if let Some(caller) = caller {
            caller.check_acts_for(worker_id, worker.owner.as_deref())?;
        }
        worker.touch(Instant::now());
        let required = worker.required.clone();
        if shared.round.contributed.contains(worker_id) {
            return Err(EngineError::AlreadySubmitted {
                worker_id: worker_id.to_string(),
                round,
            });
        }
        if !shared.receiving.insert(worker_id.to_string()) {
            return Err(EngineError::UploadInProgress(worker_id.to_string()));
        }
        // The round's first upload is stored as it arrives instead of being staged.
        let streaming = shared.round.contributed.is_empty() && shared.stream_owner.is_none();
        if streaming {
            shared.stream_owner = Some(worker_id.to_string());
            self.streaming.send_replace(true);
        }
        Ok(UploadTicket {
            coordinator: self.clone(),
            worker_id: worker_id.to_string(),
            round,
            streaming,
            expectation: Expectation::PseudoGradient {
                layout,
                dtype: self.config.training.upload_dtype,
                required,
            },
            finished: false,
        })
    }

    pub(super) fn reserve_staging(&self, layout: &ModelLayout) {
        let bytes = layout.total_elements() * self.config.training.upload_dtype.size();
        self.staging.reserve(bytes);
        info!(
            buffers = self.config.limits.staged_uploads,
            bytes, "receive buffers reserved"
        );
    }

    /// Waits for one of the `limits.staged_uploads` receive buffers.
    pub async fn staging_buffer(&self) -> StagingBuffer {
        self.staging.acquire().await
    }

    /// Waits until no upload is being streamed into the accumulator.
    pub async fn stream_finished(&self) {
        let mut receiver = self.streaming.subscribe();
        let _ = receiver.wait_for(|streaming| !*streaming).await;
    }

    pub(super) fn release_stream(&self, shared: &mut Shared) {
        shared.stream_owner = None;
        self.streaming.send_replace(false);
    }

    /// Stores the next validated piece of a streamed upload (the round's first) into the
    /// accumulator. Fails if the upload lost its place (its worker was evicted, the round
    /// moved on), after which nothing more of it is stored.
    pub fn store_streamed(
        &self,
        ticket: &UploadTicket,
        store: &mut StreamStore,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        let mut tensors = lock(&self.tensors);
        let state = tensors.as_mut().ok_or(EngineError::Uninitialized)?;
        {
            let shared = lock(&self.shared);
            if shared.stream_owner.as_deref() != Some(ticket.worker_id.as_str())
                || shared.round.number != ticket.round
            {
                return Err(EngineError::UploadOrphaned {
                    worker_id: ticket.worker_id.clone(),
                    round: ticket.round,
                });
            }
        }
        state.store_streamed(store, offset, bytes);
        Ok(())
    }

    /// Folds a complete upload into the round (blocking: run it off the async threads).
    /// Returns the round it joined. Closes the round if it was the last one needed.
    /// `None` when a streamed upload is still arriving: wait for [`Self::stream_finished`]
    /// and call again.
    pub fn complete_upload(
        &self,
        ticket: &mut UploadTicket,
        upload: &StagedUpload,
    ) -> Result<Option<u64>, EngineError> {
        let result = self.fold_and_maybe_close(ticket, upload);
        if !matches!(result, Ok(None)) {
            let mut shared = lock(&self.shared);
            shared.receiving.remove(&ticket.worker_id);
            if ticket.streaming && shared.stream_owner.as_deref() == Some(&ticket.worker_id) {
                self.release_stream(&mut shared);
            }
            ticket.finished = true;
        }
        result
    }

    fn fold_and_maybe_close(
        &self,
        ticket: &UploadTicket,
        upload: &StagedUpload,
    ) -> Result<Option<u64>, EngineError> {
        let worker_id = ticket.worker_id.as_str();
        let mut tensors = lock(&self.tensors);
        let state = tensors.as_mut().ok_or(EngineError::Uninitialized)?;
        let round = {
            let shared = lock(&self.shared);
            match (&shared.stream_owner, ticket.streaming) {
                (Some(owner), false) if owner != worker_id => return Ok(None),
                (owner, true) if owner.as_deref() != Some(worker_id) => {
                    return Err(EngineError::UploadOrphaned {
                        worker_id: worker_id.to_string(),
                        round: ticket.round,
                    });
                }
                _ => {}
            }
            // The round may have closed (sync timeout) while this upload was arriving.
            check_round(&upload.frame, shared.round.number)?;
            if !shared.roster.workers.contains_key(worker_id) {
                return Err(EngineError::UnknownWorker(worker_id.to_string()));
            }
            if shared.round.contributed.contains(worker_id) {
                return Err(EngineError::AlreadyFolded {
                    worker_id: worker_id.to_string(),
                    round: shared.round.number,
                });
            }
            shared.round.number
        };
        if ticket.streaming {
            state.count_streamed(&upload.tensors);
        } else {
            let started = Instant::now();
            state.fold(upload);
            self.metrics
                .fold_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.metrics.upload_bytes.inc_by(upload.data_len as u64);
        let ready = {
            let mut shared = lock(&self.shared);
            let now = Instant::now();
            shared.round.record_contribution(worker_id, now);
            if let Some(worker) = shared.roster.workers.get_mut(worker_id) {
                worker.last_sync_round = Some(round);
                worker.touch(now);
            }
            self.ready_to_close(&shared, now)
        };
        if ready {
            self.close_round(state)?;
        }
        Ok(Some(round))
    }

    /// Defines the model from the first worker's parameters. Blocking.
    pub fn initialize(&self, upload: StagedUpload) -> Result<Arc<Published>, EngineError> {
        let mut tensors = lock(&self.tensors);
        if tensors.is_some() {
            return Err(EngineError::AlreadyInitialized);
        }
        let layout = Arc::new(
            upload
                .layout
                .clone()
                .ok_or_else(|| EngineError::BadRequest("no tensors".into()))?,
        );
        let state = OuterState::from_upload(layout.clone(), &upload, self.device);
        drop(upload.data);
        self.reserve_staging(&layout);
        let round = {
            let mut shared = lock(&self.shared);
            shared.layout = Some(layout.clone());
            shared.round.number
        };
        self.publish(&state, round);
        info!(
            worker_id = %upload.frame.worker_id,
            parameters = layout.params().len(),
            elements = layout.total_elements(),
            "model initialized from a worker's parameters"
        );
        self.save_checkpoint(&state);
        *tensors = Some(state);
        self.current().ok_or(EngineError::Uninitialized)
    }
}

/// A pseudo-gradient computed from another round's parameters is refused (when the worker
/// says which round it used), never folded against parameters it does not belong to.
fn check_round(frame: &FrameHeader, round: u64) -> Result<(), EngineError> {
    match frame.round {
        Some(theirs) if theirs != round => Err(EngineError::StaleRound {
            theirs,
            ours: round,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Run, frame};
    use super::*;

    /// Uploads are admitted before their data is read: an unknown worker, a stale round and a
    /// second upload from the same worker are refused at the frame header.
    #[tokio::test]
    async fn uploads_are_refused_at_the_header_for_unknown_workers_stale_rounds_and_repeats() {
        let run = Run::with_workers(&["w0", "w1"]);
        let caller = Caller::worker_token();
        let refused = run
            .engine
            .begin_upload(&frame("ghost", Some(0)), Some(&caller));
        assert!(matches!(refused, Err(EngineError::UnknownWorker(_))));
        let stale = run
            .engine
            .begin_upload(&frame("w0", Some(5)), Some(&caller));
        assert!(matches!(
            stale,
            Err(EngineError::StaleRound { theirs: 5, ours: 0 })
        ));
        let first = run
            .engine
            .begin_upload(&frame("w0", Some(0)), Some(&caller));
        let first = first.unwrap();
        assert!(first.streaming, "the round's first upload streams");
        let second = run
            .engine
            .begin_upload(&frame("w0", Some(0)), Some(&caller));
        assert!(matches!(second, Err(EngineError::UploadInProgress(_))));
        let other = run
            .engine
            .begin_upload(&frame("w1", None), Some(&caller))
            .unwrap();
        assert!(!other.streaming, "later uploads are staged");
        drop(first);
        let retry = run
            .engine
            .begin_upload(&frame("w0", Some(0)), Some(&caller));
        assert!(
            retry.is_ok(),
            "a dropped ticket frees the worker to try again"
        );
    }

    /// Two workers' pseudo-gradients are averaged and the outer step (plain SGD, lr 1 here)
    /// moves θ by their mean; a worker that contributed may not upload again that round.
    #[tokio::test]
    async fn two_uploads_close_the_round_with_their_average() {
        let run = Run::with_settings(&["w0", "w1"], |config| {
            config.training.outer_optimizer.lr = 1.0;
            config.training.outer_optimizer.momentum = 0.0;
        });
        assert_eq!(run.submit("w0", 0, 0.5).unwrap(), 0);
        let again = run
            .engine
            .begin_upload(&frame("w0", Some(0)), Some(&Caller::worker_token()));
        assert!(matches!(
            again,
            Err(EngineError::AlreadySubmitted { round: 0, .. })
        ));
        assert_eq!(run.submit("w1", 0, 0.25).unwrap(), 0);
        let published = run.wait_for_round(1).await;
        let expected: Vec<f32> = run.initial_theta().iter().map(|t| t - 0.375).collect();
        assert_eq!(run.theta_of(&published), expected);
    }

    /// `/init_params` defines the model once.
    #[tokio::test]
    async fn the_model_is_initialized_once() {
        let run = Run::new(|_| {});
        let refused = run.engine.initialize(run.initial_upload());
        assert!(matches!(refused, Err(EngineError::AlreadyInitialized)));
        let empty = Run::uninitialized();
        assert!(!empty.engine.is_initialized());
        let published = empty.engine.initialize(empty.initial_upload()).unwrap();
        assert_eq!(published.round, 0);
        assert!(empty.engine.is_initialized());
    }
}
