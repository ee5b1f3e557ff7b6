//! The session windows of one key and where their contents are stored
//! (Flink's `MergingWindowSet`), as an ordered map of disjoint windows.
//!
//! Each window maps to its *state window*: the namespace its contents and
//! trigger state are kept under. When windows merge, the result keeps the
//! state window of one of them and the others' state is merged into it,
//! so merging never moves the surviving state. Windows in the set never
//! overlap or touch (they would have merged), so those a new window
//! merges with are found by one ordered lookup and a short walk: O(log n)
//! per element, where Flink's set sorts and re-merges every window of the
//! key for each element.

use std::collections::BTreeMap;

use super::Window;

/// A key's windows in order, each with its state window. They never
/// intersect, so those a new window intersects are consecutive: at most
/// the one just before it, and those from it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergingWindowSet<W> {
    windows: BTreeMap<W, W>,
}

impl<W> Default for MergingWindowSet<W> {
    fn default() -> Self {
        MergingWindowSet {
            windows: BTreeMap::new(),
        }
    }
}

/// One merge [`MergingWindowSet::add_window`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge<W> {
    /// The window the merged ones became.
    pub result: W,
    /// The windows that were in the set before and are merged away (the
    /// new window is not among them: it had no state).
    pub merged: Vec<W>,
    /// The state window `result` keeps.
    pub state_result: W,
    /// The state windows of `merged` other than `state_result`, whose
    /// contents move into it.
    pub merged_state: Vec<W>,
}

impl<W: Window> MergingWindowSet<W> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set stored as `(window, state window)` pairs (what the operator
    /// keeps in keyed state).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (W, W)>) -> Self {
        MergingWindowSet {
            windows: pairs.into_iter().collect(),
        }
    }

    /// The `(window, state window)` pairs, in window order.
    pub fn pairs(&self) -> impl Iterator<Item = (W, W)> + '_ {
        self.windows.iter().map(|(w, s)| (*w, *s))
    }

    /// How many windows the key has.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether the key has no window.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Where `window`'s contents are stored, if it is in the set.
    pub fn state_window(&self, window: &W) -> Option<W> {
        self.windows.get(window).copied()
    }

    /// Removes `window` (fired and cleaned up, or late); returns whether
    /// it was there.
    pub fn retire_window(&mut self, window: &W) -> bool {
        self.windows.remove(window).is_some()
    }

    /// Adds `new`, merging it with every window it overlaps or touches.
    /// Returns the window `new` ended up in, and the merge made, if any
    /// (`None` when `new` was added alone or fell inside one window
    /// without extending it). The caller applies a merge (triggers,
    /// state) before it adds the element.
    pub fn add_window(&mut self, new: W) -> (W, Option<Merge<W>>) {
        let mut touched: Vec<(W, W)> = Vec::new();
        if let Some((w, s)) = self.windows.range(..new).next_back()
            && w.intersects(&new)
        {
            touched.push((*w, *s));
        }
        for (w, s) in self.windows.range(new..) {
            if !w.intersects(&new) {
                break;
            }
            touched.push((*w, *s));
        }
        if touched.is_empty() {
            self.windows.insert(new, new);
            return (new, None);
        }
        let result = touched.iter().fold(new, |acc, (w, _)| acc.cover(w));
        if touched.len() == 1 && touched[0].0 == result {
            // Inside one window that it does not extend: nothing merges.
            return (result, None);
        }
        let state_result = touched[0].1;
        for (w, _) in &touched {
            self.windows.remove(w);
        }
        self.windows.insert(result, state_result);
        let merged_state = touched[1..].iter().map(|(_, s)| *s).collect();
        let merged = touched.into_iter().map(|(w, _)| w).collect();
        (
            result,
            Some(Merge {
                result,
                merged,
                state_result,
                merged_state,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::TimeWindow;
    use proptest::prelude::*;

    #[test]
    fn windows_merge_when_they_touch() {
        let mut set = MergingWindowSet::new();
        assert_eq!(
            set.add_window(TimeWindow::new(0, 5)).0,
            TimeWindow::new(0, 5)
        );
        assert_eq!(
            set.add_window(TimeWindow::new(10, 15)).0,
            TimeWindow::new(10, 15)
        );
        // Inside [0, 5): no merge.
        assert_eq!(
            set.add_window(TimeWindow::new(1, 3)),
            (TimeWindow::new(0, 5), None)
        );
        // Touches both: one session [0, 15) keeping [0, 5)'s state.
        let (w, merge) = set.add_window(TimeWindow::new(5, 10));
        assert_eq!(w, TimeWindow::new(0, 15));
        assert_eq!(
            merge,
            Some(Merge {
                result: TimeWindow::new(0, 15),
                merged: vec![TimeWindow::new(0, 5), TimeWindow::new(10, 15)],
                state_result: TimeWindow::new(0, 5),
                merged_state: vec![TimeWindow::new(10, 15)],
            })
        );
        assert_eq!(
            set.state_window(&TimeWindow::new(0, 15)),
            Some(TimeWindow::new(0, 5))
        );
        assert!(set.retire_window(&TimeWindow::new(0, 15)));
        assert!(set.is_empty());
    }

    proptest! {
        /// Against brute force: after any additions the set's windows are
        /// the connected components (by `intersects`) of the windows
        /// added, and each keeps as its state window one of the windows
        /// added that it covers.
        #[test]
        fn the_set_is_the_union_of_what_was_added(
            adds in proptest::collection::vec((0i64..200, 1i64..20), 1..60),
        ) {
            let mut set = MergingWindowSet::new();
            let mut added: Vec<TimeWindow> = Vec::new();
            for (start, len) in adds {
                let w = TimeWindow::new(start, start + len);
                let (into, _) = set.add_window(w);
                prop_assert!(into.start <= w.start && w.end <= into.end);
                added.push(w);
                // Brute force: merge sorted intervals.
                let mut sorted = added.clone();
                sorted.sort();
                let mut components: Vec<TimeWindow> = Vec::new();
                for w in sorted {
                    match components.last_mut() {
                        Some(last) if last.intersects(&w) => *last = last.cover(&w),
                        _ => components.push(w),
                    }
                }
                let got: Vec<TimeWindow> = set.pairs().map(|(w, _)| w).collect();
                prop_assert_eq!(&got, &components);
                for (w, s) in set.pairs() {
                    prop_assert!(added.contains(&s), "state window {:?} was never added", s);
                    prop_assert!(w.start <= s.start && s.end <= w.end);
                }
                prop_assert_eq!(set.state_window(&into).is_some(), true);
            }
        }
    }
}
