//! Health with hysteresis: one lost PING must not fail a master over, and one lucky PING
//! must not bring a flapping node back into rotation.

/// Turns a stream of probe results into a health state that flips only after
/// `fail_after` consecutive failures (up → down) or `recover_after` consecutive
/// successes (down → up). Before the first probe there is no state; the first result
/// decides it, so an agent restarted beside a dead Redis reports it down at once instead
/// of claiming it up for `fail_after` probes.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fail_after: u32,
    recover_after: u32,
    healthy: Option<bool>,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
}

impl Hysteresis {
    /// Thresholds below 1 are taken as 1 (flip on the first disagreeing result).
    pub fn new(fail_after: u32, recover_after: u32) -> Self {
        Self {
            fail_after: fail_after.max(1),
            recover_after: recover_after.max(1),
            healthy: None,
            streak: 0,
        }
    }

    /// Records one probe result and returns the health after it.
    pub fn observe(&mut self, ok: bool) -> bool {
        let Some(healthy) = self.healthy else {
            self.healthy = Some(ok);
            return ok;
        };
        if ok == healthy {
            self.streak = 0;
            return healthy;
        }
        self.streak += 1;
        let needed = if ok {
            self.recover_after
        } else {
            self.fail_after
        };
        if self.streak >= needed {
            self.healthy = Some(ok);
            self.streak = 0;
            return ok;
        }
        healthy
    }

    /// The current state; `None` before the first probe.
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Hysteresis, results: &[bool]) -> Vec<bool> {
        results.iter().map(|ok| h.observe(*ok)).collect()
    }

    #[test]
    fn first_probe_decides_either_way() {
        let mut up = Hysteresis::new(3, 2);
        assert_eq!(up.healthy(), None);
        assert!(up.observe(true));
        let mut down = Hysteresis::new(3, 2);
        assert!(!down.observe(false));
        assert_eq!(down.healthy(), Some(false));
    }

    #[test]
    fn flips_down_only_after_fail_after_failures_in_a_row() {
        let mut h = Hysteresis::new(3, 2);
        assert_eq!(
            run(&mut h, &[true, false, false, true, false, false, false]),
            [true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn flips_up_only_after_recover_after_successes_in_a_row() {
        let mut h = Hysteresis::new(3, 2);
        assert_eq!(
            run(&mut h, &[false, true, false, true, true, true]),
            [false, false, false, false, true, true]
        );
    }

    #[test]
    fn flapping_never_flips() {
        let mut h = Hysteresis::new(2, 2);
        h.observe(true);
        for _ in 0..10 {
            assert!(h.observe(false));
            assert!(h.observe(true));
        }
    }

    #[test]
    fn thresholds_of_one_follow_every_result() {
        let mut h = Hysteresis::new(0, 1);
        assert_eq!(
            run(&mut h, &[true, false, true, false]),
            [true, false, true, false]
        );
    }
}
