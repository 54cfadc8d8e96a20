//! The run's statistics, pure bookkeeping: counters of tokens, FLOPs and steps over every
//! worker that ever reported (departed and evicted ones included), and a bounded history of
//! the aggregate for `/stats_history` (reference §2.4, §2.6).
//!
//! Workers report cumulative counts. Each report adds its increase over the worker's previous
//! report (the first report adds the whole count, a decrease adds nothing), so a worker that
//! leaves keeps what it trained in the totals and one that comes back is not counted twice.
//! The per-worker baselines are kept for at most [`MAX_BASELINES`] ids.
//!
//! The history keeps at most [`HISTORY_CAPACITY`] records. When full it drops every other
//! record (and from then on keeps one advance in two, four, …), so it always spans the whole
//! run at a coarser step instead of forgetting its beginning.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use diloco_contract::api::{StatsHistoryReply, StatsRecord};

use crate::checkpoint::SavedStats;

/// Most per-worker baselines kept (forgather's cap).
pub const MAX_BASELINES: usize = 10_000;
/// Most history records kept.
pub const HISTORY_CAPACITY: usize = 4096;
/// The window the token rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most rate samples kept (reports within the window beyond it thin the oldest).
const MAX_RATE_SAMPLES: usize = 1024;

/// The cumulative counters workers report, and the totals they feed.
const COUNTERS: [(&str, Counter); 3] = [
    ("tokens_total", Counter::Tokens),
    ("flos_total", Counter::Flos),
    ("step_total", Counter::Steps),
];

#[derive(Clone, Copy)]
enum Counter {
    Tokens,
    Flos,
    Steps,
}

/// Totals over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Tokens trained.
    pub tokens: f64,
    /// FLOPs.
    pub flos: f64,
    /// Inner steps.
    pub steps: f64,
}

impl Totals {
    fn add(&mut self, counter: Counter, delta: f64) {
        match counter {
            Counter::Tokens => self.tokens += delta,
            Counter::Flos => self.flos += delta,
            Counter::Steps => self.steps += delta,
        }
    }
}

/// The run's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct RunStats {
    totals: Totals,
    baselines: BTreeMap<String, BTreeMap<String, f64>>,
    history: Vec<StatsRecord>,
    /// Advances per kept record (doubles each time the history is thinned).
    stride: u64,
    /// Advances since the last kept record.
    skipped: u64,
    /// Tokens counted from reports other than a worker's first (its catch-up of everything it
    /// trained before): what the rate is measured on. Not saved: a restart measures anew.
    steady_tokens: f64,
    /// `(when, steady_tokens)` at each report within [`RATE_WINDOW`], plus the newest older
    /// one (the window's baseline).
    samples: VecDeque<(Instant, f64)>,
}

impl Default for RunStats {
    fn default() -> Self {
        Self {
            totals: Totals::default(),
            baselines: BTreeMap::new(),
            history: Vec::new(),
            stride: 1,
            skipped: 0,
            steady_tokens: 0.0,
            samples: VecDeque::new(),
        }
    }
}

impl RunStats {
    /// Restores what a checkpoint kept.
    pub fn restore(saved: SavedStats) -> Self {
        let mut stats = Self {
            totals: Totals {
                tokens: saved.total_tokens,
                flos: saved.total_flos,
                steps: saved.total_steps,
            },
            baselines: saved.baselines.into_iter().take(MAX_BASELINES).collect(),
            history: saved.history,
            stride: saved.stride.max(1),
            ..Self::default()
        };
        while stats.history.len() > HISTORY_CAPACITY {
            stats.thin();
        }
        stats
    }

    /// What a checkpoint keeps.
    pub fn save(&self) -> SavedStats {
        SavedStats {
            total_tokens: self.totals.tokens,
            total_flos: self.totals.flos,
            total_steps: self.totals.steps,
            baselines: self.baselines.clone(),
            history: self.history.clone(),
            stride: self.stride,
        }
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Adds a worker's report (whitelisted finite numbers) to the totals; returns whether the
    /// total step count advanced (then the caller records a history point).
    pub fn report(&mut self, worker_id: &str, stats: &BTreeMap<String, f64>, now: Instant) -> bool {
        if !self.baselines.contains_key(worker_id)
            && self.baselines.len() >= MAX_BASELINES
            && let Some(first) = self.baselines.keys().next().cloned()
        {
            // Forgetting a baseline only risks counting that worker's total once more if it
            // ever reports again; keeping every id would grow without bound.
            self.baselines.remove(&first);
        }
        let baseline = self.baselines.entry(worker_id.to_string()).or_default();
        let steps_before = self.totals.steps;
        for (key, counter) in COUNTERS {
            let Some(&value) = stats.get(key) else {
                continue;
            };
            let before = baseline.insert(key.to_string(), value);
            let delta = (value - before.unwrap_or(0.0)).max(0.0);
            self.totals.add(counter, delta);
            if matches!(counter, Counter::Tokens) && before.is_some() {
                self.steady_tokens += delta;
            }
        }
        self.sample(now);
        self.totals.steps > steps_before
    }

    fn sample(&mut self, now: Instant) {
        self.samples.push_back((now, self.steady_tokens));
        let start = now.checked_sub(RATE_WINDOW);
        // Drop samples older than the window, keeping the newest of them as the baseline.
        while self.samples.len() > MAX_RATE_SAMPLES
            || self
                .samples
                .get(1)
                .zip(start)
                .is_some_and(|((t, _), start)| *t <= start)
        {
            self.samples.pop_front();
        }
    }

    /// Tokens per second over the last [`RATE_WINDOW`] (catch-up reports excluded): `None`
    /// before any steady increase, 0 when nothing was trained within the window.
    pub fn tokens_per_second(&self, now: Instant) -> Option<f64> {
        if self.steady_tokens <= 0.0 {
            return None;
        }
        let start = now.checked_sub(RATE_WINDOW);
        let baseline = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| start.is_some_and(|start| *t <= start))
            .or_else(|| self.samples.front())?;
        let seconds = now.duration_since(baseline.0).as_secs_f64();
        (seconds > 0.0).then(|| (self.steady_tokens - baseline.1).max(0.0) / seconds)
    }

    /// Appends `record` to the history (or skips it, once the history is thinned).
    pub fn record(&mut self, record: StatsRecord) {
        self.skipped += 1;
        if self.skipped < self.stride {
            // Still replace the newest point, so the latest state is always in the history.
            if let Some(last) = self.history.last_mut() {
                *last = record;
            }
            return;
        }
        self.skipped = 0;
        if self.history.len() >= HISTORY_CAPACITY {
            self.thin();
        }
        self.history.push(record);
    }

    /// Halves the history (keeping every other record) and doubles the stride.
    fn thin(&mut self) {
        let mut index = 0;
        self.history.retain(|_| {
            index += 1;
            index % 2 == 1
        });
        self.stride = self.stride.saturating_mul(2);
    }

    /// At most `max_points` records (stride-downsampled, the newest always last).
    pub fn history(&self, max_points: usize) -> StatsHistoryReply {
        let max_points = max_points.max(1);
        let all = &self.history;
        let records: Vec<StatsRecord> = if all.len() <= max_points {
            all.clone()
        } else {
            let stride = all.len().div_ceil(max_points);
            let last = all.len() - 1;
            // Take every stride-th record counting back from the newest, so it is kept.
            let mut picked: Vec<StatsRecord> = (0..=last)
                .rev()
                .step_by(stride)
                .filter_map(|i| all.get(i).cloned())
                .collect();
            picked.reverse();
            picked
        };
        StatsHistoryReply {
            count: records.len(),
            downsampled: records.len() < all.len() || self.stride > 1,
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RunStats {
        fn report_now(&mut self, worker_id: &str, stats: &BTreeMap<String, f64>) -> bool {
            self.report(worker_id, stats, Instant::now())
        }
    }

    fn stats(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn point(step: u64) -> StatsRecord {
        StatsRecord {
            sync_round: step,
            total_steps: step as f64,
            ..StatsRecord::default()
        }
    }

    /// The first report adds its whole count, later ones their increase, a decrease nothing;
    /// a worker that left (no more reports) keeps its share.
    #[test]
    fn totals_add_increases_and_keep_departed_workers() {
        let mut run = RunStats::default();
        assert!(run.report_now(
            "a",
            &stats(&[("tokens_total", 100.0), ("step_total", 10.0)])
        ));
        assert!(run.report_now("b", &stats(&[("tokens_total", 50.0), ("step_total", 5.0)])));
        assert!(run.report_now(
            "a",
            &stats(&[("tokens_total", 160.0), ("step_total", 16.0)])
        ));
        assert!(!run.report_now("a", &stats(&[("tokens_total", 10.0), ("step_total", 1.0)])));
        assert_eq!(run.totals().tokens, 210.0);
        assert_eq!(run.totals().steps, 21.0);
        // "b" departs; nothing is taken away.
        assert!(!run.report_now("a", &stats(&[("loss", 1.0)])));
        assert_eq!(run.totals().tokens, 210.0);
    }

    /// A restored run keeps its totals and baselines: a worker re-reporting the same
    /// cumulative count after a restart adds nothing.
    #[test]
    fn a_restored_run_does_not_count_a_report_twice() {
        let mut run = RunStats::default();
        run.report_now("a", &stats(&[("tokens_total", 100.0)]));
        let mut restored = RunStats::restore(run.save());
        restored.report_now("a", &stats(&[("tokens_total", 100.0)]));
        assert_eq!(restored.totals().tokens, 100.0);
    }

    /// `max_points` downsamples by stride and keeps the newest record.
    #[test]
    fn history_is_downsampled_by_stride_keeping_the_last_record() {
        let mut run = RunStats::default();
        for step in 1..=10 {
            run.record(point(step));
        }
        let all = run.history(2000);
        assert_eq!((all.count, all.downsampled), (10, false));
        let three = run.history(3);
        let steps: Vec<u64> = three.records.iter().map(|r| r.sync_round).collect();
        assert_eq!(steps, vec![2, 6, 10]);
        assert!(three.downsampled);
        assert_eq!(run.history(0).records.len(), 1, "at least one point");
        assert_eq!(run.history(1).records[0].sync_round, 10);
    }

    /// The history never exceeds its capacity: it thins itself, still spans the run from its
    /// start, and its newest record is the newest point.
    #[test]
    fn history_memory_is_bounded_and_spans_the_run() {
        let mut run = RunStats::default();
        let points = HISTORY_CAPACITY as u64 * 5 + 3;
        for step in 1..=points {
            run.record(point(step));
            assert!(run.history.len() <= HISTORY_CAPACITY);
        }
        let reply = run.history(usize::MAX);
        assert_eq!(reply.records.first().map(|r| r.sync_round), Some(1));
        assert_eq!(reply.records.last().map(|r| r.sync_round), Some(points));
        assert!(reply.downsampled);
        assert!(reply.count > HISTORY_CAPACITY / 2);
    }

    /// The rate counts only increases after a worker's first report, over the window: none
    /// before any, the window's increase per second after, 0 once training stalls.
    #[test]
    fn the_token_rate_excludes_catch_up_and_reports_a_stall() {
        let mut run = RunStats::default();
        let t0 = Instant::now();
        run.report("a", &stats(&[("tokens_total", 1_000_000.0)]), t0);
        assert_eq!(
            run.tokens_per_second(t0 + Duration::from_secs(1)),
            None,
            "warm-up"
        );
        run.report(
            "a",
            &stats(&[("tokens_total", 1_000_100.0)]),
            t0 + Duration::from_secs(10),
        );
        run.report(
            "a",
            &stats(&[("tokens_total", 1_000_200.0)]),
            t0 + Duration::from_secs(20),
        );
        let rate = run.tokens_per_second(t0 + Duration::from_secs(20)).unwrap();
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        let stalled = run
            .tokens_per_second(t0 + Duration::from_secs(200))
            .unwrap();
        assert_eq!(stalled, 0.0);
    }

    /// Baselines are bounded too.
    #[test]
    fn baselines_are_bounded() {
        let mut run = RunStats::default();
        for i in 0..MAX_BASELINES + 10 {
            run.report(
                &format!("w{i}"),
                &stats(&[("tokens_total", 1.0)]),
                Instant::now(),
            );
        }
        assert_eq!(run.baselines.len(), MAX_BASELINES);
        assert_eq!(run.totals().tokens, (MAX_BASELINES + 10) as f64);
    }
}
