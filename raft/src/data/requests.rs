//! Recently applied request ids of a group, so that a proposal retried
//! across a leader change returns its original result instead of writing
//! twice (the design's "Request ids").
//!
//! Bounded by count: the oldest ids go first. Every replica applies the
//! same entries in the same order, so every replica keeps the same window.
//! A retry older than the window is applied again; the window must cover
//! the longest a client keeps retrying (`WINDOW_REQUESTS_DEFAULT` covers
//! many seconds of the fastest load measured).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;

/// Default number of request ids remembered per group.
pub const WINDOW_REQUESTS_DEFAULT: usize = 100_000;

/// The window of recently applied requests and their replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestWindow<R> {
    replies: HashMap<RequestId, R>,
    order: VecDeque<RequestId>,
    capacity: usize,
}

impl<R: Clone> RequestWindow<R> {
    /// An empty window remembering at most `capacity` (≥ 1) requests.
    pub fn new(capacity: usize) -> RequestWindow<R> {
        RequestWindow {
            replies: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The original reply of `id`, if it was applied recently.
    pub fn reply_of(&self, id: RequestId) -> Option<&R> {
        self.replies.get(&id)
    }

    /// Remembers the reply of a request just applied. An id seen before
    /// keeps its first reply (the caller checks `reply_of` first).
    pub fn remember(&mut self, id: RequestId, reply: R) {
        if self.replies.contains_key(&id) {
            return;
        }
        self.replies.insert(id, reply);
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.replies.remove(&old);
            }
        }
    }

    /// Number of requests remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_its_first_reply_until_it_leaves_the_window() {
        let mut w = RequestWindow::new(3);
        w.remember(RequestId(1), "offsets 0..9");
        w.remember(RequestId(1), "would be a second write");
        assert_eq!(w.reply_of(RequestId(1)), Some(&"offsets 0..9"));
        for id in 2..=4 {
            w.remember(RequestId(id), "other");
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.reply_of(RequestId(1)), None, "the oldest left the window");
        assert_eq!(w.reply_of(RequestId(4)), Some(&"other"));
    }
}
