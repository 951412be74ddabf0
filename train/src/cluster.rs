//! Data parallelism: the processes ("ranks") that train one model together, and what the trainer
//! exchanges with them.
//!
//! Every rank holds the whole model and optimizer and draws the same global batch from the
//! seed-and-step keyed generator; rank r trains on its share of each micro-batch's rows. The
//! gradients are then averaged over the ranks ([`average_gradients`]) and every rank applies
//! the same update, so the weights stay identical (checked by [`weights_checksum`] at the start
//! and at every checkpoint). Rank 0 alone owns the run folder.
//!
//! The transport is behind [`Collective`]: [`Solo`] for one process, and MPI in the `ember`
//! crate's `mpi` feature (this crate stays free of any MPI library).

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use ember_model::with_values;
use sha2::{Digest, Sha256};

use crate::error::TrainError;

/// Floats per all-reduce call: gradients travel in buckets of at most this many values (32 MiB),
/// a few large messages rather than one per tensor, with a bounded buffer (the model's largest
/// tensor, GPT-2's token embedding, is 155 MB alone).
pub const BUCKET_FLOATS: usize = 8 << 20;

/// What the trainer needs from the ranks it trains with. Every method but `rank`, `size` and
/// `abort` is collective: all ranks call it, in the same order, with buffers of the same length.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The ranks training together.
    fn size(&self) -> usize;
    /// Replaces `values` by their elementwise sum over the ranks (the same on every rank).
    fn sum_f32(&self, values: &mut [f32]);
    /// [`Collective::sum_f32`] for a few f64 scalars (losses, flags).
    fn sum_f64(&self, values: &mut [f64]);
    /// Every rank's `value`, in rank order.
    fn gather_u64(&self, value: u64) -> Vec<u64>;
    /// Ends every rank's process with `code` (one rank that stops alone would leave the others
    /// waiting in their next collective).
    fn abort(&self, code: i32) -> !;

    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process training alone: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Whether any rank says yes (a stop request seen by one rank stops them all at the same step).
pub fn any(collective: &dyn Collective, yes: bool) -> bool {
    let mut flag = [f64::from(u8::from(yes))];
    collective.sum_f64(&mut flag);
    flag[0] > 0.0
}

/// Refuses to go on unless every rank computed the same `value` as rank 0: `what` names it in
/// the error ("the config"), `fix` says what to do.
pub fn check_agreement(
    collective: &dyn Collective,
    value: u64,
    what: &str,
    fix: &str,
) -> Result<(), TrainError> {
    let all = collective.gather_u64(value);
    let differ: Vec<String> = (1..all.len())
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(TrainError::Cluster(format!(
        "{what} of rank{} {} differ{} from rank 0's; {fix}",
        if differ.len() > 1 { "s" } else { "" },
        differ.join(", "),
        if differ.len() > 1 { "" } else { "s" },
    )))
}

/// The first 8 bytes of the SHA-256 of `bytes`: what ranks compare to agree on something.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    first_u64(Sha256::new().chain_update(bytes))
}

/// A checksum of every parameter's values, in the module's order.
pub fn weights_checksum<M: Module>(model: &M) -> u64 {
    let mut hasher = Sha256::new();
    with_values(model, |_, values| hasher.update(values.as_bytes()));
    first_u64(hasher)
}

/// The first 8 bytes of what `hasher` has taken in.
fn first_u64(hasher: Sha256) -> u64 {
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// Averages `grads` over the ranks in place: each rank's gradients are of its mean loss over
/// its share of the rows, so the mean over ranks is the gradient of the whole batch's mean.
/// The gradients travel as their host values, in buckets of [`BUCKET_FLOATS`], and come back
/// as tensors on the device they were on. f32 gradients only (MPI runs train in f32).
pub fn average_gradients<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    collective: &dyn Collective,
) {
    if collective.size() == 1 {
        return;
    }
    let mut taken = TakeGrads {
        grads,
        values: Vec::new(),
        device: None,
    };
    model.visit(&mut taken);
    let TakeGrads {
        grads,
        mut values,
        device,
    } = taken;
    let Some(device) = device else {
        return;
    };
    // The visit's order is the module's, the same on every rank, and so are the buckets.
    let mut tensors: Vec<&mut [f32]> = values
        .iter_mut()
        .map(|(_, data)| {
            data.as_mut_slice::<f32>()
                .expect("gradients are f32 when ranks train together")
        })
        .collect();
    sum_in_buckets(&mut tensors, collective, 1.0 / collective.size() as f32);
    let mut put = PutGrads {
        grads,
        values: values.into_iter().collect(),
        device,
    };
    model.visit(&mut put);
}

/// Sums every slice of `tensors` over the ranks through one bucket of at most
/// [`BUCKET_FLOATS`] values at a time (a tensor may span buckets), scaling the sums by `scale`.
fn sum_in_buckets(tensors: &mut [&mut [f32]], collective: &dyn Collective, scale: f32) {
    let total: usize = tensors.iter().map(|t| t.len()).sum();
    let mut bucket = Vec::with_capacity(total.min(BUCKET_FLOATS));
    // Where each value of the bucket came from: (tensor, start in it, length).
    let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
    let flush = |bucket: &mut Vec<f32>,
                 pieces: &mut Vec<(usize, usize, usize)>,
                 tensors: &mut [&mut [f32]]| {
        collective.sum_f32(bucket);
        let mut at = 0;
        for &(t, start, len) in pieces.iter() {
            for (out, sum) in tensors[t][start..start + len]
                .iter_mut()
                .zip(&bucket[at..at + len])
            {
                *out = sum * scale;
            }
            at += len;
        }
        bucket.clear();
        pieces.clear();
    };
    for t in 0..tensors.len() {
        let mut start = 0;
        while start < tensors[t].len() {
            let len = (tensors[t].len() - start).min(BUCKET_FLOATS - bucket.len());
            bucket.extend_from_slice(&tensors[t][start..start + len]);
            pieces.push((t, start, len));
            start += len;
            if bucket.len() == BUCKET_FLOATS {
                flush(&mut bucket, &mut pieces, tensors);
            }
        }
    }
    if !bucket.is_empty() {
        flush(&mut bucket, &mut pieces, tensors);
    }
}

/// Takes every gradient out of `grads` as host values, in the parameters' order.
struct TakeGrads<'a> {
    grads: &'a mut GradientsParams,
    values: Vec<(ParamId, TensorData)>,
    device: Option<Device>,
}

impl ModuleVisitor for TakeGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.device.get_or_insert_with(|| grad.device());
            self.values.push((param.id, grad.into_data()));
        }
    }
}

/// Puts the averaged values back into `grads` as tensors.
struct PutGrads<'a> {
    grads: &'a mut GradientsParams,
    values: HashMap<ParamId, TensorData>,
    device: Device,
}

impl ModuleVisitor for PutGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(data) = self.values.remove(&param.id) {
            self.grads
                .register::<D>(param.id, Tensor::from_data(data, &self.device));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Ranks simulated in one process: "sums" by adding a fixed other rank's values, recording
    /// the length of every call.
    struct Twin {
        other: f32,
        calls: Mutex<Vec<usize>>,
    }

    impl Collective for Twin {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f32(&self, values: &mut [f32]) {
            self.calls.lock().unwrap().push(values.len());
            values.iter_mut().for_each(|v| *v += self.other);
        }
        fn sum_f64(&self, values: &mut [f64]) {
            values.iter_mut().for_each(|v| *v += f64::from(self.other));
        }
        fn gather_u64(&self, value: u64) -> Vec<u64> {
            vec![value, value + self.other as u64]
        }
        fn abort(&self, _: i32) -> ! {
            unreachable!("no test aborts")
        }
    }

    #[test]
    fn buckets_cover_every_value_once_and_split_large_tensors() {
        let twin = Twin {
            other: 1.0,
            calls: Mutex::new(Vec::new()),
        };
        let (mut a, mut b, mut c) = (
            vec![1.0; 3],
            vec![3.0; BUCKET_FLOATS + 5],
            vec![5.0; BUCKET_FLOATS - 2],
        );
        let mut tensors = vec![&mut a[..], &mut b[..], &mut c[..]];
        sum_in_buckets(&mut tensors, &twin, 0.5);
        assert_eq!(
            *twin.calls.lock().unwrap(),
            vec![BUCKET_FLOATS, BUCKET_FLOATS, 6]
        );
        assert!(a.iter().all(|&v| v == 1.0));
        assert!(b.iter().all(|&v| v == 2.0));
        assert!(c.iter().all(|&v| v == 3.0));
    }

    #[test]
    fn disagreement_names_the_ranks() {
        let twin = Twin {
            other: 1.0,
            calls: Mutex::new(Vec::new()),
        };
        let err = check_agreement(&twin, 7, "the config", "use the same one").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the config of rank 1 differs from rank 0's; use the same one"
        );
        let same = Twin {
            other: 0.0,
            calls: Mutex::new(Vec::new()),
        };
        check_agreement(&same, 7, "the config", "").unwrap();
        assert!(any(&twin, false));
        assert!(!any(&same, false));
        assert!(any(&Solo, true));
    }
}
