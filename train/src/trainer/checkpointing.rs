//! Saving the run's state as a checkpoint, and the way back to the last good one when the loss
//! diverges.

use std::path::{Path, PathBuf};

use super::Trainer;
use crate::checkpoint::CheckpointState;
use crate::cluster;
use crate::error::TrainError;

impl Trainer {
    /// Completes a [`TrainError::NonFinite`] with the way back: the last good checkpoint
    /// (`saved`, the newest this run wrote, or the one it resumed from) and the command that
    /// continues from it with half the learning rate.
    pub(super) fn with_recovery(&self, error: TrainError, saved: Option<&Path>) -> TrainError {
        let TrainError::NonFinite {
            step, what, value, ..
        } = error
        else {
            return error;
        };
        let lr = self.config.train.lr / 2.0;
        let recovery = match saved.or(self.resumed_from.as_deref()) {
            Some(checkpoint) => format!(
                "The last good checkpoint is {0}; continue from it with a lower learning rate: train --resume {0} --change-optimizer --set train.lr={lr:e}",
                checkpoint.display()
            ),
            None => format!(
                "No checkpoint was saved before it; start again with a lower learning rate (--set train.lr={lr:e}) or check the data"
            ),
        };
        TrainError::NonFinite {
            step,
            what,
            value,
            recovery,
        }
    }

    /// Writes a checkpoint of the model after `step` updates, on rank 0 (`None` on the others),
    /// once every rank has shown that its weights are still rank 0's.
    pub(super) fn save_checkpoint(
        &self,
        step: usize,
        train_time_s: f64,
    ) -> Result<Option<PathBuf>, TrainError> {
        if self.cluster.size() > 1 {
            cluster::check_agreement(
                &*self.cluster,
                cluster::weights_checksum(self.model()),
                &format!("the weights after step {step}"),
                "the ranks' updates diverged (a different build or library on some node?); \
                 resume from the last checkpoint with every rank running the same binary",
            )?;
        }
        if !self.cluster.is_root() {
            return Ok(None);
        }
        let state = CheckpointState {
            ranks: self.cluster.size(),
            ..CheckpointState::new(step, train_time_s, self.changes.clone())
        };
        self.checkpoints
            .save(
                self.model(),
                &self.optim,
                &state,
                &self.config,
                &self.tokenizer,
            )
            .map(Some)
    }
}
