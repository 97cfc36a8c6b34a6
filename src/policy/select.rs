//! A group's choice among its exits, made once per probe interval from what the exits'
//! probes and lines say ([`ExitView`]).
//!
//! Failover (one exit carries the group):
//! - an exit whose line is not running or not up, or whose latest probes were all lost
//!   (`lost_probes` in a row), is left at once for the best live exit (highest score,
//!   then the earliest listed): a fatal change waits for nothing;
//! - otherwise a candidate takes over after `confirmations` evaluations in a row in
//!   which it either beats the current exit by more than `threshold` points (TrueWord
//!   Node's rule; ties keep the current exit), or is listed before it and scores at
//!   least as well (failback to the preferred exit once it is healthy again: its score
//!   covers a window of probes, so a line that just came back must first answer a
//!   window's worth of them);
//! - with no live exit the current one stays (traffic is never handed to the main table).
//!
//! Balancing (every healthy exit carries flows, by weight): an exit leaves the set at
//! once when it is dead or down, and after `confirmations` evaluations when its score
//! falls more than `threshold` below the best; it joins (again) after `confirmations`
//! evaluations live and within `threshold` of the best.

use super::{Score, Tuning};

/// Whether a group uses one exit at a time or spreads flows over several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Failover,
    Balance,
}

/// What the daemon knows about one exit at an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitView {
    /// The exit's line runs on this host (it has a device a route can name).
    pub running: bool,
    /// The line says it is up (WireGuard: a session; an IP tunnel: its keepalive).
    pub up: bool,
    /// Its probes: the latest ones all lost.
    pub dead: bool,
    /// Its score, once a probe's outcome is known.
    pub score: Option<Score>,
}

impl ExitView {
    fn live(&self) -> bool {
        self.running && self.up && !self.dead
    }

    fn known_live(&self) -> Option<Score> {
        self.score.filter(|_| self.live())
    }
}

/// Why the active exits changed; exits by their index in the group's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The group had nothing installed: the first choice.
    Initial,
    /// The exit's line is not running or not up.
    ExitDown(usize),
    /// The exit's latest probes were all lost.
    ExitDead(usize),
    /// The exit beat the current one by more than the threshold, long enough.
    Better(usize),
    /// The exit, listed before the current one, is healthy again.
    Failback(usize),
    /// Balancing: the exit is healthy again and carries flows again.
    Joined(usize),
    /// Balancing: the exit scored too far below the best, long enough.
    Left(usize),
}

/// A change of a group's active exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The exits before, by index (empty: nothing installable).
    pub from: Vec<usize>,
    /// The exits now.
    pub to: Vec<usize>,
    /// Why, one reason per exit that moved.
    pub reasons: Vec<Reason>,
}

/// The exits a group uses now, by index in its list (at most one for failover; empty
/// when none of its lines runs).
pub type Active = Vec<usize>;

/// One group's choice and its hysteresis.
#[derive(Debug, Clone)]
pub struct Selector {
    mode: Mode,
    exits: usize,
    active: Active,
    /// Failover: the candidate being confirmed and for how many evaluations.
    pending: Option<(usize, u32)>,
    /// Balancing: per exit, evaluations in a row it qualified to join or to leave.
    streak: Vec<u32>,
}

impl Selector {
    /// A group of `exits` exits (listed in order of preference) with nothing chosen
    /// yet: the first evaluation chooses.
    pub fn new(mode: Mode, exits: usize) -> Selector {
        Selector {
            mode,
            exits,
            active: Vec::new(),
            pending: None,
            streak: vec![0; exits],
        }
    }

    /// A group whose exits changed (a new list, reload), keeping `active` (indices in
    /// the new list) as its current choice: traffic stays where it is until the usual
    /// rules move it.
    pub fn with_active(mode: Mode, exits: usize, active: Active) -> Selector {
        let mut s = Selector::new(mode, exits);
        s.active = active.into_iter().filter(|&i| i < exits).collect();
        if mode == Mode::Failover {
            s.active.truncate(1);
        }
        s
    }

    /// The exits in use now.
    pub fn active(&self) -> &[usize] {
        &self.active
    }

    /// One evaluation: `views[i]` is exit `i` now. Returns the change to install, if
    /// any.
    pub fn poll(&mut self, views: &[ExitView], tuning: &Tuning) -> Option<Change> {
        debug_assert_eq!(views.len(), self.exits);
        let change = match self.mode {
            Mode::Failover => self.poll_failover(views, tuning),
            Mode::Balance => self.poll_balance(views, tuning),
        }?;
        if change.from == change.to {
            return None;
        }
        self.active = change.to.clone();
        Some(change)
    }

    fn poll_failover(&mut self, views: &[ExitView], tuning: &Tuning) -> Option<Change> {
        let best_live = best(views, |i| views[i].known_live());
        let Some(&cur) = self.active.first() else {
            // First choice: the best known live exit, else the first that runs and is
            // up, else the first that runs.
            let pick = best_live
                .or_else(|| (0..views.len()).find(|&i| views[i].running && views[i].up))
                .or_else(|| (0..views.len()).find(|&i| views[i].running))?;
            return Some(self.switch(pick, Reason::Initial));
        };
        let v = views[cur];
        if !v.live() {
            self.pending = None;
            let reason = if v.running && v.up {
                Reason::ExitDead(cur)
            } else {
                Reason::ExitDown(cur)
            };
            if let Some(b) = best_live.filter(|&b| b != cur) {
                return Some(self.switch(b, reason));
            }
            if !v.running {
                // Its device is gone: any exit that runs beats none.
                let other = (0..views.len())
                    .filter(|&i| i != cur && views[i].running)
                    .min_by_key(|&i| (!views[i].up, views[i].dead, i));
                return Some(match other {
                    Some(o) => self.switch(o, reason),
                    None => Change {
                        from: vec![cur],
                        to: Vec::new(),
                        reasons: vec![reason],
                    },
                });
            }
            return None;
        }
        let Some(current) = v.score else {
            self.pending = None;
            return None;
        };
        let candidate = best(views, |c| {
            let s = views[c].known_live()?;
            let qualifies = c != cur
                && (s.beats_by_more_than(current, tuning.threshold) || (c < cur && s >= current));
            qualifies.then_some(s)
        });
        let Some(c) = candidate else {
            self.pending = None;
            return None;
        };
        let count = match self.pending {
            Some((p, n)) if p == c => n + 1,
            _ => 1,
        };
        if count < tuning.confirmations.max(1) {
            self.pending = Some((c, count));
            return None;
        }
        let reason = if c < cur
            && !views[c]
                .score?
                .beats_by_more_than(current, tuning.threshold)
        {
            Reason::Failback(c)
        } else {
            Reason::Better(c)
        };
        Some(self.switch(c, reason))
    }

    fn switch(&mut self, to: usize, reason: Reason) -> Change {
        self.pending = None;
        Change {
            from: self.active.clone(),
            to: vec![to],
            reasons: vec![reason],
        }
    }

    fn poll_balance(&mut self, views: &[ExitView], tuning: &Tuning) -> Option<Change> {
        if self.active.is_empty() {
            let mut to: Active = (0..views.len()).filter(|&i| views[i].live()).collect();
            if to.is_empty() {
                to = (0..views.len()).filter(|&i| views[i].running).collect();
            }
            self.streak.iter_mut().for_each(|s| *s = 0);
            return (!to.is_empty()).then(|| Change {
                from: Vec::new(),
                to,
                reasons: vec![Reason::Initial],
            });
        }
        let top = (0..views.len()).filter_map(|i| views[i].known_live()).max();
        let healthy = |i: usize| match (views[i].known_live(), top) {
            (Some(s), Some(t)) => s.within(t, tuning.threshold),
            _ => false,
        };
        let confirmations = tuning.confirmations.max(1);
        let mut to = Vec::with_capacity(views.len());
        let mut reasons = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let member = self.active.contains(&i);
            if member && !v.live() {
                self.streak[i] = 0;
                reasons.push(if v.running && v.up {
                    Reason::ExitDead(i)
                } else {
                    Reason::ExitDown(i)
                });
                continue;
            }
            // A member with a known score too far below the best, or a non-member
            // healthy again: a change that needs confirming.
            let wants_change = if member {
                v.score.is_some() && !healthy(i)
            } else {
                healthy(i)
            };
            self.streak[i] = if wants_change { self.streak[i] + 1 } else { 0 };
            let changes = wants_change && self.streak[i] >= confirmations;
            if changes {
                self.streak[i] = 0;
                reasons.push(if member {
                    Reason::Left(i)
                } else {
                    Reason::Joined(i)
                });
            }
            if member != changes {
                to.push(i);
            }
        }
        if to.is_empty() {
            // Nothing live: keep what still runs rather than let the traffic go
            // elsewhere.
            to = self
                .active
                .iter()
                .copied()
                .filter(|&i| views[i].running)
                .collect();
        }
        (to != self.active).then(|| Change {
            from: self.active.clone(),
            to,
            reasons,
        })
    }
}

/// The exit with the highest score `score_of` gives, the earliest listed among equals.
fn best(views: &[ExitView], score_of: impl Fn(usize) -> Option<Score>) -> Option<usize> {
    (0..views.len())
        .filter_map(|i| score_of(i).map(|s| (s, i)))
        .max_by(|(a, i), (b, j)| a.cmp(b).then(j.cmp(i)))
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(points: f64) -> ExitView {
        ExitView {
            running: true,
            up: true,
            dead: false,
            score: Some(score(points)),
        }
    }

    /// A score of `points` (a multiple of 5 from the latency buckets, or lower by cost).
    fn score(points: f64) -> Score {
        let cost = ((100.0 - points) * 2.0) as u8;
        Score::of(0.0, 1.0, cost)
    }

    const DEAD: ExitView = ExitView {
        running: true,
        up: true,
        dead: true,
        score: None,
    };

    fn t() -> Tuning {
        Tuning::DEFAULT
    }

    #[test]
    fn first_choice_is_the_preferred_running_exit_before_any_probe() {
        let mut s = Selector::new(Mode::Failover, 2);
        let unknown = ExitView {
            running: true,
            up: true,
            ..ExitView::default()
        };
        let c = s.poll(&[unknown, unknown], &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![0], vec![Reason::Initial]));
        assert!(s.poll(&[unknown, unknown], &t()).is_none());
    }

    #[test]
    fn no_exit_running_means_nothing_installable() {
        let mut s = Selector::new(Mode::Failover, 2);
        assert!(s.poll(&[ExitView::default(); 2], &t()).is_none());
        assert!(s.active().is_empty());
    }

    #[test]
    fn dead_exit_is_left_at_once_for_the_best_live_one() {
        let mut s = Selector::with_active(Mode::Failover, 3, vec![0]);
        let c = s.poll(&[DEAD, live(90.0), live(100.0)], &t()).unwrap();
        assert_eq!(c.from, vec![0]);
        assert_eq!(c.to, vec![2]);
        assert_eq!(c.reasons, vec![Reason::ExitDead(0)]);
    }

    #[test]
    fn dead_exit_stays_when_no_other_is_live() {
        let mut s = Selector::with_active(Mode::Failover, 2, vec![0]);
        assert!(s.poll(&[DEAD, DEAD], &t()).is_none());
        assert_eq!(s.active(), &[0]);
    }

    #[test]
    fn exit_whose_line_stopped_is_left_even_for_an_unproven_one() {
        let mut s = Selector::with_active(Mode::Failover, 2, vec![0]);
        let gone = ExitView::default();
        let fresh = ExitView {
            running: true,
            up: true,
            ..ExitView::default()
        };
        let c = s.poll(&[gone, fresh], &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![1], vec![Reason::ExitDown(0)]));
        // And with nothing running at all, nothing is installable.
        let mut s = Selector::with_active(Mode::Failover, 1, vec![0]);
        let c = s.poll(&[gone], &t()).unwrap();
        assert!(c.to.is_empty());
    }

    #[test]
    fn better_candidate_needs_threshold_and_confirmations() {
        let mut s = Selector::with_active(Mode::Failover, 2, vec![0]);
        // 95 vs 100: within the threshold of 5, ties keep the current exit.
        for _ in 0..10 {
            assert!(s.poll(&[live(95.0), live(100.0)], &t()).is_none());
        }
        // 90 vs 100: more than 5 better, confirmed on the third evaluation.
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_none());
        let c = s.poll(&[live(90.0), live(100.0)], &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![1], vec![Reason::Better(1)]));
    }

    #[test]
    fn an_evaluation_without_the_advantage_restarts_the_count() {
        let mut s = Selector::with_active(Mode::Failover, 2, vec![0]);
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(100.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(90.0), live(100.0)], &t()).is_some());
    }

    #[test]
    fn failback_to_the_preferred_exit_once_it_scores_as_well() {
        let mut s = Selector::with_active(Mode::Failover, 2, vec![1]);
        // Still recovering (losses in its window): no failback.
        for _ in 0..5 {
            assert!(s.poll(&[live(85.0), live(100.0)], &t()).is_none());
        }
        assert!(s.poll(&[live(100.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(100.0), live(100.0)], &t()).is_none());
        let c = s.poll(&[live(100.0), live(100.0)], &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![0], vec![Reason::Failback(0)]));
        // And no flapping back: the other exit listed later never wins a tie.
        for _ in 0..10 {
            assert!(s.poll(&[live(100.0), live(100.0)], &t()).is_none());
        }
    }

    #[test]
    fn flapping_exit_does_not_flap_the_route() {
        // Exit 0 is up one evaluation in three: each time it comes back its score
        // still carries the losses, so the group stays on exit 1 throughout.
        let mut s = Selector::with_active(Mode::Failover, 2, vec![1]);
        for round in 0..30 {
            let e0 = if round % 3 == 0 { live(45.0) } else { DEAD };
            assert!(s.poll(&[e0, live(100.0)], &t()).is_none(), "round {round}");
        }
    }

    #[test]
    fn balance_starts_with_every_live_exit_and_drops_a_dead_one_at_once() {
        let mut s = Selector::new(Mode::Balance, 3);
        let c = s
            .poll(&[live(100.0), live(100.0), live(100.0)], &t())
            .unwrap();
        assert_eq!(c.to, vec![0, 1, 2]);
        let c = s.poll(&[live(100.0), DEAD, live(100.0)], &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![0, 2], vec![Reason::ExitDead(1)]));
        // Back with losses in its window: not yet.
        for _ in 0..5 {
            assert!(s
                .poll(&[live(100.0), live(70.0), live(100.0)], &t())
                .is_none());
        }
        assert!(s.poll(&[live(100.0); 3], &t()).is_none());
        assert!(s.poll(&[live(100.0); 3], &t()).is_none());
        let c = s.poll(&[live(100.0); 3], &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![0, 1, 2], vec![Reason::Joined(1)]));
    }

    #[test]
    fn balance_member_far_below_the_best_leaves_after_confirmations() {
        let mut s = Selector::with_active(Mode::Balance, 2, vec![0, 1]);
        let views = [live(100.0), live(40.0)];
        assert!(s.poll(&views, &t()).is_none());
        assert!(s.poll(&views, &t()).is_none());
        let c = s.poll(&views, &t()).unwrap();
        assert_eq!((c.to, c.reasons), (vec![0], vec![Reason::Left(1)]));
    }

    #[test]
    fn balance_keeps_its_set_when_every_exit_is_dead() {
        let mut s = Selector::with_active(Mode::Balance, 2, vec![0, 1]);
        assert!(s.poll(&[DEAD, DEAD], &t()).is_none());
        assert_eq!(s.active(), &[0, 1]);
    }

    #[test]
    fn reconfigured_group_keeps_its_exit_then_fails_back_to_the_new_first() {
        // `policy failover g b2,b1` while b1 (now index 1) carries the group.
        let mut s = Selector::with_active(Mode::Failover, 2, vec![1]);
        assert!(s.poll(&[live(100.0), live(100.0)], &t()).is_none());
        assert!(s.poll(&[live(100.0), live(100.0)], &t()).is_none());
        let c = s.poll(&[live(100.0), live(100.0)], &t()).unwrap();
        assert_eq!(c.to, vec![0]);
    }
}
