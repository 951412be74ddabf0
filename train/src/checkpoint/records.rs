//! The model and optimizer records of a checkpoint: the model's written ([`write_model`]), and
//! both decoded into a model and an optimizer, with every assumption Burn's loaders make checked
//! first.
//!
//! Burn 0.22.1 returns an error for some damaged records and panics on others (see
//! `docs/burn-upstream.md` for minimal inputs):
//! - a float tensor stored with an integer dtype panics in burn-tensor (`Expected float dtype,
//!   got U32`) while the model record is applied;
//! - an optimizer state whose `__rank` is above 8 panics in burn-optim (`Unsupported tensor rank
//!   for optimizer state: 9`), and a tensor without a parameter id panics too;
//! - an optimizer state with a moment missing, or a `__rank` of another type, is silently dropped:
//!   the parameter's AdamW moments start again from zero and the run is no longer the one saved.
//!
//! So before Burn sees a record, [`check_model_record`] and [`check_optimizer_record`] compare it
//! with the model it will be loaded into: every tensor a parameter of that model, of the
//! parameter's float dtype and shape, with as many bytes as that takes, and for the optimizer,
//! complete AdamW state (both moments, the rank, the step count) for every parameter or for none.
//! The checksum manifest already stops damaged files in normal use; these checks keep the promise
//! of an error rather than a panic for every other way a record arrives. A panic that still
//! comes out of Burn's loaders is turned into the same kind of error ([`crate::guard::without_panic`]), as a
//! last guard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::{AllocationProperty, Bytes, DType, Device};
use burn_pack::{Reader, Scalar};
use ember_model::{Gpt, GptConfig, Parameter, parameters, with_readers};

use crate::guard::without_panic;

use crate::TrainError;
use crate::config::TrainSection;
use crate::optim::adamw;

/// Writes the record of `model` to `path`: the file Burn's `model.into_record().save(path)`
/// writes, byte for byte (a test holds it to that), each parameter read from the model's own
/// buffer when the writer reaches it ([`ember_kernels::ops::snapshot`], no copy). Burn's record
/// copies every weight first, element by element, and holds that copy of the model while it
/// writes.
pub fn write_model(model: &Gpt, path: &Path) -> Result<(), burn_pack::Error> {
    let mut tensors = Vec::new();
    with_readers(model, |param, read| {
        let bytes = param.byte_len();
        tensors.push(burn_pack::Tensor::deferred(
            param.path,
            param.dtype,
            param.shape,
            Some(param.id.val()),
            bytes,
            move || Ok(read().into_bytes()),
        ));
    });
    burn_pack::Writer::new(tensors).write_to_file(path)
}

/// The model a checkpoint's `model.bpk` holds, for the architecture `gpt`, on `device`.
/// `dir` names the checkpoint in the error.
pub fn decode_model(
    gpt: &GptConfig,
    bytes: Vec<u8>,
    device: &Device,
    dir: &Path,
) -> Result<Gpt, TrainError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        TrainError::Checkpoint(format!("{}: model.bpk: {e}", dir.display()))
    };
    let model = gpt.init(device);
    let bytes = record_bytes(bytes);
    check_model_record(bytes.clone(), &parameters(&model)).map_err(|e| unreadable(&e))?;
    without_panic("the record", || {
        ModuleRecord::from_bytes(bytes)
            .and_then(|record| model.try_load_record(record))
            .map_err(|e| e.to_string())
    })
    .map_err(|e| unreadable(&e))
}

/// The optimizer a checkpoint's `optimizer.bpk` holds for `model` (decoded from the same
/// checkpoint: the optimizer's state is keyed by the model's parameter ids), configured by
/// `train`; `dir` names the checkpoint in the error.
pub fn decode_optimizer(
    train: &TrainSection,
    bytes: Vec<u8>,
    model: &Gpt,
    dir: &Path,
) -> Result<ModuleOptimizer, TrainError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        TrainError::Checkpoint(format!("{}: optimizer.bpk: {e}", dir.display()))
    };
    let bytes = record_bytes(bytes);
    check_optimizer_record(bytes.clone(), &parameters(model)).map_err(|e| unreadable(&e))?;
    without_panic("the record", || {
        adamw(train).from_bytes(bytes).map_err(|e| e.to_string())
    })
    .map_err(|e| unreadable(&e))
}

/// A record file's bytes as Burn reads them, shared so that the check and the loader read the one
/// buffer, and not copied: Burn's `Bytes::from_bytes_vec` copies a `Vec<u8>` into a buffer of its
/// own alignment first (at GPT-2 124M the 1.4 GB of a checkpoint, which put a resumed run's peak
/// RSS at 2.4 times a fresh one's), though its loaders copy every tensor out of it anyway.
fn record_bytes(bytes: Vec<u8>) -> Bytes {
    Bytes::from_shared(bytes::Bytes::from(bytes), AllocationProperty::Native)
}

/// A tensor of a record as the container describes it.
struct Described {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    param_id: Option<u64>,
    bytes: usize,
}

/// What a burnpack record holds, as its container describes it: the tensors (without reading
/// their data), the scalars and the string metadata.
struct Contents {
    tensors: Vec<Described>,
    scalars: BTreeMap<String, Scalar>,
    metadata: BTreeMap<String, String>,
}

fn describe(bytes: Bytes) -> Result<Contents, String> {
    let reader = Reader::from_bytes(bytes).map_err(|e| e.to_string())?;
    let (scalars, metadata) = (reader.scalars().clone(), reader.metadata().clone());
    let tensors = reader
        .into_tensors()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| Described {
            bytes: t.byte_len(),
            name: t.name,
            dtype: t.dtype,
            shape: t.shape.to_vec(),
            param_id: t.param_id,
        })
        .collect();
    Ok(Contents {
        tensors,
        scalars,
        metadata,
    })
}

/// That `tensor` can stand for `param`: the same float dtype and shape, and the bytes they take.
fn check_tensor(tensor: &Described, param: &Parameter) -> Result<(), String> {
    let name = &tensor.name;
    if tensor.dtype != param.dtype {
        return Err(format!(
            "tensor `{name}` is {:?} but the parameter {} is {:?}",
            tensor.dtype, param.path, param.dtype
        ));
    }
    if tensor.shape != param.shape {
        return Err(format!(
            "tensor `{name}` has shape {:?} but the parameter {} has {:?}",
            tensor.shape, param.path, param.shape
        ));
    }
    let want = param.byte_len();
    if tensor.bytes != want {
        return Err(format!(
            "tensor `{name}` holds {} bytes but its shape and dtype take {want}",
            tensor.bytes
        ));
    }
    Ok(())
}

/// That a model record holds exactly the parameters `params`, each as [`check_tensor`] says.
fn check_model_record(bytes: Bytes, params: &[Parameter]) -> Result<(), String> {
    let tensors = describe(bytes)?.tensors;
    let by_path: BTreeMap<&str, &Parameter> = params.iter().map(|p| (p.path.as_str(), p)).collect();
    let mut seen = BTreeSet::new();
    for tensor in &tensors {
        let param = by_path.get(tensor.name.as_str()).ok_or_else(|| {
            format!(
                "tensor `{}` is not a parameter of this model (a record of another model?)",
                tensor.name
            )
        })?;
        check_tensor(tensor, param)?;
        seen.insert(tensor.name.as_str());
    }
    match params.iter().find(|p| !seen.contains(p.path.as_str())) {
        Some(missing) => Err(format!("no tensor for the parameter {}", missing.path)),
        None => Ok(()),
    }
}

/// What Ember's AdamW keeps for each parameter, under the parameter id `{id}`: the tensors
/// `{id}.momentum.moment_1` and `moment_2`, the scalars `{id}.__rank` and `{id}.momentum.time`,
/// and the metadata entry `{id}` holding the parameter's module path.
const MOMENTS: [&str; 2] = ["momentum.moment_1", "momentum.moment_2"];
const RANK: &str = "__rank";
const TIME: &str = "momentum.time";

/// That an optimizer record holds complete AdamW state for every parameter of `params`, or for
/// none (a fresh optimizer, as `ember import` writes), and nothing else.
fn check_optimizer_record(bytes: Bytes, params: &[Parameter]) -> Result<(), String> {
    let Contents {
        tensors,
        scalars,
        metadata,
    } = describe(bytes)?;
    let by_id: BTreeMap<String, &Parameter> =
        params.iter().map(|p| (p.id.val().to_string(), p)).collect();
    // The parameter an entry `{id}.{leaf}` belongs to, and the leaf.
    let owner = |name: &str| -> Result<(&Parameter, String), String> {
        let (id, leaf) = name.split_once('.').unwrap_or((name, ""));
        let param = by_id.get(id).ok_or_else(|| {
            format!(
                "`{name}` is the state of no parameter of this model (a record of another model?)"
            )
        })?;
        Ok((param, leaf.to_string()))
    };
    let mut entries: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for tensor in &tensors {
        let (param, leaf) = owner(&tensor.name)?;
        if !MOMENTS.contains(&leaf.as_str()) {
            return Err(format!("unexpected tensor `{}`", tensor.name));
        }
        if tensor.param_id != Some(param.id.val()) {
            return Err(format!(
                "tensor `{}` carries parameter id {:?}, not {}",
                tensor.name,
                tensor.param_id,
                param.id.val()
            ));
        }
        check_tensor(tensor, param)?;
        entries.entry(param.id.val()).or_default().insert(leaf);
    }
    for (name, value) in &scalars {
        let (param, leaf) = owner(name)?;
        let number = match *value {
            Scalar::UInt(n) => Some(n),
            Scalar::Int(n) => u64::try_from(n).ok(),
            Scalar::Float(_) | Scalar::Bool(_) => None,
        };
        match (leaf.as_str(), number) {
            (RANK, Some(rank)) if rank == param.shape.len() as u64 => {}
            (RANK, _) => {
                return Err(format!(
                    "`{name}` is {value:?} but the parameter {} has rank {}",
                    param.path,
                    param.shape.len()
                ));
            }
            // Ember's AdamW counts its steps in an i32 (PyTorch's bias corrections use it as an
            // exponent); the first update is 1.
            (TIME, Some(time)) if (1..=i32::MAX as u64).contains(&time) => {}
            (TIME, _) => {
                return Err(format!(
                    "`{name}` is {value:?}, not a step count between 1 and 2^31 - 1"
                ));
            }
            _ => return Err(format!("unexpected scalar `{name}`")),
        }
        entries.entry(param.id.val()).or_default().insert(leaf);
    }
    for (id, path) in &metadata {
        let (param, _) = owner(id)?;
        if *path != param.path {
            return Err(format!(
                "the state of parameter {id} names `{path}` but that parameter is {}",
                param.path
            ));
        }
        entries
            .entry(param.id.val())
            .or_default()
            .insert(String::new());
    }
    let complete: BTreeSet<String> = MOMENTS
        .iter()
        .chain(&[RANK, TIME, ""])
        .map(|s| s.to_string())
        .collect();
    if let Some((id, have)) = entries.iter().find(|(_, have)| **have != complete) {
        let param = &by_id[&id.to_string()];
        let missing: Vec<&str> = complete
            .difference(have)
            .map(|s| if s.is_empty() { "its path" } else { s })
            .collect();
        return Err(format!(
            "the AdamW state of {} lacks {}",
            param.path,
            missing.join(", ")
        ));
    }
    if !entries.is_empty()
        && let Some(param) = params.iter().find(|p| !entries.contains_key(&p.id.val()))
    {
        return Err(format!("no AdamW state for the parameter {}", param.path));
    }
    Ok(())
}
