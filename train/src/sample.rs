//! Text generation from a model, token by token, without an autodiff graph, with a KV cache.
//!
//! The model has learned absolute positions, so a cache cannot slide: when the window is full,
//! generation restarts the cache from the last half-context of text (one prefill of
//! `context / 2` tokens every `context / 2` new tokens). The cost per token is thereby bounded,
//! whatever the length of the text, and within the first window the output equals that of a full
//! forward pass over the whole text (tested).

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData, s};
use ember_model::{Gpt, KvCache};

use crate::rng::SplitMix64;

/// How the next token is drawn from the model's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits; lower is more conservative. Must be positive.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to `top_p` (1 = all).
    pub top_p: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

/// Extends `prompt` (at least one token) by `n` tokens, calling `emit` with each as it is
/// drawn; only the first `vocab` tokens are drawn (the model's vocabulary may be padded beyond
/// the tokenizer's). Give it a model without autodiff (`model.valid()`).
#[allow(clippy::too_many_arguments)] // what to continue, how far, how to draw, and where
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    n: usize,
    config: SamplingConfig,
    vocab: usize,
    rng: &mut SplitMix64,
    device: &Device,
    mut emit: impl FnMut(u32),
) -> Vec<u32> {
    assert!(
        !prompt.is_empty(),
        "generation needs at least one prompt token"
    );
    let context = model.context();
    let mut tokens = prompt.to_vec();
    let mut cache = KvCache::new(model.blocks.len());
    let mut logits = prefill(
        model,
        &tokens[tokens.len().saturating_sub(context)..],
        &mut cache,
        device,
    );
    for i in 0..n {
        let next = draw(
            &probabilities(logits, vocab, config.temperature),
            config,
            rng,
        );
        emit(next);
        tokens.push(next);
        if i + 1 == n {
            break;
        }
        logits = if cache.len() == context {
            cache = KvCache::new(model.blocks.len());
            prefill(
                model,
                &tokens[tokens.len() - context.div_ceil(2)..],
                &mut cache,
                device,
            )
        } else {
            prefill(model, &[next], &mut cache, device)
        };
    }
    tokens
}

/// Runs `tokens` through the model after what `cache` holds; the logits of the last one.
fn prefill(model: &Gpt, tokens: &[u32], cache: &mut KvCache, device: &Device) -> Tensor<1> {
    let t = tokens.len();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(tokens.iter().map(|&t| t as i64).collect(), [1, t]),
        device,
    );
    model
        .forward_cached(input, cache)
        .slice(s![.., t - 1..t, ..])
        .flatten::<1>(0, 2)
}

/// The distribution over the first `vocab` tokens (a padded vocabulary's other rows are never
/// drawn).
fn probabilities(logits: Tensor<1>, vocab: usize, temperature: f64) -> Vec<f32> {
    softmax(logits.slice(s![..vocab]).div_scalar(temperature), 0)
        .into_data()
        .iter::<f32>()
        .collect()
}

/// Draws an index from `probs` after the top-k and top-p cuts of `config`.
pub fn draw(probs: &[f32], config: SamplingConfig, rng: &mut SplitMix64) -> u32 {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    let cut_k = config.top_k > 0 && config.top_k < probs.len();
    if cut_k || config.top_p < 1.0 {
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    }
    if cut_k {
        order.truncate(config.top_k);
    }
    if config.top_p < 1.0 {
        let total: f64 = order.iter().map(|&i| f64::from(probs[i])).sum();
        let mut cumulative = 0.0;
        let keep = order
            .iter()
            .position(|&i| {
                cumulative += f64::from(probs[i]) / total;
                cumulative >= config.top_p
            })
            .map_or(order.len(), |p| p + 1);
        order.truncate(keep);
    }
    let total: f64 = order.iter().map(|&i| f64::from(probs[i])).sum();
    let mut target = rng.unit_f64() * total;
    for &i in &order {
        target -= f64::from(probs[i]);
        if target < 0.0 {
            return i as u32;
        }
    }
    // Rounding left a sliver past the last bucket.
    *order.last().expect("a distribution has at least one token") as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(top_k: usize, top_p: f64) -> SamplingConfig {
        SamplingConfig {
            temperature: 1.0,
            top_k,
            top_p,
        }
    }

    #[test]
    fn draw_respects_top_k_top_p_and_frequencies() {
        let probs = [0.1f32, 0.6, 0.3];
        let mut rng = SplitMix64::new(3);
        let mut counts = [0usize; 3];
        (0..10_000).for_each(|_| counts[draw(&probs, cut(0, 1.0), &mut rng) as usize] += 1);
        assert!((5_700..6_300).contains(&counts[1]), "{counts:?}");
        assert!((0..1000).all(|_| draw(&probs, cut(1, 1.0), &mut rng) == 1));
        assert!((0..1000).all(|_| draw(&probs, cut(2, 1.0), &mut rng) != 0));
        assert!((0..1000).all(|_| draw(&probs, cut(0, 0.6), &mut rng) == 1));
        assert!((0..1000).all(|_| draw(&probs, cut(0, 0.85), &mut rng) != 0));
    }
}
