//! Recently applied request ids of a group, so that a proposal retried
//! across a leader change returns its original result instead of writing
//! twice (the design's "Request ids").
//!
//! Bounded by count, in two generations: ids go into the newer one until
//! it holds half the capacity, then the older one is dropped whole and
//! the newer takes its place. So between half the capacity and all of it
//! is remembered, and forgetting costs nothing per request (a map evicting
//! its oldest key at every insert filled with tombstones and rehashed all
//! 100,000 entries every few seconds, a third of apply's CPU under
//! single-message POSTs). Every replica applies the same entries in the
//! same order, so every replica keeps the same window, and a restored one
//! splits its ids into the same generations (see `From<Stored>`). A retry
//! older than the window is applied again; the window must cover the
//! longest a client keeps retrying (`WINDOW_REQUESTS_DEFAULT` covers many
//! seconds of the fastest load measured).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use crate::ids::RequestId;

/// Default capacity per group: the newest 100,000 to 200,000 request ids
/// are remembered (at least what the single-generation window kept).
pub const WINDOW_REQUESTS_DEFAULT: usize = 200_000;

/// The window of recently applied requests and their replies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "Stored<R>", bound(deserialize = "R: Deserialize<'de>"))]
pub struct RequestWindow<R> {
    /// The older generation: empty until the first turnover, then `half`.
    /// Never changed once it is the older one, so shared: a checkpoint's
    /// copy of the window (taken under the machine's read lock, while
    /// apply waits) copies only the newer generation.
    older: Arc<Generation<R>>,
    /// The newer generation: at most `half`.
    newer: Generation<R>,
    capacity: usize,
}

/// Ids in the order they were applied, and their replies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation<R> {
    replies: HashMap<RequestId, R, BuildHasherDefault<IdHasher>>,
    order: Vec<RequestId>,
}

impl<R> Generation<R> {
    fn new() -> Generation<R> {
        Generation {
            replies: HashMap::default(),
            order: Vec::new(),
        }
    }
}

impl<R: Clone> RequestWindow<R> {
    /// An empty window remembering at most `capacity` (≥ 2) requests.
    pub fn new(capacity: usize) -> RequestWindow<R> {
        RequestWindow {
            older: Arc::new(Generation::new()),
            newer: Generation::new(),
            capacity: capacity.max(2),
        }
    }

    /// Ids per generation.
    fn half(&self) -> usize {
        self.capacity / 2
    }

    /// The original reply of `id`, if it was applied recently.
    pub fn reply_of(&self, id: RequestId) -> Option<&R> {
        self.newer
            .replies
            .get(&id)
            .or_else(|| self.older.replies.get(&id))
    }

    /// Remembers the reply of a request just applied. An id seen before
    /// keeps its first reply (the caller checks `reply_of` first).
    pub fn remember(&mut self, id: RequestId, reply: R) {
        if self.reply_of(id).is_some() {
            return;
        }
        if self.newer.order.len() >= self.half() {
            // The dropped generation's tables become the new one's: a map
            // grown from empty to `half` ids rehashed ~17 times and faulted
            // in fresh pages on the apply path each turnover.
            // (Unless a checkpoint's copy still holds it: then it is freed
            // with that copy.)
            let dropped = std::mem::replace(&mut self.older, Arc::new(Generation::new()));
            let mut recycled = Arc::try_unwrap(dropped).unwrap_or_else(|_| Generation::new());
            recycled.replies.clear();
            recycled.order.clear();
            self.older = Arc::new(std::mem::replace(&mut self.newer, recycled));
        }
        self.newer.replies.insert(id, reply);
        self.newer.order.push(id);
    }

    /// Number of requests remembered.
    pub fn len(&self) -> usize {
        self.older.order.len() + self.newer.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shape a window is stored in (checkpoints and snapshots): every id
/// oldest first, the replies, and the capacity. (It was the window's own
/// shape before the generations; stored windows read back unchanged.)
#[derive(Deserialize)]
struct Stored<R> {
    replies: HashMap<RequestId, R>,
    order: VecDeque<RequestId>,
    capacity: usize,
}

impl<R> From<Stored<R>> for RequestWindow<R> {
    /// Splits the ids as remembering them one by one would have: past
    /// half the capacity, the oldest `half` are the older generation.
    fn from(stored: Stored<R>) -> RequestWindow<R> {
        let Stored {
            mut replies,
            order,
            capacity,
        } = stored;
        let capacity = capacity.max(2);
        let half = capacity / 2;
        // Both generations hold at most `2 * half` (a window stored before
        // the generations may hold one more, an odd capacity): keep the
        // newest ids that fit.
        let order: Vec<RequestId> = order.into();
        let kept = &order[order.len().saturating_sub(2 * half)..];
        let older_len = if kept.len() > half { half } else { 0 };
        let mut older = Generation::new();
        let mut window = RequestWindow {
            older: Arc::new(Generation::new()),
            newer: Generation::new(),
            capacity,
        };
        for (i, id) in kept.iter().enumerate() {
            let Some(reply) = replies.remove(id) else {
                continue;
            };
            let generation = if i < older_len {
                &mut older
            } else {
                &mut window.newer
            };
            generation.replies.insert(*id, reply);
            generation.order.push(*id);
        }
        window.older = Arc::new(older);
        window
    }
}

impl<R: Serialize> Serialize for RequestWindow<R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("RequestWindow", 3)?;
        out.serialize_field("replies", &Replies(self))?;
        out.serialize_field("order", &Order(self))?;
        out.serialize_field("capacity", &self.capacity)?;
        out.end()
    }
}

/// Both generations' replies as one map.
struct Replies<'a, R>(&'a RequestWindow<R>);

impl<R: Serialize> Serialize for Replies<'_, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let w = self.0;
        let mut map =
            serializer.serialize_map(Some(w.older.replies.len() + w.newer.replies.len()))?;
        for (id, reply) in w.older.replies.iter().chain(&w.newer.replies) {
            map.serialize_entry(id, reply)?;
        }
        map.end()
    }
}

/// Every id, oldest first.
struct Order<'a, R>(&'a RequestWindow<R>);

impl<R> Serialize for Order<'_, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let w = self.0;
        let mut seq = serializer.serialize_seq(Some(w.older.order.len() + w.newer.order.len()))?;
        for id in w.older.order.iter().chain(&w.newer.order) {
            seq.serialize_element(id)?;
        }
        seq.end()
    }
}

/// Hashes request ids: drawn by the nodes themselves (a random per-process
/// prefix and a counter), never by clients, so a fast mix is enough.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, id: u128) {
        // SplitMix64's finaliser over both halves: every input bit moves
        // the low bits (the bucket) and the high ones (the tag).
        let mut z = (id as u64) ^ ((id >> 64) as u64).rotate_left(32) ^ self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_its_first_reply_until_it_leaves_the_window() {
        let mut w = RequestWindow::new(4);
        w.remember(RequestId(1), "offsets 0..9");
        w.remember(RequestId(1), "would be a second write");
        assert_eq!(w.reply_of(RequestId(1)), Some(&"offsets 0..9"));
        for id in 2..=4 {
            w.remember(RequestId(id), "other");
        }
        assert_eq!(w.len(), 4, "the whole capacity");
        assert_eq!(w.reply_of(RequestId(1)), Some(&"offsets 0..9"));
        w.remember(RequestId(5), "other");
        assert_eq!(w.len(), 3, "the older generation went whole");
        assert_eq!(w.reply_of(RequestId(1)), None, "the oldest left the window");
        assert_eq!(w.reply_of(RequestId(2)), None);
        assert_eq!(w.reply_of(RequestId(3)), Some(&"other"));
        assert_eq!(w.reply_of(RequestId(5)), Some(&"other"));
    }

    #[test]
    fn a_copy_shares_the_older_generation_and_keeps_its_own_newer_one() {
        let mut w = RequestWindow::new(4);
        for id in 1..=3 {
            w.remember(RequestId(id), id);
        }
        let copy = w.clone();
        assert!(Arc::ptr_eq(&w.older, &copy.older), "not copied");
        // Turnovers after the copy leave the copy as it was.
        for id in 4..=8 {
            w.remember(RequestId(id), id);
        }
        assert_eq!(copy.len(), 3);
        assert_eq!(copy.reply_of(RequestId(1)), Some(&1));
        assert_eq!(copy.reply_of(RequestId(3)), Some(&3));
        assert_eq!(copy.reply_of(RequestId(4)), None);
        assert_eq!(w.reply_of(RequestId(1)), None);
        assert_eq!(w.reply_of(RequestId(8)), Some(&8));
    }

    #[test]
    fn at_least_half_the_capacity_is_always_remembered() {
        let mut w = RequestWindow::new(10);
        for id in 0..100u128 {
            w.remember(RequestId(id), id);
            let remembered = (0..=id)
                .filter(|i| w.reply_of(RequestId(*i)).is_some())
                .count();
            assert_eq!(remembered, w.len());
            assert!(w.len() <= 10);
            assert!(w.len() >= 5.min(id as usize + 1), "{id}: {}", w.len());
            // The newest ids are the ones remembered.
            assert!((id + 1 - w.len() as u128..=id).all(|i| w.reply_of(RequestId(i)).is_some()));
        }
    }

    #[test]
    fn a_stored_window_reads_back_and_goes_on_as_the_original() {
        for n in [0u128, 3, 5, 6, 9, 10, 17] {
            let mut original = RequestWindow::new(10);
            for id in 0..n {
                original.remember(RequestId(id), format!("reply {id}"));
            }
            let bytes = crate::glue::codec::encode(&original).expect("encode");
            let mut restored: RequestWindow<String> =
                crate::glue::codec::decode(&bytes).expect("decode");
            assert_eq!(restored, original, "after {n}");
            for id in n..n + 12 {
                original.remember(RequestId(id), format!("reply {id}"));
                restored.remember(RequestId(id), format!("reply {id}"));
                assert_eq!(restored, original, "after {n}, then {id}");
            }
        }
    }

    #[test]
    fn a_window_stored_whole_by_the_earlier_layout_reads_back() {
        // Before the generations a window held its whole capacity.
        #[derive(Serialize)]
        struct Earlier {
            replies: HashMap<RequestId, u32>,
            order: VecDeque<RequestId>,
            capacity: usize,
        }
        let earlier = Earlier {
            replies: (0..10).map(|i| (RequestId(i), i as u32)).collect(),
            order: (0..10).map(RequestId).collect(),
            capacity: 10,
        };
        let bytes = crate::glue::codec::encode(&earlier).expect("encode");
        let mut restored: RequestWindow<u32> = crate::glue::codec::decode(&bytes).expect("decode");
        assert_eq!(restored.len(), 10);
        assert!((0..10).all(|i| restored.reply_of(RequestId(i)) == Some(&(i as u32))));
        restored.remember(RequestId(10), 10);
        assert_eq!(restored.len(), 6, "the oldest five went at the next id");
        assert_eq!(restored.reply_of(RequestId(4)), None);
        assert_eq!(restored.reply_of(RequestId(5)), Some(&5));
    }
}
