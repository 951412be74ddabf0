//! nanoGPT's learning-rate schedule: linear warmup, then cosine decay to `min_lr`.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    /// The step at which the cosine reaches `min_lr` (the run's length).
    pub decay_steps: usize,
}

impl LrSchedule {
    /// The learning rate of step `it` (0-based), exactly as nanoGPT's `get_lr`.
    pub fn at(&self, it: usize) -> f64 {
        if it < self.warmup {
            return self.lr * (it + 1) as f64 / (self.warmup + 1) as f64;
        }
        if it > self.decay_steps {
            return self.min_lr;
        }
        let span = self.decay_steps.saturating_sub(self.warmup).max(1);
        let ratio = (it - self.warmup) as f64 / span as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        self.min_lr + coeff * (self.lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_min() {
        let s = LrSchedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 10,
            decay_steps: 110,
        };
        assert!((s.at(0) - 1e-3 / 11.0).abs() < 1e-12);
        assert!((s.at(9) - 1e-3 * 10.0 / 11.0).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        assert!((s.at(60) - 5.5e-4).abs() < 1e-12);
        assert!((s.at(110) - 1e-4).abs() < 1e-12);
        assert_eq!(s.at(500), 1e-4);
        assert!((10..110).all(|i| s.at(i + 1) <= s.at(i)));
    }
}
