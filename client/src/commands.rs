//! Commands an admin relays to workers through the coordinator (`/control/command`):
//! `save_checkpoint`, `save_and_stop`, `abort`. They ride heartbeat replies; the training loop
//! takes them with [`crate::DilocoWorker::next_command`], oldest first, as the Python SDK's
//! `next_command()` does.
//!
//! A command is never lost with a heartbeat reply: every heartbeat acknowledges the id of the
//! last command received ([`CommandInbox::ack`]), and the coordinator keeps re-sending a command
//! until its id comes back. A re-sent command is therefore seen again after a lost
//! acknowledgement; the inbox queues each id once.

use std::collections::VecDeque;

use diloco_contract::api::{HeartbeatReply, RelayedCommand};

/// Commands received and not yet taken, and what to acknowledge.
#[derive(Debug, Default)]
pub struct CommandInbox {
    /// The id of the last command received (0: none yet).
    last_id: u64,
    waiting: VecDeque<RelayedCommand>,
}

impl CommandInbox {
    /// What the next heartbeat acknowledges (`command_ack`).
    pub fn ack(&self) -> u64 {
        self.last_id
    }

    /// Takes in a heartbeat reply's command, if it has a new one; whether it did.
    pub fn receive(&mut self, reply: &HeartbeatReply) -> bool {
        let Some(command) = reply.command else {
            return false;
        };
        match reply.command_id {
            // Sent again because our acknowledgement had not arrived yet.
            Some(id) if id == self.last_id => return false,
            Some(id) => self.last_id = id,
            // A coordinator that does not number commands sends each one once.
            None => {}
        }
        self.waiting.push_back(command);
        true
    }

    /// The oldest command not yet taken.
    pub fn take(&mut self) -> Option<RelayedCommand> {
        self.waiting.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diloco_contract::api::ReplyStatus;

    fn reply(command: Option<RelayedCommand>, command_id: Option<u64>) -> HeartbeatReply {
        HeartbeatReply {
            status: ReplyStatus::Ok,
            sync_round: 0,
            num_workers: 1,
            num_registered: 1,
            command,
            command_id,
        }
    }

    /// The coordinator sends a command again until it sees it acknowledged; the worker acts on
    /// it once.
    #[test]
    fn a_command_sent_again_before_its_acknowledgement_arrived_is_taken_once() {
        let mut inbox = CommandInbox::default();
        assert_eq!(inbox.ack(), 0);
        assert!(inbox.receive(&reply(Some(RelayedCommand::SaveAndStop), Some(41))));
        assert_eq!(inbox.ack(), 41, "the next heartbeat acknowledges it");
        assert!(!inbox.receive(&reply(Some(RelayedCommand::SaveAndStop), Some(41))));
        assert_eq!(inbox.take(), Some(RelayedCommand::SaveAndStop));
        assert_eq!(inbox.take(), None);
    }

    /// Commands queue in order; one without an id (forgather's coordinator) is taken as new.
    #[test]
    fn new_commands_queue_oldest_first_and_unnumbered_ones_count_as_new() {
        let mut inbox = CommandInbox::default();
        assert!(!inbox.receive(&reply(None, None)));
        assert!(inbox.receive(&reply(Some(RelayedCommand::SaveCheckpoint), Some(7))));
        assert!(inbox.receive(&reply(Some(RelayedCommand::Abort), Some(9))));
        assert!(inbox.receive(&reply(Some(RelayedCommand::SaveCheckpoint), None)));
        assert_eq!(inbox.ack(), 9);
        assert_eq!(inbox.take(), Some(RelayedCommand::SaveCheckpoint));
        assert_eq!(inbox.take(), Some(RelayedCommand::Abort));
        assert_eq!(inbox.take(), Some(RelayedCommand::SaveCheckpoint));
        assert_eq!(inbox.take(), None);
    }
}
