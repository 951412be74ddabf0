//! `exp` and `erfc` for `f32` as branch-free polynomials: written so that a loop calling them
//! vectorizes (no table look-ups, no calls into libm), which the standard library's versions do
//! not. Their accuracy is checked against `f64` in the tests below.

/// Multiply-adds are fused (`mul_add`, one instruction in [`super::simd::vectorized`] code,
/// which runs only on processors with FMA): half the instructions of separate multiplies and
/// adds, and these functions are instruction-bound.
///
/// `e^x` in `f32`, within 2 ulp: `x = n·ln2 + r` with `|r| <= ln2/2`, Cephes' degree-6
/// polynomial for `e^r`, and `2^n` built in the exponent bits. Inputs below -87.3 give the
/// smallest normal number instead of a subnormal or 0 (harmless in softmax, whose masked
/// entries are never exponentiated); NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer in the default rounding mode on every
    // instruction set (SSE2 has no rounding instruction), and leaves that integer in the low
    // bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.376_26);
    let shifted = x.mul_add(LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    y * scale
}

/// The complementary error function `erfc x = 1 - erf x` in `f32`, with a relative error
/// below 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit, `erfcc`): relative, not
/// absolute, so that `Φ(x) = erfc(-x/√2)/2` stays accurate far into the left tail, where GELU's
/// values are tiny. The usual Abramowitz–Stegun erf has an absolute error of 1.5e-7, which
/// is a relative error of 1e-4 in GELU(-3).
#[inline(always)]
pub fn erfc_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / z.mul_add(0.5, 1.0);
    let mut p = 0.170_872_77_f32;
    p = p.mul_add(t, -0.822_152_23);
    p = p.mul_add(t, 1.488_515_9);
    p = p.mul_add(t, -1.135_204);
    p = p.mul_add(t, 0.278_868_07);
    p = p.mul_add(t, -0.186_288_06);
    p = p.mul_add(t, 0.096_784_18);
    p = p.mul_add(t, 0.374_091_96);
    p = p.mul_add(t, 1.000_023_7);
    p = p.mul_add(t, -1.265_512_2);
    let ans = t * exp_f32((-z).mul_add(z, p));
    if x >= 0.0 { ans } else { 2.0 - ans }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(got: f32, want: f64) -> f64 {
        ((f64::from(got) - want) / want).abs()
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_range_softmax_uses() {
        let mut worst: f64 = 0.0;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * f64::from(i) / 200_000.0;
            let x32 = x as f32;
            worst = worst.max(rel(exp_f32(x32), f64::from(x32).exp()));
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn erfc_has_a_small_relative_error_in_both_tails() {
        // Far in the right tail the rounding of x itself dominates: erfc's relative
        // sensitivity to x is about 2x², so the bound grows with it.
        for i in 0..=100_000 {
            let x = -6.0 + 15.0 * f64::from(i) / 100_000.0;
            let x32 = x as f32;
            let x64 = f64::from(x32);
            let want = libm::erfc(x64);
            let bound = 4e-7 * (1.0 + 2.0 * x64 * x64);
            let err = rel(erfc_f32(x32), want);
            assert!(
                err < bound,
                "erfc({x32}): relative error {err:e} > {bound:e}"
            );
        }
    }
}
