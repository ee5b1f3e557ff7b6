//! The earliest timer over a subtask's key groups (Flink's
//! `KeyGroupPartitionedPriorityQueue`): both stores keep timers per key
//! group, and a watermark or a processing-time tick asks for the earliest
//! of all of them.
//!
//! Only each group's head *timestamp* is needed: the firing order is
//! (timestamp, key group, key bytes, namespace bytes), and two groups'
//! heads differ in their key group, so comparing heads by (timestamp, key
//! group) finds the group holding the earliest timer.

/// A tournament tree over key groups: the earliest head in O(1), a
/// group's head changed in O(log groups). Cheaper than a heap of groups
/// with positions, and nothing moves: a leaf per key-group offset.
#[derive(Debug, Clone)]
pub(crate) struct GroupHeads {
    /// Each key-group offset's earliest timestamp (`None`: no timer),
    /// padded with `None` up to a power of two.
    heads: Vec<Option<i64>>,
    /// `tree[1]` is the root, `tree[leaves + o]` the leaf of offset `o`;
    /// each node holds the offset winning its subtree.
    tree: Vec<u32>,
    /// Number of leaves (a power of two).
    leaves: usize,
}

impl GroupHeads {
    /// No timer in any of `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        let leaves = groups.max(1).next_power_of_two();
        let mut tree = vec![0u32; 2 * leaves];
        for o in 0..leaves {
            tree[leaves + o] = o as u32;
        }
        for i in (1..leaves).rev() {
            tree[i] = tree[2 * i];
        }
        GroupHeads {
            heads: vec![None; leaves],
            tree,
            leaves,
        }
    }

    /// Whether offset `a`'s head fires before offset `b`'s (no timer fires
    /// last; equal timestamps go by key group).
    #[inline]
    fn before(&self, a: u32, b: u32) -> bool {
        match (self.heads[a as usize], self.heads[b as usize]) {
            (Some(x), Some(y)) => x < y || (x == y && a < b),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => a < b,
        }
    }

    /// The head timestamp of key-group offset `offset`.
    #[cfg(test)]
    pub(crate) fn get(&self, offset: usize) -> Option<i64> {
        self.heads[offset]
    }

    /// Sets the head timestamp of `offset` (`None`: it has no timer left).
    #[inline]
    pub(crate) fn set(&mut self, offset: usize, head: Option<i64>) {
        if self.heads[offset] == head {
            return;
        }
        self.heads[offset] = head;
        let mut i = (self.leaves + offset) / 2;
        while i >= 1 {
            let (l, r) = (self.tree[2 * i], self.tree[2 * i + 1]);
            self.tree[i] = if self.before(l, r) { l } else { r };
            i /= 2;
        }
    }

    /// Registering timestamp `ts` in `offset`: its head if it is earlier.
    #[inline]
    pub(crate) fn offer(&mut self, offset: usize, ts: i64) {
        if self.heads[offset].is_none_or(|h| ts < h) {
            self.set(offset, Some(ts));
        }
    }

    /// The key-group offset holding the earliest timer, and its timestamp.
    #[inline]
    pub(crate) fn earliest(&self) -> Option<(usize, i64)> {
        let o = self.tree[1] as usize;
        self.heads[o].map(|ts| (o, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_earliest(heads: &[Option<i64>]) -> Option<(usize, i64)> {
        heads
            .iter()
            .enumerate()
            .filter_map(|(o, h)| h.map(|t| (t, o)))
            .min()
            .map(|(t, o)| (o, t))
    }

    #[test]
    fn one_group() {
        let mut h = GroupHeads::new(1);
        assert_eq!(h.earliest(), None);
        h.offer(0, 5);
        h.offer(0, 7);
        assert_eq!(h.earliest(), Some((0, 5)));
        h.set(0, None);
        assert_eq!(h.earliest(), None);
        h.set(0, Some(i64::MAX));
        assert_eq!(h.earliest(), Some((0, i64::MAX)));
    }

    proptest! {
        #[test]
        fn earliest_matches_a_scan(
            groups in 1usize..40,
            ops in proptest::collection::vec((0usize..40, proptest::option::of(-5i64..5)), 0..200),
        ) {
            let mut h = GroupHeads::new(groups);
            let mut model = vec![None; groups];
            for (o, v) in ops {
                let o = o % groups;
                h.set(o, v);
                model[o] = v;
                prop_assert_eq!(h.earliest(), model_earliest(&model));
                prop_assert_eq!(h.get(o), v);
            }
        }
    }
}
