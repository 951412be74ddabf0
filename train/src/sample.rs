//! Text generation from a model, token by token, without an autodiff graph.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData, s};
use ember_model::Gpt;

use crate::rng::SplitMix64;

/// How the next token is drawn from the model's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits; lower is more conservative. Must be positive.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (0 = all).
    pub top_k: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
        }
    }
}

/// Extends `prompt` by `n` tokens, calling `emit` with each as it is drawn. The model sees at most
/// its context window; give it a model without autodiff (`model.valid()`).
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    n: usize,
    config: SamplingConfig,
    rng: &mut SplitMix64,
    device: &Device,
    mut emit: impl FnMut(u32),
) -> Vec<u32> {
    let mut tokens = prompt.to_vec();
    let context = model.context();
    for _ in 0..n {
        let window = &tokens[tokens.len().saturating_sub(context)..];
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(
                window.iter().map(|&t| t as i64).collect(),
                [1, window.len()],
            ),
            device,
        );
        let t = window.len();
        let logits = model
            .forward(input)
            .slice(s![.., t - 1..t, ..])
            .flatten::<1>(0, 2);
        let probs = softmax(logits.div_scalar(config.temperature), 0)
            .into_data()
            .iter::<f32>()
            .collect::<Vec<f32>>();
        let next = draw(&probs, config.top_k, rng);
        emit(next);
        tokens.push(next);
    }
    tokens
}

/// Draws an index from `probs`, restricted to the `top_k` largest when `top_k > 0`.
pub fn draw(probs: &[f32], top_k: usize, rng: &mut SplitMix64) -> u32 {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    if top_k > 0 && top_k < probs.len() {
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        order.truncate(top_k);
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

    #[test]
    fn draw_respects_top_k_and_frequencies() {
        let probs = [0.1f32, 0.6, 0.3];
        let mut rng = SplitMix64::new(3);
        let mut counts = [0usize; 3];
        (0..10_000).for_each(|_| counts[draw(&probs, 0, &mut rng) as usize] += 1);
        assert!((5_700..6_300).contains(&counts[1]), "{counts:?}");
        assert!((0..1000).all(|_| draw(&probs, 1, &mut rng) == 1));
        assert!((0..1000).all(|_| draw(&probs, 2, &mut rng) != 0));
    }
}
