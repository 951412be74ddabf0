//! The token stream split into train and validation, and random contiguous windows from it, as
//! nanoGPT's `get_batch`.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::rng::SplitMix64;
use crate::tokenizer::CharTokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    train: Vec<u32>,
    val: Vec<u32>,
}

/// A batch of windows: `inputs[i, t]` is followed by `targets[i, t]` in the text.
pub struct Batch {
    pub inputs: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
}

impl Dataset {
    /// `text` encoded with `tokenizer` and split as the config says (`data.val_fraction`, and
    /// windows of `model.context` tokens).
    pub fn from_text(
        text: &str,
        tokenizer: &CharTokenizer,
        config: &RunConfig,
    ) -> Result<Self, TrainError> {
        let tokens = tokenizer
            .encode(text)
            .map_err(|e| TrainError::Data(format!("the training text: {e}")))?;
        Self::split(&tokens, config.data.val_fraction, config.model.context)
    }

    /// The first `1 - val_fraction` of `tokens` is training data, the rest validation. Both
    /// must hold more than `context` tokens, so that a window and its shifted target fit.
    pub fn split(tokens: &[u32], val_fraction: f64, context: usize) -> Result<Self, TrainError> {
        let n_train = (tokens.len() as f64 * (1.0 - val_fraction)) as usize;
        let (train, val) = tokens.split_at(n_train);
        for (name, part) in [("training", train), ("validation", val)] {
            if part.len() <= context {
                return Err(TrainError::Data(format!(
                    "the {name} split has {} tokens but needs more than the context ({context}); \
                     use a longer text or a smaller model.context / data.val_fraction",
                    part.len()
                )));
            }
        }
        Ok(Self {
            train: train.to_vec(),
            val: val.to_vec(),
        })
    }

    pub fn tokens(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// `batch_size` windows of `context` tokens at uniformly drawn offsets.
    pub fn batch(
        &self,
        split: Split,
        batch_size: usize,
        context: usize,
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Batch {
        let data = self.tokens(split);
        let mut inputs = Vec::with_capacity(batch_size * context);
        let mut targets = Vec::with_capacity(batch_size * context);
        for _ in 0..batch_size {
            let start = rng.below(data.len() - context);
            inputs.extend(data[start..start + context].iter().map(|&t| t as i64));
            targets.extend(
                data[start + 1..start + 1 + context]
                    .iter()
                    .map(|&t| t as i64),
            );
        }
        let tensor =
            |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [batch_size, context]), device);
        Batch {
            inputs: tensor(inputs),
            targets: tensor(targets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_and_errors() {
        let tokens: Vec<u32> = (0..100).collect();
        let d = Dataset::split(&tokens, 0.1, 8).unwrap();
        assert_eq!(
            (d.tokens(Split::Train).len(), d.tokens(Split::Val).len()),
            (90, 10)
        );
        let err = Dataset::split(&tokens, 0.1, 10).unwrap_err();
        assert!(
            err.to_string().contains("validation split has 10 tokens"),
            "{err}"
        );
    }
}
