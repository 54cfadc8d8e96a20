//! Work-unit dispatch for callers ([`super::work_units`] keeps the queues): any authenticated
//! caller may use it, as in forgather, but a caller bound to a certificate name may only act
//! as a worker id under that name. A worker need not be registered to take units (its data
//! loader may start before its trainer registers); the queues outlive worker departures and
//! are saved with every checkpoint.

use diloco_contract::api::{
    DatasetRegisterReply, DatasetRegisterRequest, WorkCompleteReply, WorkCompleteRequest,
    WorkQueueDetail, WorkQueueSummary, WorkRequest, WorkRequestReply, valid_worker_id,
};
use tracing::info;

use super::{Coordinator, EngineError, lock};
use crate::identity::Caller;

/// Refuses a malformed worker id or one outside the caller's certificate name.
fn check_worker(caller: &Caller, worker_id: &str) -> Result<(), EngineError> {
    if !valid_worker_id(worker_id) {
        return Err(EngineError::BadRequest(
            "worker_id must be 1-253 characters of letters, digits and - _ . : @".into(),
        ));
    }
    caller.check_worker_id(worker_id)?;
    Ok(())
}

impl Coordinator {
    /// `/datasets/register`: creates the queue if new; answers its unit count.
    pub fn register_dataset(
        &self,
        request: DatasetRegisterRequest,
        caller: &Caller,
    ) -> Result<DatasetRegisterReply, EngineError> {
        check_worker(caller, &request.worker_id)?;
        let total_units =
            lock(&self.work).register(&request.dataset_id, request.shuffle_seed, request.hint)?;
        info!(
            worker_id = %request.worker_id,
            dataset_id = %request.dataset_id,
            shuffle_seed = request.shuffle_seed,
            total_units,
            "dataset registered"
        );
        Ok(DatasetRegisterReply { total_units })
    }

    /// `/work/request`: the next unit, or `exhausted`.
    pub fn request_unit(
        &self,
        request: &WorkRequest,
        caller: &Caller,
    ) -> Result<WorkRequestReply, EngineError> {
        check_worker(caller, &request.worker_id)?;
        let reply = lock(&self.work).request(
            &request.worker_id,
            &request.dataset_id,
            request.shuffle_seed,
        )?;
        if let WorkRequestReply::Unit { unit_id } = reply {
            tracing::debug!(worker_id = %request.worker_id, unit_id, "work unit issued");
        }
        Ok(reply)
    }

    /// `/work/complete`: records a trained unit (idempotent).
    pub fn complete_unit(
        &self,
        request: &WorkCompleteRequest,
        caller: &Caller,
    ) -> Result<WorkCompleteReply, EngineError> {
        check_worker(caller, &request.worker_id)?;
        lock(&self.work).complete(
            &request.worker_id,
            &request.dataset_id,
            request.shuffle_seed,
            request.unit_id,
        )?;
        Ok(WorkCompleteReply { ack: true })
    }

    /// `/work/queues`.
    pub fn work_queues(&self) -> Vec<WorkQueueSummary> {
        lock(&self.work).summaries()
    }

    /// `/work/queue`.
    pub fn work_queue(
        &self,
        dataset_id: &str,
        shuffle_seed: i64,
    ) -> Result<WorkQueueDetail, EngineError> {
        Ok(lock(&self.work).detail(dataset_id, shuffle_seed)?)
    }
}

#[cfg(test)]
mod tests {
    use diloco_contract::api::DatasetHint;

    use super::super::test_support::Run;
    use super::*;
    use crate::checkpoint;
    use crate::identity::Role;

    fn register(run: &Run) {
        let request = DatasetRegisterRequest {
            worker_id: "w0".into(),
            dataset_id: "ds".into(),
            shuffle_seed: 3,
            hint: DatasetHint {
                length: 100,
                ..DatasetHint::default()
            },
        };
        run.engine
            .register_dataset(request, &Caller::worker_token())
            .unwrap();
    }

    fn take(run: &Run) -> WorkRequestReply {
        let request = WorkRequest {
            worker_id: "w0".into(),
            dataset_id: "ds".into(),
            shuffle_seed: 3,
        };
        run.engine
            .request_unit(&request, &Caller::worker_token())
            .unwrap()
    }

    /// Units issued before a checkpoint are not issued again by the coordinator restarted
    /// from it.
    #[tokio::test]
    async fn a_restart_continues_the_queue_where_the_checkpoint_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::with_settings(&["w0"], |config| {
            config.checkpoint.dir = Some(dir.path().to_path_buf());
        });
        register(&run);
        assert_eq!(take(&run), WorkRequestReply::Unit { unit_id: 0 });
        assert_eq!(take(&run), WorkRequestReply::Unit { unit_id: 1 });
        assert!(run.engine.checkpoint_now().is_some());
        let loaded = checkpoint::load_latest(dir.path()).unwrap().unwrap();
        let restarted = Run::resumed(run.config.clone(), loaded);
        assert_eq!(take(&restarted), WorkRequestReply::Unit { unit_id: 2 });
        assert_eq!(restarted.engine.work_queues()[0].issued_count, 3);
    }

    /// A certificate-bound caller may not take units in another site's name, and a bad worker
    /// id is refused before any queue changes.
    #[tokio::test]
    async fn callers_act_only_in_their_own_name() {
        let run = Run::with_workers(&["w0"]);
        register(&run);
        let other = WorkRequest {
            worker_id: "site-b.0".into(),
            dataset_id: "ds".into(),
            shuffle_seed: 3,
        };
        let refused = run
            .engine
            .request_unit(&other, &Caller::certificate("site-a", Role::Worker));
        assert!(
            matches!(refused, Err(EngineError::Forbidden(_))),
            "{refused:?}"
        );
        let bad = WorkRequest {
            worker_id: String::new(),
            ..other
        };
        let refused = run.engine.request_unit(&bad, &Caller::worker_token());
        assert!(
            matches!(refused, Err(EngineError::BadRequest(_))),
            "{refused:?}"
        );
        assert_eq!(run.engine.work_queues()[0].issued_count, 0);
    }
}
