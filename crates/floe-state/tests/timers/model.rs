//! An independent model of timer queues for the timer tests: per time
//! domain a `BTreeSet` of timers ordered by (timestamp, key group, key's
//! postcard bytes, namespace's postcard bytes), the firing order the
//! backends promise. Keys are `u64`, namespaces `u32`: both encode as
//! varints, whose byte order is not their numeric order, so the model
//! checks that the backends order by bytes.

#![allow(dead_code)]

use std::collections::BTreeSet;

use floe_state::{
    KeyGroupRange, KeyedStateBackend, TimeDomain, Timer, TimerQueue, key_group_for_key,
};

/// A timer as the model keeps it; the derived order is the firing order
/// (the last two fields follow from the bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fired {
    pub ts: i64,
    pub kg: u16,
    pub key_bytes: Vec<u8>,
    pub ns_bytes: Vec<u8>,
    pub key: u64,
    pub ns: u32,
}

/// Pending timers per domain.
#[derive(Debug, Clone)]
pub struct Model {
    pub max_p: u32,
    pub sets: [BTreeSet<Fired>; 2],
}

fn index(domain: TimeDomain) -> usize {
    match domain {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

impl Model {
    pub fn new(max_p: u32) -> Self {
        Model {
            max_p,
            sets: [BTreeSet::new(), BTreeSet::new()],
        }
    }

    pub fn timer(&self, key: u64, ns: u32, ts: i64) -> Fired {
        Fired {
            ts,
            kg: key_group_for_key(&key, self.max_p),
            key_bytes: postcard::to_allocvec(&key).unwrap(),
            ns_bytes: postcard::to_allocvec(&ns).unwrap(),
            key,
            ns,
        }
    }

    pub fn register(&mut self, domain: TimeDomain, key: u64, ns: u32, ts: i64) {
        let t = self.timer(key, ns, ts);
        self.sets[index(domain)].insert(t);
    }

    pub fn delete(&mut self, domain: TimeDomain, key: u64, ns: u32, ts: i64) {
        let t = self.timer(key, ns, ts);
        self.sets[index(domain)].remove(&t);
    }

    pub fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.sets[index(domain)].first().map(|t| t.ts)
    }

    pub fn poll(&mut self, domain: TimeDomain, up_to: i64) -> Option<Fired> {
        let set = &mut self.sets[index(domain)];
        if set.first()?.ts > up_to {
            return None;
        }
        set.pop_first()
    }

    pub fn drain(&mut self, domain: TimeDomain, up_to: i64) -> Vec<Fired> {
        std::iter::from_fn(|| self.poll(domain, up_to)).collect()
    }

    /// Only the timers of the key groups of `range`.
    pub fn restrict(&self, range: KeyGroupRange) -> Model {
        let mut m = self.clone();
        for set in &mut m.sets {
            set.retain(|t| range.contains(t.kg));
        }
        m
    }

    pub fn len(&self) -> usize {
        self.sets.iter().map(BTreeSet::len).sum()
    }
}

pub fn set_key(b: &mut KeyedStateBackend<u64>, key: u64) {
    let kg = key_group_for_key(&key, b.max_parallelism());
    b.set_current_key(key, kg).unwrap();
}

/// A fired timer as the model writes it, checking its key group.
pub fn fired(b: &KeyedStateBackend<u64>, t: Timer<u64, u32>) -> Fired {
    let m = Model::new(b.max_parallelism());
    let f = m.timer(t.key, t.namespace, t.timestamp);
    assert_eq!(f.kg, t.key_group, "key group of {t:?}");
    f
}

pub fn poll(
    b: &mut KeyedStateBackend<u64>,
    q: &TimerQueue<u32>,
    domain: TimeDomain,
    up_to: i64,
) -> Option<Fired> {
    let t = b.poll_timer(q, domain, up_to).unwrap()?;
    Some(fired(b, t))
}

pub fn drain(
    b: &mut KeyedStateBackend<u64>,
    q: &TimerQueue<u32>,
    domain: TimeDomain,
    up_to: i64,
) -> Vec<Fired> {
    std::iter::from_fn(|| poll(b, q, domain, up_to)).collect()
}

/// Registers in the backend (at `key`) and in the model.
pub fn register(
    b: &mut KeyedStateBackend<u64>,
    q: &TimerQueue<u32>,
    m: &mut Model,
    domain: TimeDomain,
    key: u64,
    ns: u32,
    ts: i64,
) {
    set_key(b, key);
    b.register_timer(q, domain, ts, ns).unwrap();
    m.register(domain, key, ns, ts);
}

/// A deterministic spread of timers: `n` registrations over `keys` keys,
/// both domains, a few namespaces, timestamps around zero (duplicates
/// included), then every seventh one deleted again.
pub fn fill(b: &mut KeyedStateBackend<u64>, q: &TimerQueue<u32>, n: u64, keys: u64) -> Model {
    let mut m = Model::new(b.max_parallelism());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut registered = Vec::new();
    for _ in 0..n {
        let key = next() % keys * 97;
        let ns = [0u32, 1, 200, 70_000][(next() % 4) as usize];
        let ts = (next() % 2_000) as i64 - 300;
        let domain = if next() % 3 == 0 {
            TimeDomain::ProcessingTime
        } else {
            TimeDomain::EventTime
        };
        register(b, q, &mut m, domain, key, ns, ts);
        registered.push((domain, key, ns, ts));
    }
    for (domain, key, ns, ts) in registered.into_iter().step_by(7) {
        set_key(b, key);
        b.delete_timer(q, domain, ts, &ns).unwrap();
        m.delete(domain, key, ns, ts);
    }
    m
}

/// Everything pending, both domains, drained from the backend and the
/// model, compared.
pub fn assert_drains_as(b: &mut KeyedStateBackend<u64>, q: &TimerQueue<u32>, m: &Model) {
    let mut m = m.clone();
    for domain in TimeDomain::ALL {
        assert_eq!(b.next_timer(q, domain), m.next(domain), "{domain}");
        let want = m.drain(domain, i64::MAX);
        let got = drain(b, q, domain, i64::MAX);
        assert_eq!(got.len(), want.len(), "{domain}: how many fire");
        assert_eq!(got, want, "{domain}: the firing sequence");
        assert_eq!(b.next_timer(q, domain), None);
    }
}
