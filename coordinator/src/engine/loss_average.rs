//! forgather's loss averages for `aggregate_stats` (reference §2.6): `train_loss` and
//! `eval_loss` are token-weighted exponential moving averages over the reports workers send
//! (decay 0.7 and 0.5), null until the first report. Pure bookkeeping.
//!
//! Token-weighted: a report that trained twice as many tokens (`tokens_window`, 1 when a worker
//! does not say) moves the average as much as two reports of one, and the decay applies per
//! report. Kept as a weighted sum and a weight sum, both decayed, so the value is the weighted
//! mean of the reports with exponentially fading weights, with no start-up bias toward zero.

/// Decay of `train_loss` per report.
pub const TRAIN_LOSS_DECAY: f64 = 0.7;
/// Decay of `eval_loss` per report.
pub const EVAL_LOSS_DECAY: f64 = 0.5;

/// One token-weighted exponential moving average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenWeightedAverage {
    decay: f64,
    weighted_sum: f64,
    weight: f64,
}

impl TokenWeightedAverage {
    /// An empty average with `decay` per report.
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            weighted_sum: 0.0,
            weight: 0.0,
        }
    }

    /// Adds a report of `value` over `tokens` (non-finite values and weights are ignored: the
    /// roster keeps finite numbers only, this keeps the average so whatever it is given).
    pub fn add(&mut self, value: f64, tokens: f64) {
        let tokens = if tokens.is_finite() && tokens > 0.0 {
            tokens
        } else {
            1.0
        };
        if !value.is_finite() {
            return;
        }
        self.weighted_sum = self.decay * self.weighted_sum + tokens * value;
        self.weight = self.decay * self.weight + tokens;
    }

    /// The average, `None` before the first report.
    pub fn value(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.weighted_sum / self.weight)
    }
}

/// The run's two loss averages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossAverages {
    /// `train_loss`, from reports' `loss`.
    pub train: TokenWeightedAverage,
    /// `eval_loss`, from reports' `eval_loss`.
    pub eval: TokenWeightedAverage,
}

impl Default for LossAverages {
    fn default() -> Self {
        Self {
            train: TokenWeightedAverage::new(TRAIN_LOSS_DECAY),
            eval: TokenWeightedAverage::new(EVAL_LOSS_DECAY),
        }
    }
}

impl LossAverages {
    /// Adds one heartbeat's statistics.
    pub fn report(&mut self, stats: &std::collections::BTreeMap<String, f64>) {
        let tokens = stats.get("tokens_window").copied().unwrap_or(1.0);
        if let Some(&loss) = stats.get("loss") {
            self.train.add(loss, tokens);
        }
        if let Some(&loss) = stats.get("eval_loss") {
            self.eval.add(loss, tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_until_the_first_report_then_the_first_value() {
        let mut average = TokenWeightedAverage::new(0.7);
        assert_eq!(average.value(), None);
        average.add(2.0, 100.0);
        assert_eq!(average.value(), Some(2.0));
    }

    #[test]
    fn older_reports_fade_by_the_decay_and_tokens_weigh() {
        let mut average = TokenWeightedAverage::new(0.5);
        average.add(4.0, 1.0);
        average.add(1.0, 1.0);
        // (0.5·4 + 1) / (0.5 + 1)
        assert_eq!(average.value(), Some(2.0));
        let mut weighted = TokenWeightedAverage::new(0.5);
        weighted.add(4.0, 1.0);
        weighted.add(1.0, 3.0);
        // (0.5·4 + 3·1) / (0.5 + 3)
        assert_eq!(weighted.value(), Some(5.0 / 3.5));
    }

    #[test]
    fn a_missing_or_useless_token_count_weighs_one_and_a_non_finite_value_nothing() {
        let mut average = TokenWeightedAverage::new(0.7);
        average.add(3.0, f64::NAN);
        average.add(f64::INFINITY, 5.0);
        assert_eq!(average.value(), Some(3.0));
        average.add(1.0, 0.0);
        assert_eq!(average.value(), Some((0.7 * 3.0 + 1.0) / 1.7));
    }

    #[test]
    fn train_and_eval_losses_use_their_own_decay() {
        let mut averages = LossAverages::default();
        let report = |loss: f64, eval: f64| {
            std::collections::BTreeMap::from([
                ("loss".to_string(), loss),
                ("eval_loss".to_string(), eval),
                ("tokens_window".to_string(), 10.0),
            ])
        };
        averages.report(&report(2.0, 4.0));
        averages.report(&report(1.0, 2.0));
        assert_eq!(averages.train.value(), Some((0.7 * 2.0 + 1.0) / 1.7));
        assert_eq!(averages.eval.value(), Some((0.5 * 4.0 + 2.0) / 1.5));
    }
}
