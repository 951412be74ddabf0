//! Every float parameter of a module by its module path (`blocks.0.attn.qkv.weight`): the names
//! Burn gives them in a record, which the checkpoint checks and the tests go by.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{DType, Tensor, TensorData};

/// One float parameter of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// The module path, as in a Burn record.
    pub path: String,
    pub id: ParamId,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Every float parameter of `module`, in the order Burn visits them.
pub fn parameters<M: Module>(module: &M) -> Vec<Parameter> {
    let mut out = Vec::new();
    module.visit(&mut Walk {
        path: Vec::new(),
        with_values: false,
        found: |p, _| out.push(p),
    });
    out
}

/// Calls `found` with every float parameter of `module` and its values, in the order Burn visits
/// them.
pub fn with_values<M: Module>(module: &M, mut found: impl FnMut(Parameter, TensorData)) {
    module.visit(&mut Walk {
        path: Vec::new(),
        with_values: true,
        found: |p, values: Option<TensorData>| found(p, values.expect("asked for")),
    });
}

struct Walk<F> {
    path: Vec<String>,
    with_values: bool,
    found: F,
}

impl<F: FnMut(Parameter, Option<TensorData>)> ModuleVisitor for Walk<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let parameter = Parameter {
            path: self.path.join("."),
            id: param.id,
            dtype: value.dtype(),
            shape: value.dims().to_vec(),
        };
        (self.found)(parameter, self.with_values.then(|| value.into_data()));
    }
}
