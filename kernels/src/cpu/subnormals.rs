//! Subnormal floats flushed to zero on the threads that train.
//!
//! An Intel core takes a microcode assist, a hundred cycles and more, for every vector
//! instruction that reads or makes a subnormal (a magnitude below `f32::MIN_POSITIVE`, 1.2e-38).
//! They arise where training multiplies small numbers: a softmax whose logits spread over more
//! than 87, its gradient divided by the batch's rows, AdamW's moments decaying for a token that
//! stopped appearing. `cargo bench --bench cpu -- head_loss` once fed GPT-2's head a weight whose
//! logits spread over 385: with 2% of the softmax subnormal, one chunk of 512 rows took 55 s on
//! a Xeon (AVX-512) and 0.68 s with the flush, for values below 1e-38 that change nothing in the
//! result. Setting the processor's flush-to-zero and denormals-are-zero modes on each thread
//! (what TensorFlow does on its threads, and PyTorch's `set_flush_denormal(True)`) costs
//! nothing and treats them as the zeros they nearly are. The modes are per thread; the backend
//! sets them on rayon's workers as it builds the pool (where training runs) and on the thread
//! that builds it.

/// Sets flush-to-zero and denormals-are-zero on the calling thread, on x86-64; elsewhere
/// nothing (aarch64's cores have no such penalty on most designs).
pub fn flush_subnormals_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    {
        /// MXCSR's FTZ (results) and DAZ (operands) bits.
        const FLUSH_TO_ZERO: u32 = 1 << 15;
        const DENORMALS_ARE_ZERO: u32 = 1 << 6;
        let mut mxcsr = 0u32;
        // SAFETY: `stmxcsr`/`ldmxcsr` read and write this thread's SSE control register through
        // a valid pointer to a local; only the two flush bits change (SSE2 is part of x86-64,
        // and both bits exist on every x86-64 processor), which changes no memory and no other
        // state. `std::arch`'s `_mm_setcsr` is deprecated in favour of this.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &raw mut mxcsr, options(nostack));
            mxcsr |= FLUSH_TO_ZERO | DENORMALS_ARE_ZERO;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &raw const mxcsr, options(nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hint::black_box;

    use super::*;

    #[test]
    fn subnormal_operands_and_results_become_zero() {
        std::thread::spawn(|| {
            let tiny = black_box(f32::MIN_POSITIVE);
            // Before: a subnormal result, and a subnormal operand read as itself.
            assert!(black_box(tiny * 0.5) > 0.0);
            flush_subnormals_on_this_thread();
            if cfg!(target_arch = "x86_64") {
                assert_eq!(black_box(tiny * 0.5), 0.0, "flush to zero");
                let subnormal = f32::from_bits(1);
                assert_eq!(
                    black_box(subnormal) * black_box(2.0f32),
                    0.0,
                    "denormals are zero"
                );
                assert_eq!(
                    black_box(tiny * 2.0),
                    2.0 * f32::MIN_POSITIVE,
                    "normals untouched"
                );
            }
        })
        .join()
        .unwrap();
    }
}
