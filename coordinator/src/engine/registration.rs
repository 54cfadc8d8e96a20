//! Who is in the run: registration, heartbeats (and the commands they relay), deregistration,
//! eviction and kicks. A worker registered by one identity is that identity's
//! ([`crate::identity`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use diloco_contract::api::{
    HeartbeatReply, HeartbeatRequest, RegisterRequest, ReplyStatus, valid_worker_id,
};
use jiff::Timestamp;
use serde_json::json;
use tracing::{info, warn};

use super::roster::Worker;
use super::{Coordinator, EngineError, Published, lock};
use crate::audit::{AuditRecord, bounded};
use crate::identity::Caller;
use crate::model::ModelLayout;

/// Why a worker left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// It called `/deregister`.
    Deregistered,
    /// No heartbeat within the timeout.
    Evicted,
    /// `/control/kick_worker`.
    Kicked,
}

impl Departure {
    /// The `reason` of its `eviction` audit record.
    fn reason(self) -> &'static str {
        match self {
            Departure::Evicted => "heartbeat_timeout",
            Departure::Deregistered => "deregister",
            Departure::Kicked => "kick",
        }
    }
}

impl Coordinator {
    /// Registers a worker for `caller` (who then owns it) and returns the parameters it starts
    /// from. A registration during an outer step waits for the step, so a joiner never starts
    /// from parameters about to change.
    pub async fn register(
        &self,
        request: RegisterRequest,
        caller: &Caller,
    ) -> Result<Arc<Published>, EngineError> {
        if !valid_worker_id(&request.worker_id) {
            return Err(EngineError::BadRequest(
                "worker_id must be 1-253 characters of letters, digits and - _ . : @".into(),
            ));
        }
        caller.check_worker_id(&request.worker_id)?;
        if request.group.is_some() {
            return Err(EngineError::BadRequest(
                "pipeline-parallel groups are not supported yet: register each rank without `group`"
                    .into(),
            ));
        }
        let wait_for = {
            let mut shared = lock(&self.shared);
            let layout = shared.layout.clone().ok_or(EngineError::Uninitialized)?;
            let required = match &request.param_shapes {
                None => (0..layout.params().len()).collect(),
                Some(shapes) => slice_of(&layout, shapes)?,
            };
            let id = request.worker_id.clone();
            if let Some(existing) = shared.roster.workers.get(&id) {
                caller.check_acts_for(&id, existing.owner.as_deref())?;
                if !existing.restored {
                    return Err(EngineError::AlreadyRegistered {
                        worker_id: id,
                        heartbeat_timeout_seconds: self.config.training.heartbeat_timeout_seconds,
                    });
                }
            } else if shared.roster.workers.len() >= self.config.limits.max_workers {
                return Err(EngineError::TooManyWorkers(self.config.limits.max_workers));
            }
            let mut worker = Worker::new(Arc::new(required), Instant::now());
            worker.hostname = request.hostname;
            worker.output_dir = request.output_dir;
            worker.extra = request.extra;
            worker.owner = Some(caller.identity().to_string());
            shared.roster.insert(&id, worker);
            if shared
                .round
                .open_to_joiners(self.config.training.min_workers)
            {
                shared.round.participants.insert(id.clone());
            }
            shared.num_workers = shared.num_workers.max(shared.roster.workers.len());
            info!(worker_id = %id, round = shared.round.number, workers = shared.roster.workers.len(), "worker registered");
            self.update_gauges(&shared);
            shared.closing.then_some(shared.round.number)
        };
        match wait_for {
            Some(round) => self.await_round_after(round, self.sync_timeout()).await,
            None => self.latest().await,
        }
    }

    /// Records a heartbeat from `caller` and relays the worker's pending command, if any.
    ///
    /// A worker that acknowledges commands (`command_ack`) gets its command in every reply
    /// until it acknowledges that command's id: a reply lost on the way cannot lose the
    /// command, and a newer command queued meanwhile is not cleared by the older one's
    /// acknowledgement. A worker that does not (forgather's) gets it once.
    pub fn heartbeat(
        &self,
        request: HeartbeatRequest,
        caller: &Caller,
    ) -> Result<HeartbeatReply, EngineError> {
        let mut shared = lock(&self.shared);
        let registered = shared.roster.workers.len();
        let (round, num_workers) = (shared.round.number, shared.num_workers);
        let worker = shared
            .roster
            .workers
            .get_mut(&request.worker_id)
            .ok_or_else(|| EngineError::UnknownWorker(request.worker_id.clone()))?;
        caller.check_acts_for(&request.worker_id, worker.owner.as_deref())?;
        worker.touch(Instant::now());
        worker.last_heartbeat = Timestamp::now();
        if let Some(sps) = request.steps_per_second.filter(|v| v.is_finite()) {
            worker.steps_per_second = Some(sps);
        }
        if let Some(stats) = &request.stats {
            worker.record_stats(stats);
        }
        if let Some(sync_state) = &request.sync_state {
            worker.record_sync_state(sync_state);
        }
        let relayed = match request.command_ack {
            None => worker.command.take(),
            Some(ack) => {
                if worker.command.is_some_and(|pending| pending.id == ack) {
                    worker.command = None;
                }
                worker.command
            }
        };
        if request.stats.is_some() {
            self.record_run_stats(&mut shared, &request.worker_id);
        }
        Ok(HeartbeatReply {
            status: ReplyStatus::Ok,
            sync_round: round,
            num_workers,
            num_registered: registered,
            command: relayed.map(|pending| pending.command),
            command_id: relayed.map(|pending| pending.id),
        })
    }

    /// Workers registered right now.
    pub fn num_registered(&self) -> usize {
        lock(&self.shared).roster.workers.len()
    }

    /// Removes a worker for `caller`, its owner or an admin (a no-op for unknown ids, as in
    /// forgather).
    pub fn deregister(
        self: &Arc<Self>,
        worker_id: &str,
        caller: &Caller,
    ) -> Result<(), EngineError> {
        // forgather records every deregistration, even of an unknown id, and the death path
        // then records the `eviction` of a worker that was registered. A caller refused (403)
        // is recorded as `forbidden` by the HTTP layer instead, so it is checked first (and
        // again, under the same lock as the removal, by `remove_worker`).
        if let Some(worker) = lock(&self.shared).roster.workers.get(worker_id) {
            caller.check_may_remove(worker_id, worker.owner.as_deref())?;
        }
        self.audit(
            AuditRecord::new("deregister")
                // Any id is answered (forgather's), so a client-chosen one is cut to size.
                .worker(bounded(worker_id))
                .caller(Some(caller.identity().to_string())),
        );
        let removed = self.remove_worker(worker_id, Departure::Deregistered, Some(caller))?;
        if removed {
            self.close_round_if_ready_in_background();
        }
        Ok(())
    }

    /// The death path shared by deregistration, eviction and kicks. Returns whether the
    /// worker was registered. With `caller`, it must be allowed to remove the worker (checked
    /// under the same lock as the removal).
    pub(super) fn remove_worker(
        &self,
        worker_id: &str,
        why: Departure,
        caller: Option<&Caller>,
    ) -> Result<bool, EngineError> {
        let mut shared = lock(&self.shared);
        if let (Some(caller), Some(worker)) = (caller, shared.roster.workers.get(worker_id)) {
            caller.check_may_remove(worker_id, worker.owner.as_deref())?;
        }
        if !shared.roster.remove(worker_id) {
            return Ok(false);
        }
        shared.round.forget(worker_id);
        if shared.stream_owner.as_deref() == Some(worker_id) {
            self.release_stream(&mut shared);
        }
        shared.total_worker_deaths += 1;
        shared.num_workers = shared
            .roster
            .workers
            .len()
            .max(self.config.training.min_workers);
        let round = shared.round.number;
        // forgather's `eviction` record (the death path's, whatever triggered it).
        self.audit(
            AuditRecord::new("eviction")
                .worker(worker_id)
                .round(round)
                .caller(caller.map(|c| c.identity().to_string()))
                .details(json!({
                    "trigger_worker_id": worker_id,
                    "evicted": [worker_id],
                    "group_id": null,
                    "remaining": shared.roster.workers.len(),
                    "reason": why.reason(),
                })),
        );
        if why == Departure::Evicted {
            self.metrics.evictions.inc();
            warn!(
                worker_id,
                timeout_seconds = self.config.training.heartbeat_timeout_seconds,
                "worker evicted: no heartbeat"
            );
        } else {
            info!(worker_id, reason = ?why, "worker left");
        }
        self.update_gauges(&shared);
        Ok(true)
    }

    /// Periodic work: evict silent workers, close rounds whose sync timeout passed.
    pub fn tick(self: &Arc<Self>) {
        let stale = lock(&self.shared)
            .roster
            .stale(self.heartbeat_timeout(), Instant::now());
        for worker_id in stale {
            // Without a caller nothing is checked, so this cannot fail.
            let _ = self.remove_worker(&worker_id, Departure::Evicted, None);
        }
        self.close_round_if_ready_in_background();
    }
}

/// A worker's declared slice, checked against the model (forgather's slice fingerprint).
fn slice_of(
    layout: &ModelLayout,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Vec<usize>, EngineError> {
    let mut slice = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let index = layout
            .index_of(name)
            .ok_or_else(|| EngineError::SliceMismatch(format!("unknown parameter {name}")))?;
        let expected = &layout.params()[index].shape;
        if expected != shape {
            return Err(EngineError::SliceMismatch(format!(
                "{name} has shape {shape:?}, the model's is {expected:?}"
            )));
        }
        slice.push(index);
    }
    Ok(slice)
}

#[cfg(test)]
mod tests {
    use diloco_contract::api::RelayedCommand;

    use super::super::test_support::{Run, registration};
    use super::*;
    use crate::identity::Role;

    /// A registered worker starts from the round's parameters; a second registration of a
    /// live worker is refused, and so is a worker id outside a certificate's common name.
    #[tokio::test]
    async fn a_worker_registers_once_and_only_under_its_certificate_name() {
        let run = Run::new(|_| {});
        let start = run
            .engine
            .register(registration("w0"), &Caller::worker_token())
            .await
            .unwrap();
        assert_eq!(start.round, 0);
        assert_eq!(run.theta_of(&start), run.initial_theta());
        let again = run
            .engine
            .register(registration("w0"), &Caller::worker_token())
            .await;
        assert!(
            matches!(again, Err(EngineError::AlreadyRegistered { .. })),
            "{again:?}"
        );
        let outsider = run
            .engine
            .register(
                registration("site-b.0"),
                &Caller::certificate("site-a", Role::Worker),
            )
            .await;
        assert!(
            matches!(outsider, Err(EngineError::Forbidden(_))),
            "{outsider:?}"
        );
    }

    /// A slice naming a parameter the model lacks, or with another shape, is refused.
    #[tokio::test]
    async fn a_slice_must_match_the_model() {
        let run = Run::new(|_| {});
        let mut wrong = registration("w0");
        wrong.param_shapes = Some(BTreeMap::from([("bias".to_string(), vec![3])]));
        let refused = run.engine.register(wrong, &Caller::worker_token()).await;
        assert!(
            matches!(&refused, Err(EngineError::SliceMismatch(m)) if m.contains("bias has shape [3]")),
            "{refused:?}"
        );
        let mut unknown = registration("w1");
        unknown.param_shapes = Some(BTreeMap::from([("nope".to_string(), vec![1])]));
        let refused = run.engine.register(unknown, &Caller::worker_token()).await;
        assert!(
            matches!(refused, Err(EngineError::SliceMismatch(_))),
            "{refused:?}"
        );
    }

    fn beat(worker_id: &str, command_ack: Option<u64>) -> HeartbeatRequest {
        HeartbeatRequest {
            worker_id: worker_id.into(),
            command_ack,
            ..HeartbeatRequest::default()
        }
    }

    /// The reply of a heartbeat carrying a command may be lost: the command comes again with
    /// every heartbeat until the worker acknowledges its id, and only then is it cleared.
    #[tokio::test]
    async fn a_relayed_command_is_sent_until_acknowledged() {
        let run = Run::with_workers(&["w0"]);
        let caller = Caller::worker_token();
        run.queue_command(RelayedCommand::SaveAndStop, "w0");
        let first = run.engine.heartbeat(beat("w0", Some(0)), &caller).unwrap();
        assert_eq!(first.command, Some(RelayedCommand::SaveAndStop));
        let id = first.command_id.unwrap();
        // That reply never arrived: the worker still acknowledges what it had before.
        let again = run.engine.heartbeat(beat("w0", Some(0)), &caller).unwrap();
        assert_eq!((again.command, again.command_id), (first.command, Some(id)));
        let acknowledged = run.engine.heartbeat(beat("w0", Some(id)), &caller).unwrap();
        assert_eq!(
            (acknowledged.command, acknowledged.command_id),
            (None, None)
        );
        let later = run.engine.heartbeat(beat("w0", Some(id)), &caller).unwrap();
        assert_eq!(later.command, None);
    }

    /// An acknowledgement of an older command does not clear a newer one queued meanwhile,
    /// and ids only grow.
    #[tokio::test]
    async fn acknowledging_an_older_command_keeps_the_newer_one() {
        let run = Run::with_workers(&["w0"]);
        let caller = Caller::worker_token();
        run.queue_command(RelayedCommand::SaveCheckpoint, "w0");
        let old = run.engine.heartbeat(beat("w0", Some(0)), &caller).unwrap();
        run.queue_command(RelayedCommand::Abort, "w0");
        let new = run
            .engine
            .heartbeat(beat("w0", old.command_id), &caller)
            .unwrap();
        assert_eq!(new.command, Some(RelayedCommand::Abort));
        assert!(new.command_id > old.command_id);
    }

    /// forgather's workers send no acknowledgement: they get each command once, as before.
    #[tokio::test]
    async fn a_worker_without_acknowledgements_gets_a_command_once() {
        let run = Run::with_workers(&["w0"]);
        let caller = Caller::worker_token();
        run.queue_command(RelayedCommand::Abort, "w0");
        let first = run.engine.heartbeat(beat("w0", None), &caller).unwrap();
        assert_eq!(first.command, Some(RelayedCommand::Abort));
        let second = run.engine.heartbeat(beat("w0", None), &caller).unwrap();
        assert_eq!(second.command, None);
    }

    /// Heartbeats are refused for unknown workers and for callers that do not own the worker.
    #[tokio::test]
    async fn only_the_owner_of_a_registered_worker_may_beat_for_it() {
        let run = Run::with_workers(&["w0"]);
        assert!(matches!(
            run.engine.heartbeat(beat("ghost", None), &Caller::worker_token()),
            Err(EngineError::UnknownWorker(id)) if id == "ghost"
        ));
        assert!(matches!(
            run.engine
                .heartbeat(beat("w0", None), &Caller::admin_token()),
            Err(EngineError::Forbidden(_))
        ));
    }

    /// A departure frees the id: after `/deregister` and after a heartbeat eviction the same
    /// id registers again (forgather's item 43), while distinct ids coexist and a live one is
    /// still refused.
    #[tokio::test]
    async fn an_id_registers_again_after_deregister_and_after_eviction() {
        let run = Run::with_settings(&["w0", "w1"], |c| {
            c.training.heartbeat_timeout_seconds = 1;
        });
        let worker = Caller::worker_token();
        assert!(
            run.engine
                .register(registration("w1"), &worker)
                .await
                .is_err()
        );
        run.engine.deregister("w0", &worker).unwrap();
        assert_eq!(run.engine.num_registered(), 1);
        run.engine
            .register(registration("w0"), &worker)
            .await
            .unwrap();
        assert_eq!(run.engine.num_registered(), 2, "w0 again, beside w1");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        run.engine.tick();
        assert_eq!(run.engine.num_registered(), 0, "both evicted");
        for id in ["w1", "w0"] {
            run.engine
                .register(registration(id), &worker)
                .await
                .unwrap();
        }
        assert_eq!(run.status().num_registered, 2);
        assert_eq!(run.status().total_worker_deaths, Some(3));
    }

    /// Deregistering the only missing worker releases the round's barrier; its departure is
    /// counted.
    #[tokio::test]
    async fn a_round_waiting_for_a_worker_closes_when_it_deregisters() {
        let run = Run::with_workers(&["w0", "w1"]);
        run.submit("w0", 0, 0.5).unwrap();
        assert_eq!(run.status().sync_round, 0, "w1 is missing");
        run.engine
            .deregister("w1", &Caller::worker_token())
            .unwrap();
        run.wait_for_round(1).await;
        let status = run.status();
        assert_eq!(status.num_registered, 1);
        assert_eq!(status.total_worker_deaths, Some(1));
    }
}
