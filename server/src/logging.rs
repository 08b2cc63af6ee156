//! Logging to stderr: human-readable or JSON lines, filtered by `RUST_LOG`
//! (default `info`, openraft's own at `warn`).
//!
//! Under the default filter, openraft's notices that it ignored a stale
//! internal message ("A message will be ignored because …") are dropped.
//! openraft logs them at `warn`, but they mean the protocol worked: a
//! reply or I/O completion sent under a vote the node has since replaced
//! is discarded, as Raft requires. A first `sluice serve` printed three of
//! them while its groups elected themselves, which reads as trouble to a
//! newcomer. With `RUST_LOG` set, everything it selects is shown.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter when `RUST_LOG` is unset or invalid.
const DEFAULT_FILTER: &str = "info,openraft=warn";
/// The start of the notices `QuietStaleMessages` drops.
const STALE_NOTICE_PREFIX: &str = "A message will be ignored because";

/// Installs the process's logger.
pub fn init(json: bool) {
    let (filter, quiet) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(_) => (
            tracing_subscriber::EnvFilter::new(DEFAULT_FILTER),
            Some(QuietStaleMessages),
        ),
    };
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = if json {
        output.json().boxed()
    } else {
        output.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(quiet)
        .with(output)
        .init();
}

/// Drops openraft's "stale message ignored" notices (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct QuietStaleMessages;

impl<S: Subscriber> Layer<S> for QuietStaleMessages {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || !meta.target().starts_with("openraft::") {
            return true;
        }
        let mut message = MessageStart::default();
        event.record(&mut message);
        !message.is_stale_notice
    }
}

/// Whether an event's `message` field starts with `STALE_NOTICE_PREFIX`.
#[derive(Default)]
struct MessageStart {
    is_stale_notice: bool,
}

impl Visit for MessageStart {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.is_stale_notice = value.starts_with(STALE_NOTICE_PREFIX);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // A message is formatted arguments; only its start matters.
            let mut start = Prefix::default();
            let _ = fmt::write(&mut start, format_args!("{value:?}"));
            self.is_stale_notice = start.text == STALE_NOTICE_PREFIX;
        }
    }
}

/// Keeps the first `STALE_NOTICE_PREFIX.len()` bytes written to it.
#[derive(Default)]
struct Prefix {
    text: String,
}

impl fmt::Write for Prefix {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = STALE_NOTICE_PREFIX.len().saturating_sub(self.text.len());
        if room == 0 {
            // Stops formatting the rest of a long message.
            return Err(fmt::Error);
        }
        let take = s
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take_while(|&end| end <= room)
            .last()
            .unwrap_or(0);
        self.text.push_str(&s[..take]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn shown(emit: impl FnOnce()) -> usize {
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(QuietStaleMessages)
            .with(Count(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, emit);
        seen.load(Ordering::SeqCst)
    }

    #[test]
    fn openraft_stale_message_notices_are_dropped() {
        let vote = "<T0-N1:Q>";
        assert_eq!(
            shown(|| tracing::warn!(
                target: "openraft::core::raft_core",
                "A message will be ignored because Leader vote changed: msg sent by vote: {}; when (LocalIO Notification)",
                vote
            )),
            0
        );
        assert_eq!(
            shown(|| tracing::warn!(
                target: "openraft::core::raft_core",
                "A message will be ignored because this node is no longer Candidate"
            )),
            0
        );
    }

    #[test]
    fn other_warnings_and_other_crates_pass() {
        let target = "2";
        assert_eq!(
            shown(|| tracing::warn!(
                target: "openraft::core::raft_core",
                "timeout while requesting vote: {}",
                target
            )),
            1
        );
        assert_eq!(
            shown(|| tracing::warn!(
                target: "sluice_server::startup",
                "A message will be ignored because Leader vote changed"
            )),
            1
        );
        assert_eq!(
            shown(|| tracing::error!(
                target: "openraft::core::raft_core",
                "A message will be ignored because Leader vote changed"
            )),
            1
        );
    }
}
