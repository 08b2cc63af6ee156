//! `GET /metrics`: Prometheus text exposition (version 0.0.4) of this
//! node: HTTP requests and latency by route and status, messages and bytes
//! produced and consumed through this node, per-partition offsets and
//! consumer-group lag on this node's replicas, Raft progress per group,
//! and the WAL's fsync batch sizes and latency; damaged segments found
//! and repaired, and the scrubber's progress.
//!
//! Counters live here (updated by handlers and a route layer); the rest
//! is read from the node when scraped. Label values are bounded: routes
//! are path templates, and partition series stop at
//! `PARTITION_SERIES_MAX` (then `sluice_metrics_truncated` is 1).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use sluice_raft::node::{META_GROUP, NodeMachine};
use sluice_raft::wal::Histogram;
use sluice_raft::{PartitionId, PartitionKey};
use tower::Service;
use tower::layer::{LayerFn, layer_fn};

use crate::http::AppState;

/// Upper bounds of the request latency histogram, in microseconds.
const LATENCY_BOUNDS_US: &[u64] = &[
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000, 30_000_000,
];
/// Most per-partition (and per consumer-group partition) series.
pub const PARTITION_SERIES_MAX: usize = 10_000;

/// One route's latency histogram for a method and status.
type Series = (Method, u16, Histogram);

/// This node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By route template, then method and status (a handful per route,
    /// so a list; no allocation per request once a series exists).
    requests: Mutex<BTreeMap<String, Vec<Series>>>,
    produced_messages: AtomicU64,
    produced_bytes: AtomicU64,
    consumed_messages: AtomicU64,
    consumed_bytes: AtomicU64,
}

impl Metrics {
    /// Counts messages acknowledged to a producer through this node.
    pub fn produced(&self, messages: u64, bytes: u64) {
        self.produced_messages
            .fetch_add(messages, Ordering::Relaxed);
        self.produced_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts messages delivered to a reader through this node.
    pub fn consumed(&self, messages: u64, bytes: u64) {
        self.consumed_messages
            .fetch_add(messages, Ordering::Relaxed);
        self.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one answered request of `route` taking `micros`.
    pub(crate) fn observe(&self, route: &str, method: &Method, status: u16, micros: u64) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let series = match requests.get_mut(route) {
            Some(series) => series,
            None => requests.entry(route.to_string()).or_default(),
        };
        match series
            .iter_mut()
            .find(|(m, s, _)| m == method && *s == status)
        {
            Some((_, _, h)) => h.observe(micros),
            None => {
                let mut h = Histogram::new(LATENCY_BOUNDS_US);
                h.observe(micros);
                series.push((method.clone(), status, h));
            }
        }
    }
}

/// A route layer: times every request that matched a route, into
/// `metrics`. Written out rather than `middleware::from_fn`, which boxes
/// the inner service and the future of every request (with the Hawk
/// layer, about a tenth of the server's CPU per single-message POST).
pub fn track_layer<S>(metrics: Arc<Metrics>) -> LayerFn<impl Fn(S) -> Track<S> + Clone> {
    layer_fn(move |inner| Track {
        inner,
        metrics: Arc::clone(&metrics),
    })
}

/// A route's service, timed (see [`track_layer`]).
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = series_method(request.method());
        Tracked {
            inner: self.inner.call(request),
            seen: Some(Seen {
                route,
                method,
                started: Instant::now(),
                metrics: Arc::clone(&self.metrics),
            }),
        }
    }
}

/// What a request is counted under, kept until its response.
struct Seen {
    route: Option<MatchedPath>,
    method: Method,
    started: Instant,
    metrics: Arc<Metrics>,
}

pin_project_lite::pin_project! {
    /// A request's response, counted when it is ready.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        // Taken when counted: a response is counted once.
        seen: Option<Seen>,
    }
}

impl<F> Future for Tracked<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        if let Some(seen) = this.seen.take() {
            let micros = seen.started.elapsed().as_micros() as u64;
            seen.metrics.observe(
                seen.route.as_ref().map_or("unmatched", MatchedPath::as_str),
                &seen.method,
                response.status().as_u16(),
                micros,
            );
        }
        Poll::Ready(Ok(response))
    }
}

/// The method a request is counted under: an extension method (any
/// token a client sends) counts as `OTHER`, so clients cannot grow the
/// series without bound.
fn series_method(method: &Method) -> Method {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS
        | Method::CONNECT
        | Method::TRACE => method.clone(),
        _ => Method::from_bytes(b"OTHER").unwrap_or(Method::GET),
    }
}

/// `GET /metrics`.
pub async fn endpoint(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&state),
    )
        .into_response()
}

/// The exposition text.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    let m = &state.metrics;
    {
        let requests = m.requests.lock().unwrap_or_else(|p| p.into_inner());
        // Each series' labels, for both families below.
        let series: Vec<(String, &Histogram)> = requests
            .iter()
            .flat_map(|(route, series)| {
                series.iter().map(move |(method, status, h)| {
                    let labels = format!(
                        "route=\"{}\",method=\"{method}\",status=\"{status}\"",
                        escape(route)
                    );
                    (labels, h)
                })
            })
            .collect();
        header(
            &mut out,
            "sluice_http_requests_total",
            "counter",
            "HTTP requests by route, method and status.",
        );
        for (labels, h) in &series {
            let _ = writeln!(out, "sluice_http_requests_total{{{labels}}} {}", h.count());
        }
        header(
            &mut out,
            "sluice_http_request_duration_seconds",
            "histogram",
            "HTTP request latency.",
        );
        for (labels, h) in &series {
            histogram(
                &mut out,
                "sluice_http_request_duration_seconds",
                labels,
                h,
                1e6,
            );
        }
    }
    for (name, help, value) in [
        (
            "sluice_produced_messages_total",
            "Messages acknowledged to producers through this node.",
            &m.produced_messages,
        ),
        (
            "sluice_produced_bytes_total",
            "Body bytes acknowledged to producers through this node.",
            &m.produced_bytes,
        ),
        (
            "sluice_consumed_messages_total",
            "Messages delivered to readers through this node.",
            &m.consumed_messages,
        ),
        (
            "sluice_consumed_bytes_total",
            "Body bytes delivered to readers through this node.",
            &m.consumed_bytes,
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    raft(&mut out, state);
    wal(&mut out, state);
    damage(&mut out, state);
    let truncated = partitions(&mut out, state);
    header(
        &mut out,
        "sluice_metrics_truncated",
        "gauge",
        "1 when partition series were cut at the bound.",
    );
    let _ = writeln!(out, "sluice_metrics_truncated {}", u8::from(truncated));
    out
}

fn raft(out: &mut String, state: &AppState) {
    let node = state.cluster.node();
    let statuses: Vec<_> = node.groups().filter_map(|g| node.status(g)).collect();
    type Field = fn(&sluice_raft::node::GroupStatus) -> u64;
    let fields: [(&str, &str, Field); 4] = [
        ("sluice_raft_term", "The current term.", |s| s.term),
        (
            "sluice_raft_last_log_index",
            "This replica's last log index.",
            |s| s.last_log_index.unwrap_or(0),
        ),
        (
            "sluice_raft_committed_index",
            "The committed index this replica knows.",
            |s| s.committed_index.unwrap_or(0),
        ),
        (
            "sluice_raft_applied_index",
            "This replica's applied index.",
            |s| s.applied_index.unwrap_or(0),
        ),
    ];
    for (name, help, field) in fields {
        header(out, name, "gauge", help);
        for s in &statuses {
            let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", s.group, field(s));
        }
    }
    let name = "sluice_raft_is_leader";
    header(out, name, "gauge", "1 when this node leads the group.");
    for s in &statuses {
        let leads = u8::from(s.leader == Some(node.id()));
        let _ = writeln!(out, "{name}{{group=\"{}\"}} {leads}", s.group);
    }
}

/// The scrubber and the repairs of damaged partition data.
fn damage(out: &mut String, state: &AppState) {
    let fences = state.cluster.node().fences();
    let series = [
        (
            "sluice_damaged_segments",
            "gauge",
            "Partition segments on this node that failed a check and await repair (their partitions are fenced).",
            fences.list().len() as u64,
        ),
        (
            "sluice_damaged_segments_found_total",
            "counter",
            "Damaged partition segments found by reads or the scrubber.",
            fences.found_total(),
        ),
        (
            "sluice_damaged_segments_repaired_total",
            "counter",
            "Damaged partition segments repaired from a peer's copy.",
            fences.repaired_total(),
        ),
        (
            "sluice_scrubbed_bytes_total",
            "counter",
            "Bytes of sealed partition segments the scrubber verified.",
            fences.scrubbed_bytes_total(),
        ),
    ];
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn wal(out: &mut String, state: &AppState) {
    let stats = state.cluster.node().wal().stats();
    header(
        out,
        "sluice_wal_fsync_seconds",
        "histogram",
        "Latency of each group-commit fsync of the node WAL.",
    );
    histogram(
        out,
        "sluice_wal_fsync_seconds",
        "",
        &stats.sync_latency_us,
        1e6,
    );
    header(
        out,
        "sluice_wal_fsync_batch_writes",
        "histogram",
        "Writes made durable by each group-commit fsync.",
    );
    histogram(
        out,
        "sluice_wal_fsync_batch_writes",
        "",
        &stats.batch_size,
        1.0,
    );
    header(
        out,
        "sluice_wal_segments",
        "gauge",
        "Segments in the node WAL.",
    );
    let _ = writeln!(out, "sluice_wal_segments {}", stats.segment_count);
}

/// Per-partition offsets and consumer lag on this node's replicas; says
/// whether series were cut at the bound.
fn partitions(out: &mut String, state: &AppState) -> bool {
    let node = state.cluster.node();
    // Names from this node's meta replica (a scrape needs no quorum).
    let names: BTreeMap<sluice_raft::QueueId, (String, String)> = node
        .machine(META_GROUP)
        .map(|sm| match sm.read().machine() {
            NodeMachine::Meta(meta) => meta
                .state()
                .all_queues()
                .map(|q| (q.id, (q.app.clone(), q.name.clone())))
                .collect(),
            NodeMachine::Data(_) => BTreeMap::new(),
        })
        .unwrap_or_default();
    let mut offsets = String::new();
    let mut lags = String::new();
    let mut series = 0usize;
    let mut truncated = false;
    for group in node.groups().filter(|g| *g != META_GROUP) {
        let Some(sm) = node.machine(group) else {
            continue;
        };
        let hosted = sm.read();
        let NodeMachine::Data(data) = hosted.machine() else {
            continue;
        };
        for (&queue, &count) in data.queues() {
            let Some((app, name)) = names.get(&queue) else {
                continue;
            };
            let labels = format!("app=\"{}\",queue=\"{}\"", escape(app), escape(name));
            let mut ends = Vec::with_capacity(count as usize);
            for p in 0..count {
                let key = PartitionKey {
                    queue,
                    partition: PartitionId(p),
                };
                let Some(part) = data.partition(key) else {
                    continue;
                };
                let log = part.log();
                ends.push(log.next_offset().0);
                series += 1;
                if series > PARTITION_SERIES_MAX {
                    truncated = true;
                    continue;
                }
                let l = format!("{labels},partition=\"{p}\"");
                let _ = writeln!(
                    offsets,
                    "sluice_partition_end_offset{{{l}}} {}",
                    log.next_offset().0
                );
                let _ = writeln!(
                    offsets,
                    "sluice_partition_start_offset{{{l}}} {}",
                    log.start_offset().0
                );
                let _ = writeln!(
                    offsets,
                    "sluice_partition_bytes{{{l}}} {}",
                    log.size_bytes()
                );
            }
            for consumer in data.consumers().names(queue) {
                let Some(view) = data.consumers().view(queue, &consumer) else {
                    continue;
                };
                for (p, end) in ends.iter().enumerate() {
                    series += 1;
                    if series > PARTITION_SERIES_MAX {
                        truncated = true;
                        break;
                    }
                    let committed = view
                        .committed
                        .get(&PartitionId(p as u32))
                        .map_or(0, |o| o.0);
                    let _ = writeln!(
                        lags,
                        "sluice_consumer_group_lag{{{labels},group=\"{}\",partition=\"{p}\"}} {}",
                        escape(&consumer),
                        end.saturating_sub(committed)
                    );
                }
            }
        }
    }
    header(
        out,
        "sluice_partition_end_offset",
        "gauge",
        "One past the last offset of a partition on this replica.",
    );
    header(
        out,
        "sluice_partition_start_offset",
        "gauge",
        "The first offset still in a partition on this replica.",
    );
    header(
        out,
        "sluice_partition_bytes",
        "gauge",
        "Bytes of a partition's log on this replica.",
    );
    out.push_str(&offsets);
    header(
        out,
        "sluice_consumer_group_lag",
        "gauge",
        "Messages between a consumer group's committed offset and the partition end.",
    );
    out.push_str(&lags);
    truncated
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a histogram's buckets, sum and count; dividing by `per_unit`
/// turns its units into the metric's (microseconds to seconds: 1e6).
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram, per_unit: f64) {
    let sep = if labels.is_empty() { "" } else { "," };
    let cumulative = h.cumulative();
    for (bound, count) in h.bounds().iter().zip(&cumulative) {
        let le = *bound as f64 / per_unit;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count()
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum() as f64 / per_unit);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count());
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_share_one_series() {
        assert_eq!(series_method(&Method::POST), Method::POST);
        let custom = Method::from_bytes(b"FROBNICATE").expect("a token");
        assert_eq!(series_method(&custom).as_str(), "OTHER");
    }

    #[test]
    fn histograms_are_cumulative_with_an_infinite_bucket() {
        let mut h = Histogram::new(&[1_000, 10_000]);
        h.observe(500);
        h.observe(20_000);
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "a=\"b\"", &h, 1e6);
        assert_eq!(
            out,
            "x_seconds_bucket{a=\"b\",le=\"0.001\"} 1\n\
             x_seconds_bucket{a=\"b\",le=\"0.01\"} 1\n\
             x_seconds_bucket{a=\"b\",le=\"+Inf\"} 2\n\
             x_seconds_sum{a=\"b\"} 0.0205\n\
             x_seconds_count{a=\"b\"} 2\n"
        );
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
