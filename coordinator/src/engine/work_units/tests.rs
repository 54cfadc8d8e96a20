//! The dispatch rules of reference §1.10 and §6 items 71-75, on the pure queues.

use super::*;

fn hint(length: u64) -> DatasetHint {
    DatasetHint {
        length,
        ..DatasetHint::default()
    }
}

fn unit(queues: &mut WorkQueues, worker: &str) -> Option<u64> {
    match queues.request(worker, "ds", 0).unwrap() {
        WorkRequestReply::Unit { unit_id } => Some(unit_id),
        WorkRequestReply::Exhausted { exhausted } => {
            assert!(exhausted);
            None
        }
    }
}

/// Registering returns K, again on a second registration; another seed is another queue; a
/// different length for the same queue is refused and changes nothing.
#[test]
fn registration_is_idempotent_per_seed_and_refuses_another_length() {
    let mut queues = WorkQueues::new(8);
    assert_eq!(queues.register("ds", 0, hint(100)), Ok(8));
    assert_eq!(queues.register("ds", 0, hint(100)), Ok(8));
    assert_eq!(queues.register("ds", 1, hint(100)), Ok(8));
    assert_eq!(queues.summaries().len(), 2);
    let before = queues.clone();
    assert!(matches!(
        queues.register("ds", 0, hint(99)),
        Err(WorkError::LengthMismatch {
            registered: 100,
            offered: 99,
            ..
        })
    ));
    assert_eq!(queues, before);
}

/// Units come in ascending order, interleaved workers never share one, and an exhausted
/// queue says so (every time).
#[test]
fn units_are_issued_once_in_ascending_order_then_exhausted() {
    let mut queues = WorkQueues::new(5);
    queues.register("ds", 0, hint(50)).unwrap();
    let mut seen = Vec::new();
    for i in 0..5 {
        let worker = if i % 2 == 0 { "a" } else { "b" };
        seen.push(unit(&mut queues, worker).unwrap());
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(unit(&mut queues, "a"), None);
    assert_eq!(unit(&mut queues, "c"), None);
    let detail = queues.detail("ds", 0).unwrap();
    assert_eq!(detail.summary.issued_count, 5);
    assert_eq!(detail.by_worker["a"].units_issued, 3);
    assert_eq!(detail.by_worker["b"].units_issued, 2);
    assert!(!detail.by_worker.contains_key("c"));
}

/// Requests and completions for a queue nobody registered are refused.
#[test]
fn an_unknown_queue_is_refused() {
    let mut queues = WorkQueues::new(4);
    assert!(matches!(
        queues.request("a", "nope", 0),
        Err(WorkError::NoQueue { .. })
    ));
    queues.register("ds", 0, hint(4)).unwrap();
    assert!(matches!(
        queues.request("a", "ds", 1),
        Err(WorkError::NoQueue { .. })
    ));
    assert!(matches!(
        queues.complete("a", "ds", 1, 0),
        Err(WorkError::NoQueue { .. })
    ));
}

/// Completion sets the bit once (a repeat is acknowledged and not counted twice); a unit past
/// the end is refused and changes nothing.
#[test]
fn completion_is_idempotent_and_bounded() {
    let mut queues = WorkQueues::new(10);
    queues.register("ds", 0, hint(10)).unwrap();
    let u = unit(&mut queues, "a").unwrap();
    queues.complete("a", "ds", 0, u).unwrap();
    queues.complete("a", "ds", 0, u).unwrap();
    let before = queues.clone();
    assert_eq!(
        queues.complete("a", "ds", 0, 10),
        Err(WorkError::UnitOutOfRange {
            unit_id: 10,
            total_units: 10
        })
    );
    assert_eq!(queues, before);
    let detail = queues.detail("ds", 0).unwrap();
    assert_eq!(detail.summary.completed_count, 1);
    assert_eq!(detail.by_worker["a"].units_completed, 1);
}

/// The bitmaps are K bits, least significant bit first in each byte, in base64: units 0, 1
/// and 9 of 12 are `0b0000_0011, 0b0000_0010` = "AwI=".
#[test]
fn bitmaps_are_lsb_first_base64() {
    let mut queues = WorkQueues::new(12);
    queues.register("ds", 0, hint(12)).unwrap();
    for _ in 0..2 {
        unit(&mut queues, "a");
    }
    queues.complete("a", "ds", 0, 9).unwrap();
    let detail = queues.detail("ds", 0).unwrap();
    assert_eq!(detail.issued_bitmap_b64, "AwI=");
    assert_eq!(detail.completed_bitmap_b64, "AAI=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
}

/// A unit completed without having been issued here (a checkpoint older than its issue) is
/// never handed out.
#[test]
fn a_completed_unit_is_not_issued_again() {
    let mut queues = WorkQueues::new(3);
    queues.register("ds", 0, hint(3)).unwrap();
    queues.complete("a", "ds", 0, 0).unwrap();
    assert_eq!(unit(&mut queues, "b"), Some(1));
    assert_eq!(unit(&mut queues, "b"), Some(2));
    assert_eq!(unit(&mut queues, "b"), None);
}

/// The first registrant's labels stay; a later registration's labels are ignored.
#[test]
fn the_first_registrants_labels_win() {
    let mut queues = WorkQueues::new(2);
    let first = DatasetHint {
        length: 7,
        path: Some("tiny".into()),
        data_files: Some(serde_json::json!(["a.txt"])),
        ..DatasetHint::default()
    };
    queues.register("ds", 0, first.clone()).unwrap();
    let second = DatasetHint {
        path: Some("other".into()),
        ..first.clone()
    };
    queues.register("ds", 0, second).unwrap();
    assert_eq!(queues.summaries()[0].hint, first);
}

/// Saved and restored, the queues issue exactly what they would have: nothing issued before
/// is issued again.
#[test]
fn queues_survive_a_save_and_restore() {
    let mut queues = WorkQueues::new(4);
    queues.register("ds", 0, hint(40)).unwrap();
    unit(&mut queues, "a");
    unit(&mut queues, "b");
    queues.complete("a", "ds", 0, 0).unwrap();
    let (mut restored, skipped) = WorkQueues::restore(4, queues.save());
    assert!(skipped.is_empty());
    assert_eq!(restored, queues);
    assert_eq!(unit(&mut restored, "a"), Some(2));
}

/// A saved queue whose bitmaps do not match its unit count is skipped, not trusted.
#[test]
fn a_damaged_saved_queue_is_skipped() {
    let mut queues = WorkQueues::new(16);
    queues.register("ds", 0, hint(16)).unwrap();
    let mut saved = queues.save();
    saved[0].issued.pop();
    let (restored, skipped) = WorkQueues::restore(16, saved);
    assert!(restored.summaries().is_empty());
    assert_eq!(skipped, vec!["ds|0".to_string()]);
}

/// Bad fields are refused: an empty or control-character dataset id, a zero length, an
/// oversized label; and the number of queues is bounded.
#[test]
fn bad_registrations_are_refused_and_queues_are_bounded() {
    let mut queues = WorkQueues::new(1);
    assert!(matches!(
        queues.register("", 0, hint(1)),
        Err(WorkError::Invalid(_))
    ));
    assert!(matches!(
        queues.register("a\nb", 0, hint(1)),
        Err(WorkError::Invalid(_))
    ));
    assert!(matches!(
        queues.register("ds", 0, hint(0)),
        Err(WorkError::Invalid(_))
    ));
    let huge = DatasetHint {
        length: 1,
        path: Some("x".repeat(MAX_LABEL_BYTES + 1)),
        ..DatasetHint::default()
    };
    assert!(matches!(
        queues.register("ds", 0, huge),
        Err(WorkError::Invalid(_))
    ));
    assert!(queues.summaries().is_empty());
    for seed in 0..MAX_QUEUES as i64 {
        queues.register("ds", seed, hint(1)).unwrap();
    }
    assert_eq!(
        queues.register("ds", -1, hint(1)),
        Err(WorkError::TooManyQueues)
    );
    assert_eq!(
        queues.register("ds", 0, hint(1)),
        Ok(1),
        "an existing queue still answers"
    );
}
