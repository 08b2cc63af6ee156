//! Coalescing linearizable reads of one group into rounds.
//!
//! A linearizable read needs a read index from the leader (a trip
//! through its Raft core, and a quorum heartbeat when it has peers) and
//! an apply wait. Under load every request made its own; now concurrent
//! reads share one. The invariant that keeps this linearizable: **a read
//! is answered only by a round that began after the read arrived.** A
//! read that arrives while a round runs waits for that round to end and
//! joins the next one, with every other read that arrived meanwhile; one
//! of them leads it (runs it) and hands the answer to the rest.
//!
//! The leader is a waiting request's own task, not a spawned one, so a
//! round borrows the node. The lead travels as a `Baton`: whoever holds it
//! runs the next round, and dropping it, whether the round finished, its
//! task was cancelled (its client went away), or it was lost in a channel
//! whose reader was cancelled before reading, hands the lead on to the
//! reads still waiting. Reads of a round whose leader was cancelled are
//! told nothing and each runs a round of its own.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// One group's rounds of reads, answering `T`.
#[derive(Debug)]
pub(crate) struct ReadRounds<T: Clone> {
    state: Mutex<Rounds<T>>,
}

#[derive(Debug)]
struct Rounds<T: Clone> {
    /// Whether some read holds the baton (and so a read arriving waits).
    running: bool,
    /// Reads that arrived while the current round ran.
    waiting: Vec<oneshot::Sender<Turn<T>>>,
}

/// What a waiting read is told.
#[derive(Debug)]
enum Turn<T: Clone> {
    /// The answer of a round that began after it arrived.
    Answer(T),
    /// Run the next round, and answer the baton's reads with it.
    Lead(Baton<T>),
}

/// The right to run the next round, and the reads it answers. Dropped
/// while `armed`, it hands the lead on; the reads left in `batch` learn
/// nothing (their receivers fail) and run their own round.
#[derive(Debug)]
struct Baton<T: Clone> {
    rounds: Arc<ReadRounds<T>>,
    batch: Vec<oneshot::Sender<Turn<T>>>,
    armed: bool,
}

impl<T: Clone> Drop for Baton<T> {
    fn drop(&mut self) {
        if self.armed {
            ReadRounds::hand_off(&self.rounds);
        }
    }
}

impl<T: Clone> ReadRounds<T> {
    /// No round running.
    pub(crate) fn new() -> ReadRounds<T> {
        ReadRounds {
            state: Mutex::new(Rounds {
                running: false,
                waiting: Vec::new(),
            }),
        }
    }

    /// Answers with `round()`'s value from a round that began after this
    /// call did: this call's own, or a concurrent caller's.
    pub(crate) async fn read<F, Fut>(self: &Arc<Self>, round: F) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        let waiting = {
            let mut state = self.lock();
            if state.running {
                let (tx, rx) = oneshot::channel();
                state.waiting.push(tx);
                Some(rx)
            } else {
                state.running = true;
                None
            }
        };
        let mut baton = match waiting {
            None => Baton {
                rounds: Arc::clone(self),
                batch: Vec::new(),
                armed: true,
            },
            Some(rx) => match rx.await {
                Ok(Turn::Answer(value)) => return value,
                Ok(Turn::Lead(baton)) => baton,
                // The round's leader was cancelled before it answered.
                Err(_) => return round().await,
            },
        };
        let value = round().await;
        for read in baton.batch.drain(..) {
            // A read whose caller went away has nobody to tell.
            let _ = read.send(Turn::Answer(value.clone()));
        }
        drop(baton);
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Passes the lead to one of the reads that arrived during the round
    /// that just ended, with the others as its batch; or, with none,
    /// marks no round running. The lock is not held while sending, so a
    /// baton coming back (its reader gone) is taken apart without it, and
    /// reads arriving meanwhile are found on the next turn of the loop.
    fn hand_off(this: &Arc<Self>) {
        loop {
            let mut waiting = {
                let mut state = this.lock();
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            while let Some(next) = waiting.pop() {
                let baton = Baton {
                    rounds: Arc::clone(this),
                    batch: waiting,
                    armed: true,
                };
                match next.send(Turn::Lead(baton)) {
                    Ok(()) => return,
                    // That read's caller went away: take the batch back
                    // and try the next.
                    Err(Turn::Lead(mut back)) => {
                        back.armed = false;
                        waiting = std::mem::take(&mut back.batch);
                    }
                    Err(Turn::Answer(_)) => waiting = Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// A round that reads a counter when it begins and ends when told.
    struct Source {
        begun: AtomicU64,
        writes: AtomicU64,
        release: Notify,
    }

    impl Source {
        async fn round(&self) -> u64 {
            self.begun.fetch_add(1, Ordering::SeqCst);
            let seen = self.writes.load(Ordering::SeqCst);
            self.release.notified().await;
            seen
        }
    }

    fn source() -> Arc<Source> {
        Arc::new(Source {
            begun: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            release: Notify::new(),
        })
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn reads_arriving_during_a_round_share_the_next_and_see_what_came_before_them() {
        let rounds = Arc::new(ReadRounds::new());
        let src = source();
        let first = {
            let (rounds, src) = (Arc::clone(&rounds), Arc::clone(&src));
            tokio::spawn(async move { rounds.read(|| src.round()).await })
        };
        until(|| src.begun.load(Ordering::SeqCst) == 1).await;
        // A write completes after the first round began: reads arriving
        // now must not be answered by that round.
        src.writes.store(1, Ordering::SeqCst);
        let later: Vec<_> = (0..5)
            .map(|_| {
                let (rounds, src) = (Arc::clone(&rounds), Arc::clone(&src));
                tokio::spawn(async move { rounds.read(|| src.round()).await })
            })
            .collect();
        until(|| rounds.lock().waiting.len() == 5).await;
        src.release.notify_one();
        assert_eq!(first.await.expect("first"), 0);
        until(|| src.begun.load(Ordering::SeqCst) == 2).await;
        src.release.notify_one();
        for read in later {
            assert_eq!(read.await.expect("later"), 1);
        }
        assert_eq!(src.begun.load(Ordering::SeqCst), 2, "five reads, one round");
        assert!(!rounds.lock().running);
    }

    #[test]
    fn a_baton_lost_with_its_reader_passes_to_the_next_read() {
        let rounds: Arc<ReadRounds<u64>> = Arc::new(ReadRounds::new());
        let (first_tx, first_rx) = oneshot::channel();
        {
            let mut state = rounds.lock();
            state.running = true;
            state.waiting.push(first_tx);
        }
        ReadRounds::hand_off(&rounds);
        // A read arrives while the first waiter holds the baton unread...
        let (second_tx, mut second_rx) = oneshot::channel();
        rounds.lock().waiting.push(second_tx);
        // ...and the first waiter's task is cancelled before it reads it.
        drop(first_rx);
        match second_rx.try_recv() {
            Ok(Turn::Lead(baton)) => {
                assert!(baton.batch.is_empty());
                assert!(rounds.lock().running, "the second read leads now");
                drop(baton);
            }
            other => panic!("the lead was not handed on: {other:?}"),
        }
        assert!(!rounds.lock().running, "nobody waits: no round runs");
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_on_and_its_batch_reads_again() {
        let rounds = Arc::new(ReadRounds::new());
        let src = source();
        let spawn_read = || {
            let (rounds, src) = (Arc::clone(&rounds), Arc::clone(&src));
            tokio::spawn(async move { rounds.read(|| src.round()).await })
        };
        let first = spawn_read();
        until(|| src.begun.load(Ordering::SeqCst) == 1).await;
        let second = spawn_read();
        until(|| rounds.lock().waiting.len() == 1).await;
        src.release.notify_one();
        assert_eq!(first.await.expect("first"), 0);
        // `second` now leads round 2; a third read waits behind it.
        until(|| src.begun.load(Ordering::SeqCst) == 2).await;
        let third = spawn_read();
        until(|| rounds.lock().waiting.len() == 1).await;
        second.abort();
        assert!(second.await.is_err(), "cancelled");
        // The third read leads the next round itself.
        until(|| src.begun.load(Ordering::SeqCst) == 3).await;
        src.writes.store(7, Ordering::SeqCst);
        src.release.notify_one();
        assert_eq!(third.await.expect("third"), 0);
        assert!(!rounds.lock().running);
        assert!(rounds.lock().waiting.is_empty());
    }
}
