//! Node-to-node Raft RPC over HTTP: the client half (openraft's
//! `RaftNetworkV2`) and the server half (an axum router).
//!
//! Routes: `POST /raft/{group}/append`, `/vote`, `/snapshot`, `/transfer`
//! (leadership transfer), `/segment` (a pinned snapshot segment, raw
//! bytes back), and for forwarding from non-leaders `/propose` (raw
//! command bytes in), `/read_index` and `/membership`, bincode request bodies (`transport::rpc`), `Authorization: Cluster <secret>`
//! on every request. A response body is the bincode of
//! `Result<response, RaftError>`, so a remote Raft error reaches the caller
//! typed. Every group on a node shares one `reqwest::Client`, whose pool
//! keeps one HTTP/2 connection per peer (prior knowledge, no TLS) with
//! `TCP_NODELAY`, so many groups share one connection per peer.
//!
//! Snapshot data is bytes: Sluice's snapshots are manifests (metadata and
//! the list of partition segments), and the segments travel separately.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::data::fence::{BatchRange, Fences};
use crate::data::snapshot::{PinnedSegment, PinnedSegments, SegmentFetcher};
use crate::glue::TypeConfig;
use crate::glue::cluster::{self, ClusterError, MembershipChange};
use crate::ids::GroupId;
use crate::transport::rpc::{
    ClusterSecret, RPC_BODY_BYTES_MAX, RpcRejection, decode_body, encode_body, parse_group,
};

type C = TypeConfig;

/// Snapshot data as it travels: the manifest's bytes.
pub type SnapshotBytes = Bytes;

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// The HTTP client every group of a node shares.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .no_proxy()
        .build()
}

/// openraft's network factory for one group: makes a connection handle per
/// peer, all over the node's shared client.
#[derive(Clone, Debug)]
pub struct HttpNetwork {
    client: reqwest::Client,
    secret: ClusterSecret,
    group: GroupId,
}

impl HttpNetwork {
    /// The network of `group`, over the node's shared `client`.
    pub fn new(client: reqwest::Client, secret: ClusterSecret, group: GroupId) -> HttpNetwork {
        HttpNetwork {
            client,
            secret,
            group,
        }
    }
}

impl RaftNetworkFactory<C> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, _target: u64, node: &openraft::impls::BasicNode) -> HttpPeer {
        HttpPeer {
            client: self.client.clone(),
            base_url: format!("http://{}/raft/{}", node.addr, self.group.0),
            authorization: self.secret.header_value(),
        }
    }
}

/// One group's RPC handle to one peer.
#[derive(Clone, Debug)]
pub struct HttpPeer {
    client: reqwest::Client,
    base_url: String,
    authorization: String,
}

impl HttpPeer {
    async fn call<Req, Resp>(
        &self,
        rpc: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<C>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = encode_body(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let url = format!("{}/{rpc}", self.base_url);
        let response = self
            .client
            .post(&url)
            .header(header::AUTHORIZATION, &self.authorization)
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(RPCError::Network(NetworkError::from_string(format!(
                "HTTP {status} from {url}: {text}"
            ))));
        }
        let result: Result<Resp, RaftError<C>> =
            decode_body(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // A remote Raft error (the peer is shutting down) means: not
        // reachable for now; openraft backs off and retries.
        result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

impl RaftNetworkV2<C> for HttpPeer {
    type SnapshotData = SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call("append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call("vote", &rpc, &option).await
    }

    /// The leader broadcasts a transfer so that every node drops its
    /// lease on the old leader and the target wins its election at once
    /// (openraft's default is "not implemented", and then a transfer only
    /// happens if the timeouts happen to favour the target).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.call("transfer", &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotBytes>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        // As bytes: the same encoding as the `Vec<u8>` the receiver decodes.
        let request = (
            vote,
            snapshot.meta,
            serde_bytes::Bytes::new(&snapshot.snapshot),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.call("snapshot", &request, &option) => Ok(result?),
        }
    }
}

/// Why a peer's batches could not be copied (the `batches` RPC).
#[derive(Debug, thiserror::Error)]
pub enum BatchCopyError {
    /// This node holds no such partition or range.
    #[error("not here: {0}")]
    NotHere(String),
    /// This node's own copy is fenced (damaged) or could not be read.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Copies verified batches of this node's partitions for repairing peers.
pub trait BatchSource: Send + Sync {
    /// The batches holding exactly `range` of a partition of `group`.
    fn copy(&self, group: GroupId, range: BatchRange) -> Result<Vec<u8>, BatchCopyError>;
}

/// The Raft groups a node hosts, as the RPC server sees them.
pub struct RaftHost<SM: RaftStateMachine<C>> {
    secret: ClusterSecret,
    groups: RwLock<HashMap<GroupId, Raft<C, SM>>>,
    pins: RwLock<HashMap<GroupId, PinnedSegments>>,
    fences: Arc<Fences>,
    batches: RwLock<Option<Arc<dyn BatchSource>>>,
}

impl<SM: RaftStateMachine<C, SnapshotData = SnapshotBytes>> RaftHost<SM> {
    /// A host with no groups yet.
    pub fn new(secret: ClusterSecret) -> Arc<RaftHost<SM>> {
        Arc::new(RaftHost {
            secret,
            groups: RwLock::new(HashMap::new()),
            pins: RwLock::new(HashMap::new()),
            fences: Arc::new(Fences::default()),
            batches: RwLock::new(None),
        })
    }

    /// The fences of this node's damaged partition data: a fenced group
    /// gets no vote or leadership from here, a fenced partition's data is
    /// not sent to peers.
    pub fn fences(&self) -> &Arc<Fences> {
        &self.fences
    }

    /// Serves the `batches` RPC (repairs) from `source`.
    pub fn set_batch_source(&self, source: Arc<dyn BatchSource>) {
        *self.batches.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    fn batch_source(&self) -> Option<Arc<dyn BatchSource>> {
        self.batches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves the pinned snapshot segments of `group` to fetching peers.
    pub fn insert_pins(&self, group: GroupId, pins: PinnedSegments) {
        self.pins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, pins);
    }

    fn pins(&self, group: GroupId) -> Option<PinnedSegments> {
        self.pins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// Serves RPCs for `group` with `raft`.
    pub fn insert(&self, group: GroupId, raft: Raft<C, SM>) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, raft);
    }

    fn raft(&self, group: GroupId) -> Option<Raft<C, SM>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// The axum routes for `/raft/{group}/{rpc}`.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/raft/{group}/{rpc}", post(handle::<SM>))
            .layer(DefaultBodyLimit::max(RPC_BODY_BYTES_MAX))
            .with_state(self)
    }
}

fn rejection(r: RpcRejection) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, r.to_string()).into_response()
}

fn reply<T: Serialize>(value: &T) -> Response {
    match encode_body(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn handle<SM: RaftStateMachine<C, SnapshotData = SnapshotBytes>>(
    State(host): State<Arc<RaftHost<SM>>>,
    Path((group, rpc)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The secret first: an unauthenticated caller learns nothing else.
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(r) = host.secret.check_header(auth) {
        return rejection(r);
    }
    let (group_id, raft) = match parse_group(&group, |g| host.raft(g).is_some()) {
        Ok(g) => match host.raft(g) {
            Some(raft) => (g, raft),
            None => return rejection(RpcRejection::UnknownGroup(group)),
        },
        Err(r) => return rejection(r),
    };
    // A replica with damaged data must not help decide what its group
    // holds: no vote, no leadership (data/fence.rs).
    let fenced = || {
        let why = format!(
            "this replica of group {} is fenced: repairing damaged data",
            group_id.0
        );
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    };
    if matches!(rpc.as_str(), "vote" | "transfer") && host.fences.is_group_fenced(group_id) {
        return fenced();
    }
    match rpc.as_str() {
        "append" => match decode_body::<AppendEntriesRequest<C>>(&body) {
            Ok(req) => reply(&raft.append_entries(req).await),
            Err(r) => rejection(r),
        },
        "vote" => match decode_body::<VoteRequest<C>>(&body) {
            Ok(req) => reply(&raft.vote(req).await),
            Err(r) => rejection(r),
        },
        "snapshot" => match decode_body::<(VoteOf<C>, SnapshotMetaOf<C>, Vec<u8>)>(&body) {
            Ok((vote, meta, data)) => {
                let snapshot = SnapshotOf::<C, SnapshotBytes> {
                    meta,
                    snapshot: Bytes::from(data),
                };
                let result: Result<SnapshotResponse<C>, RaftError<C>> = raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(RaftError::Fatal);
                reply(&result)
            }
            Err(r) => rejection(r),
        },
        "transfer" => match decode_body::<TransferLeaderRequest<C>>(&body) {
            Ok(req) => {
                let result: Result<TransferLeaderResponse<C>, RaftError<C>> = raft
                    .handle_transfer_leader(req)
                    .await
                    .map_err(RaftError::Fatal);
                reply(&result)
            }
            Err(r) => rejection(r),
        },
        // Forwarding: a node that does not lead the group proposes through
        // the leader (the body is the encoded command) ...
        "propose" => reply(&cluster::propose(&raft, body).await),
        // ... and asks it for a read index before a linearizable read.
        "read_index" => reply(&cluster::read_index(&raft).await),
        // ... and membership changes, which only a leader can make.
        "membership" => match decode_body::<MembershipChange>(&body) {
            Ok(change) => reply(&cluster::change(&raft, change).await),
            Err(r) => rejection(r),
        },
        "segment" => match decode_body::<PinnedSegment>(&body) {
            Ok(segment) if host.fences.is_fenced(group_id, segment.key) => fenced(),
            Ok(segment) => {
                let Some(pins) = host.pins(group_id) else {
                    return rejection(RpcRejection::UnknownGroup(group));
                };
                let read = tokio::task::spawn_blocking(move || pins.read(segment)).await;
                match read {
                    Ok(Ok(bytes)) => (StatusCode::OK, bytes).into_response(),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        (StatusCode::GONE, e.to_string()).into_response()
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        (StatusCode::BAD_REQUEST, e.to_string()).into_response()
                    }
                    Ok(Err(e)) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
            Err(r) => rejection(r),
        },
        "batches" => match decode_body::<BatchRange>(&body) {
            Ok(range) => {
                let Some(source) = host.batch_source() else {
                    return rejection(RpcRejection::UnknownGroup(group));
                };
                let copied =
                    tokio::task::spawn_blocking(move || source.copy(group_id, range)).await;
                match copied {
                    Ok(Ok(bytes)) => (StatusCode::OK, bytes).into_response(),
                    Ok(Err(e @ BatchCopyError::NotHere(_))) => {
                        (StatusCode::NOT_FOUND, e.to_string()).into_response()
                    }
                    Ok(Err(e @ BatchCopyError::Unavailable(_))) => {
                        (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
            Err(r) => rejection(r),
        },
        _ => (
            StatusCode::NOT_FOUND,
            format!("unknown RPC {:?}", rpc.chars().take(32).collect::<String>()),
        )
            .into_response(),
    }
}

/// Longest a segment fetch may take (a 1 GiB segment at ~20 MB/s).
const SEGMENT_FETCH_TIMEOUT_MS: u64 = 60_000;

/// Fetches snapshot segments from peers over the node's HTTP client, for
/// a state machine installing a snapshot (called from a blocking thread).
#[derive(Debug, Clone)]
pub struct HttpSegmentFetcher {
    client: reqwest::Client,
    secret: ClusterSecret,
    runtime: tokio::runtime::Handle,
}

impl HttpSegmentFetcher {
    /// A fetcher over `client`, running its requests on `runtime`.
    pub fn new(
        client: reqwest::Client,
        secret: ClusterSecret,
        runtime: tokio::runtime::Handle,
    ) -> HttpSegmentFetcher {
        HttpSegmentFetcher {
            client,
            secret,
            runtime,
        }
    }
}

impl SegmentFetcher for HttpSegmentFetcher {
    fn fetch(
        &self,
        source: &str,
        group: GroupId,
        segment: PinnedSegment,
    ) -> std::io::Result<Vec<u8>> {
        let body = encode_body(&segment).map_err(std::io::Error::other)?;
        let url = format!("http://{source}/raft/{}/segment", group.0);
        self.runtime.block_on(async {
            let response = self
                .client
                .post(&url)
                .header(header::AUTHORIZATION, self.secret.header_value())
                .timeout(Duration::from_millis(SEGMENT_FETCH_TIMEOUT_MS))
                .body(body)
                .send()
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(std::io::Error::other)?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                return Err(std::io::Error::other(format!(
                    "HTTP {status} from {url}: {text}"
                )));
            }
            Ok(bytes.to_vec())
        })
    }
}

/// Calls the forwarding RPCs (`/propose`, `/read_index`) of a group's
/// leader, for a node that does not lead it.
#[derive(Debug, Clone)]
pub struct LeaderClient {
    client: reqwest::Client,
    secret: ClusterSecret,
}

/// A forwarded call that did not get an answer (the peer is unreachable,
/// timed out or answered with an HTTP error); safe to retry, since every
/// proposal carries a request id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("forwarding to {addr}: {reason}")]
pub struct ForwardFailed {
    /// The peer's address.
    pub addr: String,
    /// What went wrong.
    pub reason: String,
}

impl LeaderClient {
    /// A client over the node's shared HTTP `client`.
    pub fn new(client: reqwest::Client, secret: ClusterSecret) -> LeaderClient {
        LeaderClient { client, secret }
    }

    /// Proposes encoded `command` through the leader at `addr`.
    pub async fn propose(
        &self,
        addr: &str,
        group: GroupId,
        command: Bytes,
        timeout: Duration,
    ) -> Result<Result<Vec<u8>, ClusterError>, ForwardFailed> {
        self.call(addr, group, "propose", command, timeout).await
    }

    /// Asks the leader at `addr` for a read index.
    pub async fn read_index(
        &self,
        addr: &str,
        group: GroupId,
        timeout: Duration,
    ) -> Result<Result<u64, ClusterError>, ForwardFailed> {
        self.call(addr, group, "read_index", Vec::new(), timeout)
            .await
    }

    /// Asks the leader at `addr` to make a membership change.
    pub async fn membership(
        &self,
        addr: &str,
        group: GroupId,
        change: &MembershipChange,
        timeout: Duration,
    ) -> Result<Result<(), ClusterError>, ForwardFailed> {
        let body = encode_body(change).map_err(|e| ForwardFailed {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        self.call(addr, group, "membership", body, timeout).await
    }

    /// Asks the peer at `addr` for its verified batches of `range`, to
    /// repair this node's damaged copy.
    pub async fn batches(
        &self,
        addr: &str,
        group: GroupId,
        range: &BatchRange,
        timeout: Duration,
    ) -> Result<Bytes, ForwardFailed> {
        let body = encode_body(range).map_err(|e| ForwardFailed {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        self.send(addr, group, "batches", body, timeout).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        addr: &str,
        group: GroupId,
        rpc: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Result<T, ClusterError>, ForwardFailed> {
        let bytes = self.send(addr, group, rpc, body, timeout).await?;
        decode_body(&bytes).map_err(|e| ForwardFailed {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    /// One RPC; its answer's body when the status is a success.
    async fn send(
        &self,
        addr: &str,
        group: GroupId,
        rpc: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, ForwardFailed> {
        let failed = |reason: String| ForwardFailed {
            addr: addr.to_string(),
            reason,
        };
        let url = format!("http://{addr}/raft/{}/{rpc}", group.0);
        let response = self
            .client
            .post(&url)
            .header(header::AUTHORIZATION, self.secret.header_value())
            .timeout(timeout)
            .body(body.into())
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(failed(format!("HTTP {status}: {text}")));
        }
        Ok(bytes)
    }
}
