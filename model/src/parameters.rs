//! Every float parameter of a module by its module path (`blocks.0.attn.qkv.weight`): the names
//! Burn gives them in a record, which the checkpoint checks and the tests go by.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{DType, Tensor, TensorData};
use ember_kernels::ops;

/// One float parameter of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// The module path, as in a Burn record.
    pub path: String,
    pub id: ParamId,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Parameter {
    /// The bytes its values take.
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// Every float parameter of `module`, in the order Burn visits them.
pub fn parameters<M: Module>(module: &M) -> Vec<Parameter> {
    let mut out = Vec::new();
    with_readers(module, |p, _| out.push(p));
    out
}

/// Calls `found` with every float parameter of `module` and its values, in the order Burn visits
/// them.
pub fn with_values<M: Module>(module: &M, mut found: impl FnMut(Parameter, TensorData)) {
    with_readers(module, |p, read| found(p, read()));
}

/// What reads a parameter's values when called (as they are then, from the tensor's own buffer:
/// [`ops::snapshot`]), so that a writer can read one parameter at a time.
pub type ValuesReader = Box<dyn Fn() -> TensorData + Send + Sync>;

/// Calls `found` with every float parameter of `module` and what reads its values, in the order
/// Burn visits them.
pub fn with_readers<M: Module>(module: &M, found: impl FnMut(Parameter, ValuesReader)) {
    module.visit(&mut Walk {
        path: Vec::new(),
        found,
    });
}

struct Walk<F> {
    path: Vec<String>,
    found: F,
}

impl<F: FnMut(Parameter, ValuesReader)> ModuleVisitor for Walk<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    /// Describes a parameter without initializing it: a model built to have a checkpoint
    /// loaded into it is checked against the checkpoint first, and drawing its random weights
    /// only to replace them took 1.8 s at GPT-2 124M (Burn's loader does not draw them either).
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dtype = if param.is_initialized() {
            param.val().dtype()
        } else {
            // What Burn's initializers create a parameter in.
            param.lazy_device().settings().float_dtype.into()
        };
        let parameter = Parameter {
            path: self.path.join("."),
            id: param.id,
            dtype,
            shape: param.lazy_shape().to_vec(),
        };
        let param = param.clone();
        (self.found)(parameter, Box::new(move || ops::snapshot(param.val())));
    }
}
