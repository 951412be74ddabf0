//! The GPT against its specification: shapes and sizes of every preset, causality, parity with
//! an independent f64 implementation, and that it learns.

mod common;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use common::{Randomize, cpu, values};
use ember_model::{Gpt, GptConfig};
use ember_train::config::{ConfigBuilder, PRESETS};
use ember_train::rng::SplitMix64;
use ember_train::tokenizer::Tokenizer;

fn tokens(rows: &[&[i64]]) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [b, t]), &cpu())
}

#[test]
fn presets_have_the_documented_shapes_and_sizes() {
    // Sizes with the 65-character Tiny Shakespeare vocabulary, as in the write-up.
    let expected = [
        ("tiny", 62_593),
        ("small", 421_697),
        ("medium", 3_209_281),
        ("large", 19_014_721),
    ];
    for ((name, params), (preset, _)) in expected.iter().zip(PRESETS) {
        assert_eq!(*name, preset);
        let config = ConfigBuilder::preset(name)
            .unwrap()
            .build()
            .unwrap()
            .model
            .gpt(65);
        assert_eq!(config.num_params(), *params, "{name}");
        let model = config.init(&cpu());
        assert_eq!(model.num_params(), *params, "{name}: model vs formula");
        let logits = model.forward(tokens(&[&[1, 2, 3], &[4, 5, 6]]));
        assert_eq!(logits.dims(), [2, 3, 65], "{name}");
    }
    // GPT-2's presets: OpenAI's sizes with the padded vocabulary (124,439,808 and 354,823,168
    // with its own 50,257), counted but not built here.
    for (name, params) in [("gpt2", 124_475_904), ("gpt2-medium", 354_871_296)] {
        let config = ConfigBuilder::preset(name).unwrap().build().unwrap();
        let vocab = config.model_vocab(&Tokenizer::Gpt2).unwrap();
        assert_eq!(config.model.gpt(vocab).num_params(), params, "{name}");
        let unpadded = config.model.gpt(50_257).num_params();
        assert_eq!(params - unpadded, 47 * config.model.d_model, "{name}");
    }
    // `bias` is the blocks' and the final LayerNorm's; the head's is `head_bias`.
    let no_bias = GptConfig::new(65, 64, 1, 4, 64).with_bias(false);
    assert_eq!(no_bias.init(&cpu()).num_params(), no_bias.num_params());
    assert_eq!(
        no_bias.num_params(),
        62_593 - (3 * 64 + 64 + 256 + 64) - 3 * 64
    );
    // nanoGPT's architecture: no head of its own (tied to wte), no head bias.
    let nanogpt = no_bias.with_tie_embeddings(true).with_head_bias(false);
    assert_eq!(nanogpt.init(&cpu()).num_params(), nanogpt.num_params());
    assert_eq!(
        nanogpt.num_params(),
        62_593 - (3 * 64 + 64 + 256 + 64) - 3 * 64 - 64 * 65 - 65
    );
}

#[test]
fn parameters_are_described_without_drawing_the_weights() {
    let model = GptConfig::new(65, 64, 2, 4, 64).init(&cpu());
    let _ = ember_model::parameters(&model);
    assert!(!model.wte.weight.is_initialized());
    common::parameters_are_described_without_initializing(&model);
}

#[test]
fn init_follows_gpt2() {
    let model = GptConfig::new(65, 64, 2, 4, 64).init(&cpu());
    let std = |v: Vec<f64>| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    let near = |got: f64, want: f64| (got - want).abs() < 0.1 * want;
    assert!(near(std(values(model.wte.weight.val())), 0.02));
    assert!(near(std(values(model.blocks[0].mlp.fc.weight.val())), 0.02));
    // Residual projections: 0.02 / sqrt(2 * n_layer).
    assert!(near(
        std(values(model.blocks[1].attn.proj.weight.val())),
        0.01
    ));
    assert!(
        values(model.blocks[0].attn.qkv.bias.as_ref().unwrap().val())
            .iter()
            .all(|&b| b == 0.0)
    );
}

#[test]
fn a_token_never_changes_the_logits_before_it() {
    let model = randomized(GptConfig::new(11, 16, 2, 2, 8), 0.3);
    let base: Vec<i64> = vec![1, 2, 3, 4, 5, 6, 7, 8];
    let logits = |seq: &[i64]| values(model.forward(tokens(&[seq])));
    let reference = logits(&base);
    for t in 0..base.len() {
        let mut changed = base.clone();
        changed[t] = 10;
        let out = logits(&changed);
        let per_pos = 11;
        let diff = |p: usize| {
            (0..per_pos)
                .map(|v| (out[p * per_pos + v] - reference[p * per_pos + v]).abs())
                .fold(0.0, f64::max)
        };
        for p in 0..t {
            assert_eq!(diff(p), 0.0, "changing token {t} moved the logits at {p}");
        }
        assert!(
            diff(t) > 1e-4,
            "changing token {t} did not change its own logits"
        );
    }
}

#[test]
fn logits_and_loss_match_an_independent_f64_reference() {
    // Ember's default architecture, and nanoGPT's (tied head without a bias).
    let nanogpt = GptConfig::new(13, 16, 2, 4, 8)
        .with_tie_embeddings(true)
        .with_head_bias(false);
    for config in [GptConfig::new(13, 16, 2, 4, 8), nanogpt] {
        check_against_reference(config);
    }
}

fn check_against_reference(config: GptConfig) {
    let model = randomized(config.clone(), 0.5);
    let input: [&[i64]; 2] = [&[0, 5, 12, 3, 3, 7, 1], &[9, 9, 2, 11, 4, 0, 6]];
    let target: [&[i64]; 2] = [&[5, 12, 3, 3, 7, 1, 8], &[9, 2, 11, 4, 0, 6, 10]];
    let got = values(model.forward(tokens(&input)));
    let got_loss = values(model.loss(tokens(&input), tokens(&target)))[0];
    let reference = reference::Gpt::from_model(&model, &config);
    let mut losses = Vec::new();
    for (b, (seq, tgt)) in input.iter().zip(target).enumerate() {
        let want = reference.forward(seq);
        for (t, row) in want.iter().enumerate() {
            for (v, w) in row.iter().enumerate() {
                let g = got[(b * seq.len() + t) * 13 + v];
                assert!(
                    (g - w).abs() < 1e-4,
                    "{config:?}: logit [{b},{t},{v}]: burn {g} reference {w}"
                );
            }
            losses.push(reference::nll(row, tgt[t] as usize));
        }
    }
    let want_loss = losses.iter().sum::<f64>() / losses.len() as f64;
    assert!(
        (got_loss - want_loss).abs() < 1e-4,
        "loss: burn {got_loss} reference {want_loss}"
    );
}

fn randomized(config: GptConfig, scale: f64) -> Gpt {
    config.init(&cpu()).map(&mut Randomize {
        rng: SplitMix64::new(42),
        scale,
    })
}

/// A plain-Rust f64 GPT, written from the nanoGPT definition, reading Burn's weights.
mod reference {
    use super::values;
    use ember_model::GptConfig;

    type Matrix = Vec<Vec<f64>>;

    struct Linear {
        w: Matrix,
        b: Vec<f64>,
    }
    struct Norm {
        g: Vec<f64>,
        b: Vec<f64>,
    }
    struct Block {
        ln_1: Norm,
        qkv: Linear,
        proj: Linear,
        ln_2: Norm,
        fc: Linear,
        fc_proj: Linear,
    }
    pub struct Gpt {
        wte: Matrix,
        wpe: Matrix,
        blocks: Vec<Block>,
        ln_f: Norm,
        head: Linear,
        n_head: usize,
    }

    fn rows(v: Vec<f64>, cols: usize) -> Matrix {
        v.chunks(cols).map(<[f64]>::to_vec).collect()
    }

    fn linear(l: &burn::nn::Linear) -> Linear {
        let w = l.weight.val();
        let cols = w.dims()[1];
        Linear {
            w: rows(values(w), cols),
            b: values(l.bias.as_ref().unwrap().val()),
        }
    }

    /// The head as a Linear: its own weight or the token embedding transposed, its bias or 0.
    fn head(h: &ember_model::Head, wte: &burn::tensor::Tensor<2>, c: &GptConfig) -> Linear {
        let w = h
            .weight
            .as_ref()
            .map_or_else(|| wte.clone().transpose(), |w| w.val());
        Linear {
            w: rows(values(w), c.vocab_size),
            b: h.bias
                .as_ref()
                .map_or_else(|| vec![0.0; c.vocab_size], |b| values(b.val())),
        }
    }

    fn norm(n: &burn::nn::LayerNorm) -> Norm {
        Norm {
            g: values(n.gamma.val()),
            b: values(n.beta.as_ref().unwrap().val()),
        }
    }

    impl Gpt {
        pub fn from_model(m: &ember_model::Gpt, c: &GptConfig) -> Self {
            Gpt {
                wte: rows(values(m.wte.weight.val()), c.d_model),
                wpe: rows(values(m.wpe.weight.val()), c.d_model),
                blocks: m
                    .blocks
                    .iter()
                    .map(|b| Block {
                        ln_1: norm(&b.ln_1),
                        qkv: linear(&b.attn.qkv),
                        proj: linear(&b.attn.proj),
                        ln_2: norm(&b.ln_2),
                        fc: linear(&b.mlp.fc),
                        fc_proj: linear(&b.mlp.proj),
                    })
                    .collect(),
                ln_f: norm(&m.ln_f),
                head: head(&m.head, &m.wte.weight.val(), c),
                n_head: c.n_head,
            }
        }

        /// Logits `[time][vocab]` of one sequence.
        pub fn forward(&self, tokens: &[i64]) -> Matrix {
            let mut x: Matrix = tokens
                .iter()
                .enumerate()
                .map(|(t, &tok)| {
                    self.wte[tok as usize]
                        .iter()
                        .zip(&self.wpe[t])
                        .map(|(a, b)| a + b)
                        .collect()
                })
                .collect();
            for b in &self.blocks {
                let y = self.attention(
                    b,
                    &x.iter().map(|r| layer_norm(r, &b.ln_1)).collect::<Vec<_>>(),
                );
                add(&mut x, &y);
                let h: Matrix = x
                    .iter()
                    .map(|r| {
                        let u: Vec<f64> = apply(&b.fc, &layer_norm(r, &b.ln_2))
                            .iter()
                            .map(|&v| gelu(v))
                            .collect();
                        apply(&b.fc_proj, &u)
                    })
                    .collect();
                add(&mut x, &h);
            }
            x.iter()
                .map(|r| apply(&self.head, &layer_norm(r, &self.ln_f)))
                .collect()
        }

        fn attention(&self, b: &Block, h: &Matrix) -> Matrix {
            let d = h[0].len();
            let hd = d / self.n_head;
            let qkv: Matrix = h.iter().map(|r| apply(&b.qkv, r)).collect();
            let mut out = vec![vec![0.0; d]; h.len()];
            for head in 0..self.n_head {
                let (q, k, v) = (head * hd, d + head * hd, 2 * d + head * hd);
                for i in 0..h.len() {
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..hd).map(|e| qkv[i][q + e] * qkv[j][k + e]).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = exp.iter().sum();
                    for (j, e) in exp.iter().enumerate() {
                        for c in 0..hd {
                            out[i][head * hd + c] += e / total * qkv[j][v + c];
                        }
                    }
                }
            }
            out.iter().map(|r| apply(&b.proj, r)).collect()
        }
    }

    fn apply(l: &Linear, x: &[f64]) -> Vec<f64> {
        (0..l.b.len())
            .map(|o| l.b[o] + x.iter().zip(&l.w).map(|(xi, row)| xi * row[o]).sum::<f64>())
            .collect()
    }

    fn layer_norm(x: &[f64], n: &Norm) -> Vec<f64> {
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        x.iter()
            .enumerate()
            .map(|(i, v)| (v - mean) / (var + 1e-5).sqrt() * n.g[i] + n.b[i])
            .collect()
    }

    fn gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    }

    fn add(x: &mut Matrix, y: &Matrix) {
        x.iter_mut()
            .zip(y)
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
    }

    /// Negative log-likelihood of `target` under `logits`.
    pub fn nll(logits: &[f64], target: usize) -> f64 {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        lse - logits[target]
    }
}

#[test]
fn the_kv_cache_gives_the_logits_of_a_full_pass() {
    let model = randomized(GptConfig::new(11, 16, 2, 2, 8), 0.3);
    let seq: [i64; 6] = [3, 1, 4, 1, 5, 9];
    let full = values(model.forward(tokens(&[&seq])));
    let mut cache = ember_model::KvCache::new(2);
    let mut incremental = values(model.forward_cached(tokens(&[&seq[..2]]), &mut cache));
    for &t in &seq[2..] {
        incremental.extend(values(model.forward_cached(tokens(&[&[t]]), &mut cache)));
    }
    assert_eq!(cache.len(), 6);
    for (i, (a, b)) in full.iter().zip(&incremental).enumerate() {
        assert!((a - b).abs() < 1e-5, "logit {i}: full {a} cached {b}");
    }
}

#[test]
fn cached_generation_matches_the_full_forward_within_the_window() {
    use ember_train::sample::{SamplingConfig, draw, generate};
    let model = randomized(GptConfig::new(11, 16, 2, 2, 8), 0.3);
    let config = SamplingConfig {
        temperature: 0.8,
        top_k: 0,
        top_p: 1.0,
    };
    let got = generate(
        &model,
        &[2, 7],
        6,
        config,
        11,
        &mut SplitMix64::new(5),
        &cpu(),
        |_| {},
    );
    // The same draws from full forward passes over the whole text.
    let mut rng = SplitMix64::new(5);
    let mut want: Vec<u32> = vec![2, 7];
    for _ in 0..6 {
        let seq: Vec<i64> = want.iter().map(|&t| t as i64).collect();
        let logits = values(model.forward(tokens(&[&seq])));
        let last: Vec<f64> = logits[(seq.len() - 1) * 11..]
            .iter()
            .map(|l| l / 0.8)
            .collect();
        let max = last.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = last.iter().map(|l| (l - max).exp()).sum();
        let probs: Vec<f32> = last
            .iter()
            .map(|l| ((l - max).exp() / total) as f32)
            .collect();
        want.push(draw(&probs, config, &mut rng));
    }
    assert_eq!(got, want);
    // Past the window the cache restarts from the last half-context instead of growing.
    let long = generate(
        &model,
        &[2],
        30,
        config,
        11,
        &mut SplitMix64::new(5),
        &cpu(),
        |_| {},
    );
    assert_eq!(long.len(), 31);
    // With a vocabulary padded beyond the tokenizer's (7 of 11 rows real), the padded rows are
    // never drawn, however likely the model makes them.
    let padded = generate(
        &model,
        &[2],
        200,
        config,
        7,
        &mut SplitMix64::new(9),
        &cpu(),
        |_| {},
    );
    assert!(padded.iter().all(|&t| t < 7), "{padded:?}");
}
