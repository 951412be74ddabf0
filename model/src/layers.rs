//! Burn's `Linear` and `LayerNorm` modules (their parameters, their records), run through
//! Ember's fused operations rather than their own `forward`.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use ember_kernels::ops;

/// LayerNorm's ε, as PyTorch's and nanoGPT's.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// `x·W + b` over the last dimension.
pub fn linear(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
    ops::linear(x, layer.weight.val(), layer.bias.as_ref().map(Param::val))
}

/// `residual + dropout(x·W + b)`: a residual branch's output projection added onto the stream.
/// One fused op when no dropout applies (evaluation, or `p = 0`): the stream is where the
/// product accumulates.
pub fn project_onto(residual: Tensor<3>, layer: &Linear, x: Tensor<3>, dropout: f64) -> Tensor<3> {
    if ops::drops(&x, dropout) {
        return residual + ops::dropout(linear(layer, x), dropout);
    }
    let bias = layer.bias.as_ref().map(Param::val);
    ops::linear_onto(residual, x, layer.weight.val(), bias)
}

/// LayerNorm over the last dimension (the module must use [`LAYER_NORM_EPS`]).
pub fn layer_norm(norm: &LayerNorm, x: Tensor<3>) -> Tensor<3> {
    let beta = norm.beta.as_ref().map(Param::val);
    ops::layer_norm(x, norm.gamma.val(), beta, LAYER_NORM_EPS)
}
