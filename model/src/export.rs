//! The weights as safetensors under nanoGPT's tensor names, both ways: an export loads into
//! nanoGPT's `GPT` with `strict=True` when the model has nanoGPT's architecture
//! (`tie_embeddings = true`, `head_bias = false`; Ember's default head is untied with a bias,
//! which nanoGPT's `GPT` cannot hold), and a nanoGPT state dict saved as safetensors loads into
//! Ember ([`from_safetensors`]).
//!
//! | Ember (Burn path)          | safetensors (nanoGPT)                 | layout            |
//! |----------------------------|---------------------------------------|-------------------|
//! | `wte.weight`, `wpe.weight` | `transformer.wte.weight`, `...wpe...` | `[rows, d]`       |
//! | `blocks.i.ln_1.gamma/beta` | `transformer.h.i.ln_1.weight/bias`    | `[d]`             |
//! | `blocks.i.attn.qkv`        | `transformer.h.i.attn.c_attn`         | weight `[3d, d]`  |
//! | `blocks.i.attn.proj`       | `transformer.h.i.attn.c_proj`         | weight `[d, d]`   |
//! | `blocks.i.ln_2`            | `transformer.h.i.ln_2`                |                   |
//! | `blocks.i.mlp.fc`          | `transformer.h.i.mlp.c_fc`            | weight `[4d, d]`  |
//! | `blocks.i.mlp.proj`        | `transformer.h.i.mlp.c_proj`          | weight `[d, 4d]`  |
//! | `ln_f`                     | `transformer.ln_f`                    |                   |
//! | `head`                     | `lm_head`                             | weight `[vocab, d]` |
//!
//! Linear weights are stored `[out, in]` as PyTorch's `nn.Linear` (Burn keeps `[in, out]`).
//! With tied embeddings `lm_head.weight` is written as a copy of `transformer.wte.weight`, as
//! nanoGPT's state dict holds it. All tensors are float32. The header's metadata holds
//! `ember_config` (the `GptConfig` as JSON).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{Gpt, GptConfig, ModelError, with_values};

/// Serializes `model` (whose shape is `config`) with `metadata` added to the header.
pub fn to_safetensors(
    model: &Gpt,
    config: &GptConfig,
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>, ModelError> {
    let mut tensors = named_tensors(model, &torch_name);
    if config.tie_embeddings {
        let wte = tensors
            .iter()
            .find(|(name, _, _)| name == "transformer.wte.weight")
            .cloned()
            .expect("every model has a token embedding");
        tensors.push(("lm_head.weight".into(), wte.1, wte.2));
    }
    let config_json = serde_json::to_string(config).expect("a GptConfig always serializes");
    metadata.insert("ember_config".into(), config_json);
    serialize(&tensors, metadata)
}

/// A tensor as a file holds it: name, shape, little-endian `f32` bytes.
pub(crate) type NamedTensor = (String, Vec<usize>, Vec<u8>);

/// Every parameter of `model` under the name `name_of` gives its Burn path, transposed where
/// it says so.
pub(crate) fn named_tensors(
    model: &Gpt,
    name_of: &dyn Fn(&str) -> (String, bool),
) -> Vec<NamedTensor> {
    let mut tensors = Vec::new();
    with_values(model, |param, data| {
        let (name, transpose) = name_of(&param.path);
        let mut values: Vec<f32> = data.iter::<f32>().collect();
        let mut shape = param.shape;
        if transpose {
            let [rows, cols] = shape[..] else {
                unreachable!("Linear weights are matrices")
            };
            values = (0..rows * cols)
                .map(|i| values[(i % rows) * cols + i / rows])
                .collect();
            shape = vec![cols, rows];
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, shape, bytes));
    });
    tensors
}

/// `tensors` as a safetensors file (`format: pt` in the header, as PyTorch's writers put it).
pub(crate) fn serialize(
    tensors: &[NamedTensor],
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>, ModelError> {
    metadata.insert("format".into(), "pt".into());
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Rebuilds a model from safetensors with nanoGPT's names on `device`; returns it with its config
/// and the header's metadata. The shape comes from the `ember_config` metadata of an Ember
/// export, or, for a nanoGPT state dict, from the tensors themselves; the head count, which no
/// tensor shows, then comes from `n_head` or the `n_head` metadata.
pub fn from_safetensors(
    bytes: &[u8],
    device: &Device,
    n_head: Option<usize>,
) -> Result<(Gpt, GptConfig, HashMap<String, String>), ModelError> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = SafeTensors::deserialize(bytes)?;
    let config = match metadata.get("ember_config") {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| ModelError::Metadata(format!("ember_config: {e}")))?,
        None => nanogpt_config(&tensors, &metadata, n_head)?,
    };
    if let Some((field, why)) = config.invalid() {
        return Err(ModelError::Shape {
            field: field.to_string(),
            why,
        });
    }
    let model = load(&config, &tensors, device, &torch_name)?;
    Ok((model, config, metadata))
}

/// The model of shape `config` with its parameters read from `tensors`, where `name_of` gives the
/// file's name of the parameter at a Burn path and whether it is stored transposed.
pub(crate) fn load(
    config: &GptConfig,
    tensors: &SafeTensors<'_>,
    device: &Device,
    name_of: &dyn Fn(&str) -> (String, bool),
) -> Result<Gpt, ModelError> {
    // The model is built before its tensors are read: a damaged shape (a width, a layer number
    // in a name) must not make it allocate much more than the file holds. Up to twice is let
    // through, so that a missing tensor is named by the loading below.
    let held: usize = tensors
        .tensors()
        .iter()
        .map(|(_, view)| view.shape().iter().product::<usize>())
        .sum();
    let dims = [
        config.vocab_size,
        config.d_model,
        config.n_layer,
        config.context,
    ];
    if dims.iter().any(|&n| n > held) || config.num_params() / 2 > held {
        return Err(ModelError::Tensor(format!(
            "the model's shape needs {} parameters but the file holds {held} values",
            config.num_params()
        )));
    }
    let mut load = Load {
        path: Vec::new(),
        tensors,
        name_of,
        error: None,
    };
    let model = config.init(device).map(&mut load);
    match load.error {
        Some(e) => Err(ModelError::Tensor(e)),
        None => Ok(model),
    }
}

/// The shape of a nanoGPT state dict, read from its tensors.
fn nanogpt_config(
    tensors: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    n_head: Option<usize>,
) -> Result<GptConfig, ModelError> {
    let shape = |name: &str| {
        tensors
            .tensor(name)
            .map(|t| t.shape().to_vec())
            .map_err(|_| {
                ModelError::Tensor(format!(
                    "no `{name}`: not a nanoGPT GPT state dict nor an Ember export"
                ))
            })
    };
    let (wte, wpe) = (
        shape("transformer.wte.weight")?,
        shape("transformer.wpe.weight")?,
    );
    let n_layer = tensors
        .names()
        .iter()
        .filter_map(|n| {
            n.strip_prefix("transformer.h.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |last| last + 1);
    let n_head = match n_head {
        Some(n) => n,
        None => metadata
            .get("n_head")
            .ok_or_else(|| {
                ModelError::Metadata(
                    "the head count is in no tensor's shape and not in the metadata: give it (--n-head)"
                        .into(),
                )
            })?
            .parse()
            .map_err(|e| ModelError::Metadata(format!("metadata n_head: {e}")))?,
    };
    let has = |name: &str| tensors.tensor(name).is_ok();
    // nanoGPT ties lm_head to wte and its state dict holds both: equal values mean tied.
    let tied = match (
        tensors.tensor("lm_head.weight"),
        tensors.tensor("transformer.wte.weight"),
    ) {
        (Ok(head), Ok(wte)) => head.data() == wte.data(),
        _ => true,
    };
    Ok(GptConfig::new(wte[0], wte[1], n_layer, n_head, wpe[0])
        .with_bias(has("transformer.h.0.attn.c_attn.bias"))
        .with_tie_embeddings(tied)
        .with_head_bias(has("lm_head.bias")))
}

/// nanoGPT's name for the parameter at Burn `path`, and whether it is a Linear weight (stored
/// transposed).
pub(crate) fn torch_name(burn: &str) -> (String, bool) {
    let linear_weight =
        burn.ends_with(".weight") && !burn.starts_with("wte") && !burn.starts_with("wpe");
    let name = burn
        .replacen("blocks.", "transformer.h.", 1)
        .replace("attn.qkv", "attn.c_attn")
        .replace("attn.proj", "attn.c_proj")
        .replace("mlp.fc", "mlp.c_fc")
        .replace("mlp.proj", "mlp.c_proj")
        .replace(".gamma", ".weight")
        .replace(".beta", ".bias");
    let name = match name.split_once('.') {
        Some(("head", rest)) => format!("lm_head.{rest}"),
        Some(("wte" | "wpe" | "ln_f", _)) => format!("transformer.{name}"),
        _ => name,
    };
    (name, linear_weight)
}

struct Load<'a> {
    path: Vec<String>,
    tensors: &'a SafeTensors<'a>,
    name_of: &'a dyn Fn(&str) -> (String, bool),
    error: Option<String>,
}

impl ModuleMapper for Load<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, transpose) = (self.name_of)(&self.path.join("."));
        let mut want = param.shape().dims::<D>().to_vec();
        if transpose {
            want.reverse();
        }
        let view = match self.tensors.tensor(&name) {
            Ok(view) if view.dtype() == Dtype::F32 && view.shape() == want.as_slice() => view,
            Ok(view) => {
                self.error.get_or_insert(format!(
                    "{name}: expected F32 {want:?}, found {:?} {:?}",
                    view.dtype(),
                    view.shape()
                ));
                return param;
            }
            Err(e) => {
                self.error.get_or_insert(format!("{name}: {e}"));
                return param;
            }
        };
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        param.map(|old| {
            let loaded = Tensor::<D>::from_data(TensorData::new(values, want), &old.device());
            if transpose {
                loaded.transpose()
            } else {
                loaded
            }
        })
    }
}
