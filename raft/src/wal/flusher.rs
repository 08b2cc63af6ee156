//! Group commit: one thread turns every write pending from every group into
//! one `fdatasync` per round, then completes the writers' callbacks.
//!
//! Ordering (each step is what makes the next safe):
//! 1. A writer appends its records to the engine log and queues its callback
//!    under the same lock, so the queue order is the append order.
//! 2. The flusher, under the lock, takes a flush ticket (it covers every
//!    record appended so far) and every queued callback: all of them are
//!    covered by this ticket.
//! 3. It runs the fsync without the lock; writers keep appending, and their
//!    callbacks wait for the next round. This is where batching comes from.
//! 4. Under the lock it completes the ticket (raising the durable offset, or
//!    poisoning the log if the fsync failed), then, without the lock, calls
//!    the round's callbacks in FIFO order with the outcome.
//!
//! openraft bug #2118 (a new leader may treat unflushed IO as flushed) bites
//! stores whose `save_vote` returns while earlier appends are still
//! unflushed. Here it cannot: `save_vote` queues its callback behind every
//! earlier append and waits for it, and a round flushes the whole log, so
//! when the vote is durable every earlier entry is too.

use std::io;
use std::sync::Arc;

use crate::wal::{Shared, WalState};

/// Completes a write once it is durable (`Ok`) or can never be (`Err`).
pub type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Runs flush rounds until the WAL is closed and nothing is pending.
pub(crate) fn run(shared: Arc<Shared>) {
    loop {
        let (ticket, callbacks) = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closed {
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.pending.is_empty() {
                return; // closed, and nothing left to flush
            }
            let callbacks: Vec<FlushCallback> = state.pending.drain(..).collect();
            match state.log.flush_ticket() {
                Ok(ticket) => (ticket, callbacks),
                Err(e) => {
                    let message = e.to_string();
                    drop(state);
                    fail_all(callbacks, &message);
                    continue;
                }
            }
        };
        let started = std::time::Instant::now();
        let result = ticket.sync();
        let took_us = started.elapsed().as_micros() as u64;
        let outcome = {
            let mut state: std::sync::MutexGuard<'_, WalState> = shared.lock();
            state.stats.flush_rounds += 1;
            state.stats.flushed_writes += callbacks.len() as u64;
            state.stats.sync_latency_us.observe(took_us);
            state.stats.batch_size.observe(callbacks.len() as u64);
            state.log.complete_flush(ticket, result)
        };
        match outcome {
            Ok(_) => callbacks.into_iter().for_each(|cb| cb(Ok(()))),
            Err(e) => {
                tracing::error!(error = %e, "WAL fsync failed; the WAL refuses writes until reopened");
                fail_all(callbacks, &e.to_string());
            }
        }
    }
}

fn fail_all(callbacks: Vec<FlushCallback>, message: &str) {
    for cb in callbacks {
        cb(Err(io::Error::other(format!(
            "WAL flush failed: {message}"
        ))));
    }
}
