//! How much memory a run will need, worked out from its config before anything is allocated,
//! so that a model that cannot fit is refused with numbers instead of being killed by the
//! kernel half-way through its first step.
//!
//! The terms follow what a CPU training step holds at its peak (f32 everywhere):
//! - per parameter, 16 bytes: the weight, its gradient and AdamW's two moments (a checkpoint adds
//!   none: its records are written from the weights' and moments' own buffers, BENCHMARKS.md);
//!   with gradient accumulation 4 more, the sum beside the micro-batch's gradient;
//! - the activations the backward pass needs, per block: the block input, both LayerNorm outputs
//!   and their statistics, `qkv` (3d), the attention output, the MLP's hidden layer before and
//!   after GELU (4d each), i.e. `16d + 4` floats per token, and each query's log-sum-exp of its
//!   attention scores (`n_head` per token: the fused attention recomputes the probabilities in
//!   its backward pass rather than keep `n_head x T x T` per sequence); then the final LayerNorm
//!   and the head's input gradient (`3d + 2` per token): the fused head and loss scores the
//!   logits a chunk of rows at a time (one chunk, 8 MiB at small vocabularies, which becomes its
//!   own gradient) and keeps no logits for backward; `batch_size` is the micro-batch's, since
//!   micro-batches run one after the other;
//! - with dropout, its masks and the attention probabilities, which the attention then keeps;
//! - the data in memory (a text's tokens, about 8 bytes each with the text and its encoding
//!   while the run starts; token files are mapped and only the windows drawn are read) and the
//!   runtime (code,
//!   thread stacks, allocator arenas: 18 MiB measured on the tiny preset).
//!
//! - with ranks training together, each holds the activations of its share of the rows, and
//!   the all-reduce's bucket and its copy (2 x 32 MiB, `crate::cluster`).
//!
//! Evaluation runs the same batch size without autodiff and needs less than a training step.
//! BENCHMARKS.md compares the estimate with the measured peak RSS of every preset.

use ember_kernels::ops::head_loss::kernel::chunk_rows;

use crate::config::RunConfig;
use crate::sys::mib;

const F32: f64 = 4.0;
const RUNTIME_BYTES: f64 = 18.0 * 1024.0 * 1024.0;
const BYTES_PER_TOKEN: f64 = 8.0;
const BYTES_PER_PARAM: f64 = 16.0;

/// The estimate, term by term, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    pub terms: Vec<(String, f64)>,
}

impl Footprint {
    /// What training `config` with a vocabulary of `vocab_size` on `tokens` tokens held in
    /// memory needs, in each of `ranks` processes training together (1: alone).
    pub fn estimate(config: &RunConfig, vocab_size: usize, tokens: usize, ranks: usize) -> Self {
        let m = &config.model;
        let params = m.gpt(vocab_size).num_params();
        let rows_here = config.train.batch_size.div_ceil(ranks);
        let (b, t) = (rows_here as f64, m.context as f64);
        let (d, h, v) = (m.d_model as f64, m.n_head as f64, vocab_size as f64);
        let mut per_block = b * t * (16.0 * d + 4.0 + h);
        let mut embeddings = 0.0;
        if m.dropout > 0.0 {
            // The masks of both residual branches, and the composed attention's probabilities:
            // the scores, their softmax, its mask and the dropped-out result, `h x T x T` each.
            per_block += b * t * 2.0 * d + 4.0 * b * h * t * t;
            embeddings = b * t * d;
        }
        let rows = b * t;
        let chunk = rows.min(chunk_rows(vocab_size) as f64) * v;
        let head = rows * (3.0 * d + 2.0) + chunk;
        // With accumulation, the gradients summed so far sit beside the next micro-batch's.
        let bytes_per_param = BYTES_PER_PARAM
            + if config.train.grad_accum > 1 {
                F32
            } else {
                0.0
            };
        let mut footprint = Self {
            terms: vec![
                (
                    "activations".to_string(),
                    F32 * (m.n_layer as f64 * per_block + embeddings + head),
                ),
                (
                    format!("{params} parameters"),
                    bytes_per_param * params as f64,
                ),
                (
                    "data+runtime".to_string(),
                    RUNTIME_BYTES + BYTES_PER_TOKEN * tokens as f64,
                ),
            ],
        };
        if ranks > 1 {
            let buffers = 2.0 * F32 * (params.min(crate::cluster::BUCKET_FLOATS)) as f64;
            footprint.terms.push(("all-reduce".to_string(), buffers));
        }
        footprint
    }

    pub fn total(&self) -> f64 {
        self.terms.iter().map(|(_, bytes)| bytes).sum()
    }

    /// The largest term, what to shrink first.
    pub fn biggest(&self) -> (&str, f64) {
        self.terms
            .iter()
            .map(|(name, bytes)| (name.as_str(), *bytes))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("there are terms")
    }

    /// `297.6 MiB (activations 148.7 MiB, 3209281 parameters 122.4 MiB, data+runtime 26.5 MiB)`.
    pub fn describe(&self) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|(name, bytes)| format!("{name} {}", mib(*bytes as u64)))
            .collect();
        format!("{} ({})", mib(self.total() as u64), terms.join(", "))
    }

    /// Why a run of this size cannot start with `available` bytes free, or `None` if it fits.
    pub fn refusal(&self, available: u64) -> Option<String> {
        if self.total() <= available as f64 {
            return None;
        }
        let (name, bytes) = self.biggest();
        Some(format!(
            "this run needs about {} of memory but {} is available; the biggest part is {name} ({}). \
Make the model or the batch smaller (model.d_model, model.n_layer, model.context, train.batch_size), \
or pass --skip-memory-check to try anyway",
            mib(self.total() as u64),
            mib(available),
            mib(bytes as u64)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigBuilder;

    fn preset(name: &str, sets: &[&str]) -> RunConfig {
        sets.iter()
            .try_fold(ConfigBuilder::preset(name).unwrap(), |b, s| {
                b.set(s, "test")
            })
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn the_small_preset_is_estimated_term_by_term() {
        let f = Footprint::estimate(&preset("small", &[]), 65, 1_115_394, 1);
        assert_eq!(
            f.terms[1],
            ("421697 parameters".to_string(), 16.0 * 421_697.0)
        );
        // Per block: 32 x 64 tokens x (16 x 128 + 4 + 4 heads' log-sum-exps) floats.
        let blocks = 2.0 * (2048.0 * 2056.0);
        assert_eq!(
            f.terms[0].1,
            4.0 * (blocks + 2048.0 * (3.0 * 128.0 + 2.0) + 2048.0 * 65.0)
        );
        assert!(f.refusal(1 << 40).is_none());
        // Each of 2 ranks holds half the rows' activations, and the all-reduce's buffers.
        let two = Footprint::estimate(&preset("small", &[]), 65, 1_115_394, 2);
        assert_eq!(two.terms[1], f.terms[1]);
        assert!(two.terms[0].1 < 0.6 * f.terms[0].1);
        assert_eq!(two.terms[3], ("all-reduce".to_string(), 8.0 * 421_697.0));
    }

    #[test]
    fn a_model_that_cannot_fit_is_refused_with_its_biggest_term() {
        let huge = preset(
            "small",
            &["model.d_model=16384", "model.n_layer=64", "model.n_head=16"],
        );
        let f = Footprint::estimate(&huge, 65, 1_115_394, 1);
        assert!(f.total() > 3e12, "{}", f.describe());
        let why = f.refusal(16 << 30).unwrap();
        assert!(why.contains("16.0 GiB is available"), "{why}");
        assert!(
            why.contains("the biggest part is 206175273025 parameters"),
            "{why}"
        );
        assert!(why.contains("--skip-memory-check"), "{why}");
    }
}
