//! The generator: event `k` of a split as a pure function of the
//! configuration, the split and `k`.
//!
//! The official generator draws all events of a generator from one
//! unseeded random stream, so an event depends on every event before it
//! and no run repeats another. Here each event draws from its own
//! `SplittableRandom`, seeded from the configuration's seed and the event
//! id; the draws within an event follow the Java code call for call. That
//! makes any event computable on its own, which is what lets a split start
//! (or resume after a failure) at any position and lets tests recompute
//! the stream without running a job.

use std::sync::Arc;

use crate::config::{FIRST_EVENT_NUMBER, NexmarkConfig, Split};
use crate::error::NexmarkError;
use crate::model::{Auction, Bid, Event, EventKind, Person};
use crate::random::{JavaRandom, mix64};

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i32 = 5;
/// Person and auction ids a draw may pick beyond the latest one created.
const ID_LEAD: i64 = 10;
/// Hot sellers, auctions and bidders are the first of each batch of this
/// many.
const HOT_BATCH: i64 = 100;
const HOT_CHANNELS_RATIO: i32 = 2;
const CHANNELS: usize = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const MIN_STRING_LENGTH: i32 = 3;
/// Extras are slices of one random string of this many characters.
const REUSABLE_EXTRA_LEN: usize = 1024 * 1024;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// What the official generator draws once per JVM from an unseeded random
/// (the string extras are cut from, the hot and per-channel URLs): drawn
/// here once per configuration, from its seed.
#[derive(Debug)]
struct Tables {
    extra: String,
    hot_urls: [String; 4],
    channels: Vec<(String, String)>,
}

impl Tables {
    fn new(seed: u64) -> Self {
        let mut r = JavaRandom::new(mix64(seed ^ 0x6e65_786d_6172_6b01));
        let extra = exact_string_slow(&mut r, REUSABLE_EXTRA_LEN);
        // The Java order: the four hot URLs, then the channel table, from
        // one random.
        let mut r = JavaRandom::new(mix64(seed ^ 0x6e65_786d_6172_6b02));
        let hot_urls = std::array::from_fn(|_| base_url(&mut r));
        let channels = (0..CHANNELS)
            .map(|i| {
                let mut url = base_url(&mut r);
                if r.next_int_bounded(10) > 0 {
                    // Math.abs(Integer.reverse(i)): channel 1 gets i32::MIN.
                    let id = (i as u32).reverse_bits() as i32;
                    url.push_str("&channel_id=");
                    url.push_str(&id.wrapping_abs().to_string());
                }
                (format!("channel-{i}"), url)
            })
            .collect();
        Tables {
            extra,
            hot_urls,
            channels,
        }
    }
}

/// Generates the Nexmark stream of one configuration. Cheap to clone (the
/// tables are shared).
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    tables: Arc<Tables>,
    total: i64,
}

impl NexmarkGenerator {
    /// A generator for `config` (validated). Draws the tables (a 1 MiB
    /// string and 10,004 URLs): a few milliseconds, once.
    pub fn new(config: NexmarkConfig) -> Result<Self, NexmarkError> {
        config.validate()?;
        Ok(NexmarkGenerator {
            tables: Arc::new(Tables::new(config.seed)),
            total: i64::from(config.total_proportion()),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// The splits of the stream cut for `generators` generators (see
    /// [`NexmarkConfig::splits`]).
    pub fn splits(&self, generators: u32) -> Vec<Split> {
        self.config.splits(generators)
    }

    /// Event time of event number `number` on a timeline of a stream cut
    /// into `generators` splits: Java's `baseTime + (long) (number ×
    /// interEventDelayUs) / 1000`, in the same floating-point steps.
    #[inline]
    pub fn timestamp(&self, generators: u32, number: u64) -> i64 {
        let delay_us = 1_000_000.0 / f64::from(self.config.tps) * f64::from(generators);
        self.config.base_time_ms + ((number as f64 * delay_us) as i64) / 1000
    }

    /// The kind of event `id` is: ids cycle through `person_proportion`
    /// persons, `auction_proportion` auctions, `bid_proportion` bids.
    #[inline]
    pub fn kind(&self, id: u64) -> EventKind {
        let rem = (id % self.total as u64) as i64;
        let persons = i64::from(self.config.person_proportion);
        if rem < persons {
            EventKind::Person
        } else if rem < persons + i64::from(self.config.auction_proportion) {
            EventKind::Auction
        } else {
            EventKind::Bid
        }
    }

    /// Event `k` (from 0) of `split`.
    pub fn event(&self, split: &Split, k: u64) -> Event {
        let number = FIRST_EVENT_NUMBER + k;
        let id = split.event_id(k);
        let time = self.timestamp(split.generators, number);
        let mut r = JavaRandom::new(event_seed(self.config.seed, id));
        let id = id as i64;
        match self.kind(id as u64) {
            EventKind::Person => Event::Person(self.person(id, &mut r, time)),
            EventKind::Auction => {
                Event::Auction(self.auction(split.generators, number, id, &mut r, time))
            }
            EventKind::Bid => Event::Bid(self.bid(id, &mut r, time)),
        }
    }

    /// The events of `split` from `k` on, in order.
    pub fn split_events(&self, split: Split, from: u64) -> impl Iterator<Item = Event> + '_ {
        (from..split.events).map(move |k| self.event(&split, k))
    }

    /// Every event of the stream cut for `generators` generators, split
    /// after split (what a batch check recomputes).
    pub fn events(&self, generators: u32) -> impl Iterator<Item = Event> + '_ {
        self.splits(generators)
            .into_iter()
            .flat_map(move |s| self.split_events(s, 0))
    }

    fn person(&self, id: i64, r: &mut JavaRandom, time: i64) -> Person {
        let person_id = self.last_base0_person_id(id) + FIRST_PERSON_ID;
        let mut name = String::with_capacity(16);
        name.push_str(FIRST_NAMES[r.next_int_bounded(FIRST_NAMES.len() as i32) as usize]);
        name.push(' ');
        name.push_str(LAST_NAMES[r.next_int_bounded(LAST_NAMES.len() as i32) as usize]);
        let mut email = next_string(r, 7, ' ');
        email.push('@');
        email.push_str(&next_string(r, 5, ' '));
        email.push_str(".com");
        let mut credit_card = String::with_capacity(19);
        for i in 0..4 {
            if i > 0 {
                credit_card.push(' ');
            }
            let n = r.next_int_bounded(10_000);
            push_4_digits(&mut credit_card, n as u32);
        }
        let city = US_CITIES[r.next_int_bounded(US_CITIES.len() as i32) as usize];
        let state = US_STATES[r.next_int_bounded(US_STATES.len() as i32) as usize];
        let size = 8 + name.len() + email.len() + credit_card.len() + city.len() + state.len();
        let extra = self.next_extra(r, size, self.config.avg_person_byte_size);
        Person {
            id: person_id as u64,
            name,
            email_address: email,
            credit_card,
            city: city.to_string(),
            state: state.to_string(),
            date_time: time,
            extra,
        }
    }

    fn auction(
        &self,
        generators: u32,
        number: u64,
        id: i64,
        r: &mut JavaRandom,
        time: i64,
    ) -> Auction {
        let auction_id = self.last_base0_auction_id(id) + FIRST_AUCTION_ID;
        let seller = if r.next_int_bounded(self.config.hot_sellers_ratio as i32) > 0 {
            // The first person of the latest batch of HOT_BATCH.
            (self.last_base0_person_id(id) / HOT_BATCH) * HOT_BATCH
        } else {
            self.next_base0_person_id(id, r)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + i64::from(r.next_int_bounded(NUM_CATEGORIES));
        let initial_bid = next_price(r);
        // How long until the auction `num_in_flight_auctions` ahead is
        // created; lengths average that horizon.
        let ahead = (u64::from(self.config.num_in_flight_auctions) * self.total as u64)
            / u64::from(self.config.auction_proportion);
        let horizon = self.timestamp(generators, number + ahead) - time;
        let expires = time + 1 + r.next_long_below((horizon * 2).max(1));
        let item_name = next_string(r, 20, ' ');
        let description = next_string(r, 100, ' ');
        let reserve = initial_bid + next_price(r);
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = self.next_extra(r, size, self.config.avg_auction_byte_size);
        Auction {
            id: auction_id as u64,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: time,
            expires,
            seller: seller as u64,
            category: category as u64,
            extra,
        }
    }

    fn bid(&self, id: i64, r: &mut JavaRandom, time: i64) -> Bid {
        let auction = if r.next_int_bounded(self.config.hot_auction_ratio as i32) > 0 {
            (self.last_base0_auction_id(id) / HOT_BATCH) * HOT_BATCH
        } else {
            self.next_base0_auction_id(id, r)
        } + FIRST_AUCTION_ID;
        let bidder = if r.next_int_bounded(self.config.hot_bidders_ratio as i32) > 0 {
            // The second person of the batch, so that hot bidders and hot
            // sellers differ.
            (self.last_base0_person_id(id) / HOT_BATCH) * HOT_BATCH + 1
        } else {
            self.next_base0_person_id(id, r)
        } + FIRST_PERSON_ID;
        let price = next_price(r);
        let (channel, url) = if r.next_int_bounded(HOT_CHANNELS_RATIO) > 0 {
            let i = r.next_int_bounded(HOT_CHANNELS.len() as i32) as usize;
            (HOT_CHANNELS[i].to_string(), self.tables.hot_urls[i].clone())
        } else {
            let (c, u) = &self.tables.channels[r.next_int_bounded(CHANNELS as i32) as usize];
            (c.clone(), u.clone())
        };
        // The reference generator adds FIRST_PERSON_ID a second time here;
        // kept, so that bidders match what Flink's harness generates.
        let bidder = bidder + FIRST_PERSON_ID;
        let extra = self.next_extra(r, 8 + 8 + 8 + 8, self.config.avg_bid_byte_size);
        Bid {
            auction: auction as u64,
            bidder: bidder as u64,
            price,
            channel,
            url,
            date_time: time,
            extra,
        }
    }

    /// The latest person id created at or before event `id` (base 0).
    #[inline]
    fn last_base0_person_id(&self, id: i64) -> i64 {
        let persons = i64::from(self.config.person_proportion);
        let epoch = id / self.total;
        let offset = (id % self.total).min(persons - 1);
        epoch * persons + offset
    }

    /// The latest auction id created at or before event `id` (base 0).
    #[inline]
    fn last_base0_auction_id(&self, id: i64) -> i64 {
        let persons = i64::from(self.config.person_proportion);
        let auctions = i64::from(self.config.auction_proportion);
        let mut epoch = id / self.total;
        let mut offset = id % self.total;
        if offset < persons {
            // Before this epoch's auctions: the previous epoch's last.
            epoch -= 1;
            offset = auctions - 1;
        } else if offset >= persons + auctions {
            offset = auctions - 1;
        } else {
            offset -= persons;
        }
        epoch * auctions + offset
    }

    /// A random active person (base 0), possibly a few not created yet.
    #[inline]
    fn next_base0_person_id(&self, id: i64, r: &mut JavaRandom) -> i64 {
        let people = self.last_base0_person_id(id) + 1;
        let active = people.min(i64::from(self.config.num_active_people));
        people - active + r.next_long_below(active + ID_LEAD)
    }

    /// A random in-flight auction (base 0), possibly a few not created yet.
    #[inline]
    fn next_base0_auction_id(&self, id: i64, r: &mut JavaRandom) -> i64 {
        let max = self.last_base0_auction_id(id);
        let min = (max - i64::from(self.config.num_in_flight_auctions)).max(0);
        min + r.next_long_below(max - min + 1 + ID_LEAD)
    }

    /// Padding so that `current + extra` averages `average` bytes: a slice,
    /// at a random offset, of the shared random string.
    fn next_extra(&self, r: &mut JavaRandom, current: usize, average: u32) -> String {
        let average = average as i64;
        let current = current as i64;
        if current > average {
            return String::new();
        }
        let wanted = average - current;
        let delta = (wanted as f64 * 0.2).round() as i64;
        let min = wanted - delta;
        let len = if delta == 0 {
            min
        } else {
            min + i64::from(r.next_int_bounded((2 * delta) as i32))
        } as usize;
        let extra = &self.tables.extra;
        if len < extra.len() / 2 {
            let offset = r.next_int_bounded((extra.len() - len) as i32) as usize;
            extra[offset..offset + len].to_string()
        } else {
            exact_string_slow(r, len)
        }
    }
}

/// The seed of event `id`'s random: distinct ids give distinct seeds
/// (`mix64` is a bijection), far apart on the Weyl sequence.
#[inline]
pub(crate) fn event_seed(seed: u64, id: u64) -> u64 {
    mix64(id ^ mix64(seed))
}

/// `StringsGenerator.nextString`: 3 to `max - 1` characters, each `special`
/// with probability 1/13, else a lower-case letter; trimmed (which only
/// matters when `special` is a space).
fn next_string(r: &mut JavaRandom, max: i32, special: char) -> String {
    let len = MIN_STRING_LENGTH + r.next_int_bounded(max - MIN_STRING_LENGTH);
    let mut s = String::with_capacity(len as usize);
    for _ in 0..len {
        if r.next_int_bounded(13) == 0 {
            s.push(special);
        } else {
            s.push((b'a' + r.next_int_bounded(26) as u8) as char);
        }
    }
    if special == ' ' && (s.starts_with(' ') || s.ends_with(' ')) {
        s = s.trim_matches(' ').to_string();
    }
    s
}

/// `nextExactString` without the shared string: six characters per
/// `nextInt()`, `'a' + rnd % 26` with Java's signed remainder (so also
/// `'H'..'`'`), as the reference builds its 1 MiB string.
fn exact_string_slow(r: &mut JavaRandom, len: usize) -> String {
    let mut s = String::with_capacity(len);
    let (mut rnd, mut left) = (0i32, 0);
    for _ in 0..len {
        if left == 0 {
            rnd = r.next_int();
            left = 6;
        }
        s.push((i32::from(b'a') + rnd % 26) as u8 as char);
        rnd /= 26;
        left -= 1;
    }
    s
}

/// `https://www.nexmark.com/<a>/<b>/<c>/item.htm?query=1`.
fn base_url(r: &mut JavaRandom) -> String {
    let mut url = String::from("https://www.nexmark.com/");
    for _ in 0..3 {
        url.push_str(&next_string(r, 5, '_'));
        url.push('/');
    }
    url.push_str("item.htm?query=1");
    url
}

/// `PriceGenerator.nextPrice`: 10^(6u) dollars in cents, log-uniform from
/// $1 to $1,000,000.
#[inline]
fn next_price(r: &mut JavaRandom) -> u64 {
    (10f64.powf(r.next_double() * 6.0) * 100.0).round() as u64
}

fn push_4_digits(s: &mut String, n: u32) {
    for d in [n / 1000, n / 100 % 10, n / 10 % 10, n % 10] {
        s.push((b'0' + d as u8) as char);
    }
}
