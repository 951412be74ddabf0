//! A small generator with a fixed algorithm (SplitMix64), for everything Ember draws itself:
//! batch positions, sampling and the built-in corpus. Being specified, it gives the same stream
//! on every platform and crate version, and being keyed by (seed, stream, step) it needs no
//! saved state: a resumed run recreates exactly the batches it would have drawn.

#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

/// Independent streams drawn from one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    TrainBatches = 1,
    EvalBatches = 2,
    Sampling = 3,
    /// Seeds the device's generator before each training step, which draws dropout's masks.
    Dropout = 4,
}

impl SplitMix64 {
    pub fn new(state: u64) -> Self {
        Self(state)
    }

    /// The generator for `stream` at `step` of a run seeded with `seed`.
    pub fn keyed(seed: u64, stream: Stream, step: u64) -> Self {
        let mut g = Self(seed);
        let a = g.next_u64() ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut g = Self(a);
        Self(g.next_u64() ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |s, step| SplitMix64::keyed(7, s, step).next_u64();
        assert_eq!(draw(Stream::TrainBatches, 3), draw(Stream::TrainBatches, 3));
        assert_ne!(draw(Stream::TrainBatches, 3), draw(Stream::TrainBatches, 4));
        assert_ne!(draw(Stream::TrainBatches, 3), draw(Stream::EvalBatches, 3));
        // The reference SplitMix64 output for state 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn below_covers_the_range_evenly() {
        let mut g = SplitMix64::new(1);
        let mut counts = [0usize; 5];
        (0..50_000).for_each(|_| counts[g.below(5)] += 1);
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
