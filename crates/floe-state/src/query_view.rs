//! Queryable heap state that readers off the task thread can answer from.
//!
//! A query answered by the task that owns the key waits until that task
//! is on a core and between two batches; on a machine the job keeps busy
//! that wait, not the network, is the latency (BENCHMARKS.md, queryable
//! state). So the task *publishes* its queryable tables now and then: it
//! hands a [`QueryView`] the `Arc` of every key-group map, exactly as a
//! checkpoint freezes them, and the next write to a published group copies
//! it (copy-on-write; the view keeps the old map). Readers then look keys up
//! in the published maps on their own thread.
//!
//! A view answers only while it is at most `max_staleness` old; an older
//! one (or none yet) tells the reader to ask the task, and asks the task to
//! publish again. While queries keep coming the task republishes every
//! `max_staleness / 2`, and never so often that copying the groups it
//! writes after a publish takes more than 1/`COPY_BUDGET` of its time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_core::KeyGroup;

use crate::error::StateError;
use crate::query::{QueryFormat, QueryKeyError, QueryValue, decode_query_key};
use crate::table_alloc::GroupMap;
use crate::types::{Key, StateStorage};

/// Publishing may cost the task at most 1/`COPY_BUDGET` of its time in
/// copies of published groups.
const COPY_BUDGET: u32 = 20;

/// What a view made of a query.
#[derive(Debug)]
pub enum ViewLookup {
    /// Answered from state at most `max_staleness` old: the key's state,
    /// or `None` when it has none.
    Answered(Result<Option<QueryValue>, StateError>),
    /// The key's bytes are not one key of the state's key type (why).
    WrongKey(QueryKeyError),
    /// No view fresh enough: ask the owning task.
    AskTask,
}

/// A published view of one queryable state of one subtask; cheap to clone
/// and safe to read from any thread.
#[derive(Clone)]
pub struct QueryView(Arc<dyn ReadView>);

impl std::fmt::Debug for QueryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryView").finish_non_exhaustive()
    }
}

impl QueryView {
    /// Looks up the key whose postcard bytes are `key` (in `key_group`).
    pub fn lookup(
        &self,
        key_group: KeyGroup,
        key: &[u8],
        format: QueryFormat,
        what: &str,
    ) -> ViewLookup {
        self.0.lookup(key_group, key, format, what)
    }
}

trait ReadView: Send + Sync {
    fn lookup(
        &self,
        key_group: KeyGroup,
        key: &[u8],
        format: QueryFormat,
        what: &str,
    ) -> ViewLookup;
    /// How many key groups hold a published map.
    #[cfg(test)]
    fn published_groups(&self) -> usize;
}

/// One published key group: the map as it was at the publish (`None`
/// until the first).
type PublishedGroup<K, S> = Mutex<Option<Arc<GroupMap<K, S>>>>;

/// The published side of a heap table's view, shared with readers.
pub(crate) struct HeapView<K, S> {
    first_key_group: KeyGroup,
    groups: Box<[PublishedGroup<K, S>]>,
    /// When the groups were last published, in nanoseconds since `origin`
    /// (0: never).
    published_at: AtomicU64,
    origin: Instant,
    max_staleness: Duration,
    /// Set by readers, cleared by a publish: queries are coming, keep the
    /// view fresh. Shared by every view of the backend, so a task checks
    /// one flag per batch.
    wanted: Arc<AtomicBool>,
}

impl<K, S> HeapView<K, S> {
    fn age(&self, now: Instant) -> Option<Duration> {
        match self.published_at.load(Ordering::Acquire) {
            0 => None,
            at => Some(
                now.saturating_duration_since(self.origin)
                    .saturating_sub(Duration::from_nanos(at)),
            ),
        }
    }
}

impl<K: Key, S: StateStorage> ReadView for HeapView<K, S> {
    #[cfg(test)]
    fn published_groups(&self) -> usize {
        self.groups
            .iter()
            .filter(|c| c.lock().unwrap().is_some())
            .count()
    }

    fn lookup(
        &self,
        key_group: KeyGroup,
        key: &[u8],
        format: QueryFormat,
        what: &str,
    ) -> ViewLookup {
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
        let key = match decode_query_key::<K>(key) {
            Ok(key) => key,
            Err(reason) => return ViewLookup::WrongKey(reason),
        };
        let fresh = self
            .age(Instant::now())
            .is_some_and(|age| age <= self.max_staleness);
        let offset = key_group.wrapping_sub(self.first_key_group) as usize;
        let Some(cell) = self.groups.get(offset).filter(|_| fresh) else {
            return ViewLookup::AskTask;
        };
        // The lock only guards taking a reference; the lookup runs
        // without it, so the task never waits on a reader's lookup.
        let group = cell.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(group) = group else {
            return ViewLookup::AskTask;
        };
        ViewLookup::Answered(
            group
                .get(&key)
                .map(|value| QueryValue::encode(value, format, what))
                .transpose(),
        )
    }
}

/// The task's side of a heap table's view: when to publish, and what
/// copies after a publish cost.
pub(crate) struct ViewPublisher<K, S> {
    view: Arc<HeapView<K, S>>,
    /// Time spent copying published groups on write since the last publish.
    copying: Duration,
    last_publish: Option<Instant>,
    /// A group was written since the last publish: the live table is newer
    /// than the view.
    behind: bool,
}

impl<K: Key, S: StateStorage> ViewPublisher<K, S> {
    /// A view of a table with `groups` key groups from `first_key_group`.
    pub(crate) fn new(
        first_key_group: KeyGroup,
        groups: usize,
        max_staleness: Duration,
        wanted: Arc<AtomicBool>,
    ) -> Self {
        ViewPublisher {
            view: Arc::new(HeapView {
                first_key_group,
                groups: (0..groups).map(|_| Mutex::new(None)).collect(),
                published_at: AtomicU64::new(0),
                origin: Instant::now(),
                max_staleness,
                wanted,
            }),
            copying: Duration::ZERO,
            last_publish: None,
            behind: true,
        }
    }

    /// The readers' handle.
    pub(crate) fn view(&self) -> QueryView {
        QueryView(self.view.clone())
    }

    /// A write reached a group for the first time since a publish or a
    /// snapshot (taking `took` to copy it if the view still held it): the
    /// view is behind the table from now on.
    pub(crate) fn copied(&mut self, took: Duration) {
        self.copying += took;
        self.behind = true;
    }

    /// Whether the view should be published at `now`: it was withdrawn or
    /// half its staleness has passed (readers then never find it too old
    /// while the task keeps up), and the copies the last publish caused
    /// fit the budget.
    pub(crate) fn due(&self, now: Instant) -> bool {
        let Some(last) = self.last_publish else {
            return true;
        };
        let since = now.saturating_duration_since(last);
        let withdrawn = self.view.published_at.load(Ordering::Relaxed) == 0;
        (withdrawn || since >= self.view.max_staleness / 2) && since >= self.copying * COPY_BUDGET
    }

    /// Drops the published maps of a view no reader may use any more
    /// (withdrawn, or older than `max_staleness`): after queries stop, the
    /// groups written since the last publish would otherwise stay in
    /// memory twice.
    pub(crate) fn retire_if_unused(&mut self, now: Instant) {
        let unused = self
            .view
            .age(now)
            .is_none_or(|age| age > self.view.max_staleness);
        if unused && self.last_publish.is_some() {
            for cell in self.view.groups.iter() {
                let old = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
                drop(old);
            }
            self.view.published_at.store(0, Ordering::Release);
            self.last_publish = None;
        }
    }

    /// The task is answering a query from its live state: if the view is
    /// behind it, withdraw the view, so that no later query sees older
    /// state than that answer (the next publish brings the view back).
    pub(crate) fn withdraw_if_behind(&self) {
        if self.behind {
            self.view.published_at.store(0, Ordering::Release);
        }
    }

    /// Publishes `groups` (the table's current maps) as the view.
    pub(crate) fn publish(&mut self, groups: &[Arc<GroupMap<K, S>>], now: Instant) {
        for (cell, group) in self.view.groups.iter().zip(groups) {
            let old = cell
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(group.clone());
            // Freed (if no reader holds it) outside the readers' lock.
            drop(old);
        }
        let nanos = now.saturating_duration_since(self.view.origin).as_nanos();
        self.view
            .published_at
            .store((nanos as u64).max(1), Ordering::Release);
        self.copying = Duration::ZERO;
        self.last_publish = Some(now);
        self.behind = false;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{
        KeyGroupRange, KeyedStateBackend, ListStateDescriptor, QueryFormat, QueryKeyError,
        QueryValue, StateBackendKind, ValueStateDescriptor, ViewLookup, key_group_for_key,
    };

    const MAX_P: u32 = 128;

    fn backend() -> KeyedStateBackend<u64> {
        // Subtask 2 of 3 ([86, 127]): a range not starting at 0.
        let range = KeyGroupRange::for_operator_index(MAX_P, 3, 2);
        KeyedStateBackend::new(StateBackendKind::HashMap, "op", range, MAX_P).unwrap()
    }

    /// Keys of subtask 2 of 3.
    fn keys(n: usize) -> Vec<u64> {
        let range = KeyGroupRange::for_operator_index(MAX_P, 3, 2);
        (0u64..)
            .filter(|k| range.contains(key_group_for_key(k, MAX_P)))
            .take(n)
            .collect()
    }

    /// A backend whose queryable `count` of its first key is 1, the view
    /// of that state (nothing published yet), the key and its group.
    fn counted(
        staleness: Duration,
    ) -> (
        KeyedStateBackend<u64>,
        crate::ValueState<u64>,
        crate::QueryView,
        u64,
        u16,
    ) {
        let mut b = backend();
        let state = b
            .get_state(&ValueStateDescriptor::<u64>::new("count").set_queryable("count"))
            .unwrap();
        let key = keys(1)[0];
        let kg = key_group_for_key(&key, MAX_P);
        b.set_current_key(key, kg).unwrap();
        state.update(&mut b, 1).unwrap();
        let view = b.query_view("count", staleness).unwrap();
        (b, state, view, key, kg)
    }

    fn count(view: &crate::QueryView, key: u64) -> ViewLookup {
        let kg = key_group_for_key(&key, MAX_P);
        view.lookup(
            kg,
            &postcard::to_allocvec(&key).unwrap(),
            QueryFormat::Postcard,
            "t",
        )
    }

    fn answered(lookup: ViewLookup) -> Option<u64> {
        match lookup {
            ViewLookup::Answered(Ok(Some(QueryValue::Postcard(b)))) => {
                Some(postcard::from_bytes(&b).unwrap())
            }
            ViewLookup::Answered(Ok(None)) => None,
            other => panic!("not answered: {other:?}"),
        }
    }

    #[test]
    fn a_view_answers_what_was_published_and_writes_after_it_do_not_tear_it() {
        let mut b = backend();
        let state = b
            .get_state(&ValueStateDescriptor::<u64>::new("count").set_queryable("count"))
            .unwrap();
        let all = keys(201);
        let (keys, absent) = (&all[..200], all[200]);
        let write = |b: &mut KeyedStateBackend<u64>, k: u64, v: u64| {
            b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
            state.update(b, v).unwrap();
        };
        for &k in keys {
            write(&mut b, k, k + 1);
        }
        let view = b.query_view("count", Duration::from_secs(3600)).unwrap();
        // Nothing published yet: the task must answer.
        assert!(matches!(count(&view, keys[0]), ViewLookup::AskTask));
        b.publish_query_views();
        for &k in keys {
            assert_eq!(answered(count(&view, k)), Some(k + 1));
        }
        // Writes after the publish go to copies: the view still shows the
        // published values until the next publish, which is not due yet
        // (half the staleness has not passed).
        for &k in keys {
            write(&mut b, k, k * 10);
        }
        b.publish_query_views();
        for &k in keys {
            assert_eq!(answered(count(&view, k)), Some(k + 1), "key {k}");
        }
        // A key the subtask never saw has no state.
        assert_eq!(answered(count(&view, absent)), None);
        // The same view on every call.
        let again = b.query_view("count", Duration::from_secs(3600)).unwrap();
        assert_eq!(answered(count(&again, keys[3])), Some(keys[3] + 1));
    }

    #[test]
    fn a_view_is_republished_when_due_and_refuses_to_answer_when_too_old() {
        let mut b = backend();
        let state = b
            .get_list_state(&ListStateDescriptor::<u64>::new("seen").set_queryable("seen"))
            .unwrap();
        let key = keys(1)[0];
        let kg = key_group_for_key(&key, MAX_P);
        b.set_current_key(key, kg).unwrap();
        state.add(&mut b, 1).unwrap();
        let staleness = Duration::from_millis(40);
        let view = b.query_view("seen", staleness).unwrap();
        let list = |view: &crate::QueryView| match view.lookup(
            kg,
            &postcard::to_allocvec(&key).unwrap(),
            QueryFormat::Json,
            "t",
        ) {
            ViewLookup::Answered(Ok(Some(QueryValue::Json(v)))) => Some(v),
            ViewLookup::AskTask => None,
            other => panic!("{other:?}"),
        };
        // Readers ask for a publish; the task publishes between batches.
        assert_eq!(list(&view), None);
        b.publish_query_views();
        assert_eq!(list(&view), Some(serde_json::json!([1])));
        b.set_current_key(key, kg).unwrap();
        state.add(&mut b, 2).unwrap();
        std::thread::sleep(staleness / 2);
        b.publish_query_views();
        assert_eq!(list(&view), Some(serde_json::json!([1, 2])));
        // Without publishes the view ages out: the task is asked again.
        std::thread::sleep(staleness + Duration::from_millis(5));
        assert_eq!(list(&view), None);
    }

    /// A query the task answers from live state withdraws the older view:
    /// the asker's next query cannot go back in time.
    #[test]
    fn an_answer_from_the_task_withdraws_the_older_view() {
        let (mut b, state, view, key, kg) = counted(Duration::from_secs(3600));
        assert!(matches!(count(&view, key), ViewLookup::AskTask));
        b.publish_query_views();
        assert_eq!(answered(count(&view, key)), Some(1));
        b.set_current_key(key, kg).unwrap();
        state.update(&mut b, 2).unwrap();
        let live = b.query("count", &key, kg, QueryFormat::Postcard).unwrap();
        assert_eq!(
            live,
            Some(QueryValue::Postcard(postcard::to_allocvec(&2u64).unwrap()))
        );
        assert!(matches!(count(&view, key), ViewLookup::AskTask));
        // The next batch boundary publishes again, long before half the
        // staleness has passed (once the copy budget allows: 20 times the
        // microseconds the copy of the group written above took).
        std::thread::sleep(Duration::from_millis(20));
        b.publish_query_views();
        assert_eq!(answered(count(&view, key)), Some(2));
    }

    /// Once queries stop and the view is too old to answer, the task frees
    /// its maps (after enough batches without readers).
    #[test]
    fn an_unread_view_releases_its_maps() {
        let staleness = Duration::from_millis(10);
        let (mut b, _, view, key, _) = counted(staleness);
        assert!(matches!(count(&view, key), ViewLookup::AskTask));
        b.publish_query_views();
        assert_eq!(answered(count(&view, key)), Some(1));
        let groups = KeyGroupRange::for_operator_index(MAX_P, 3, 2).len();
        assert_eq!(view.0.published_groups(), groups);
        // The last read asked for one more publish.
        std::thread::sleep(staleness);
        b.publish_query_views();
        // No reader since: once the view is too old and enough batches
        // passed, its maps go.
        std::thread::sleep(staleness * 2);
        for _ in 0..1023 {
            b.publish_query_views();
        }
        assert_eq!(view.0.published_groups(), groups, "retired too early");
        b.publish_query_views();
        assert_eq!(view.0.published_groups(), 0);
        assert!(matches!(count(&view, key), ViewLookup::AskTask));
        // And a reader brings the view back at the next batch.
        b.publish_query_views();
        assert_eq!(answered(count(&view, key)), Some(1));
    }

    #[test]
    fn a_key_of_another_type_is_refused_by_the_view() {
        let (mut b, _, view, _, kg) = counted(Duration::from_secs(3600));
        b.publish_query_views();
        let trailing = view.lookup(kg, &[1, 2], QueryFormat::Postcard, "t");
        assert!(
            matches!(
                &trailing,
                ViewLookup::WrongKey(QueryKeyError::TrailingBytes { extra: 1 })
            ),
            "{trailing:?}"
        );
        let bad = view.lookup(kg, &[0xff], QueryFormat::Postcard, "t");
        assert!(
            matches!(bad, ViewLookup::WrongKey(QueryKeyError::Decode(_))),
            "{bad:?}"
        );
    }

    #[test]
    fn only_queryable_heap_states_have_views() {
        let mut b = backend();
        b.get_state(&ValueStateDescriptor::<u64>::new("private"))
            .unwrap();
        assert!(b.query_view("private", Duration::from_secs(1)).is_none());
        assert!(b.query_view("nothing", Duration::from_secs(1)).is_none());
    }
}
