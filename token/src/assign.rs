//! Which data group ("node") serves each token user, as the meta group's
//! state machine keeps it (`token.md`, "Assignment"). Pure and
//! deterministic: time comes in with each command, and every replica
//! applying the same commands reaches the same state. Allocation is one
//! command, so concurrent first logins can never overfill a node.
//!
//! The allocation score `ln(load) / ln(capacity)` is an `f64`: IEEE-754
//! `ln` is not bit-for-bit specified, so replicas must run the same build
//! (they do: a cluster runs one `sluice` release). Ties, and equal scores,
//! fall to the lowest group number.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default share of a node's capacity released at a time: 10 %.
pub const RELEASE_RATE_PERMILLE_DEFAULT: u32 = 100;
/// Most nodes per service.
pub const NODES_MAX: usize = 4_096;
/// Most rows one user keeps (older replaced rows are dropped first).
pub const ROWS_PER_USER_MAX: usize = 32;
/// Longest email, in bytes.
pub const EMAIL_BYTES_MAX: usize = 256;
/// Most buckets of a bucketed service.
pub const BUCKETS_MAX: u32 = 65_536;

/// How a service spreads new users over its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// The least-loaded node, with slow capacity release (the originals').
    LeastLoaded,
    /// Users hash into `buckets` buckets and each bucket maps to a node:
    /// placement is predictable, and moving a bucket moves its users.
    Bucketed {
        /// How many buckets (1..=`BUCKETS_MAX`).
        buckets: u32,
    },
}

/// Bucketed services' maps: service → node URL of each bucket. Kept apart
/// from the rest of [`Assignments`] in checkpoints (it came later), so it
/// is read and restored through `bucket_maps` / `set_bucket_maps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMaps(BTreeMap<String, Vec<String>>);

/// The bucket of a user: FNV-1a (64-bit) of the email, modulo `buckets`.
/// Stable across builds and platforms, as every replica must agree.
pub fn bucket_of(email: &str, buckets: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in email.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % buckets.max(1) as u64) as usize
}

/// A node: one data group of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Users it may hold.
    pub capacity: u32,
    /// Users it holds.
    pub current_load: u32,
    /// New users it may take before capacity is released again.
    pub available: u32,
    /// Out of service: takes nobody, and its users move on next login.
    pub downed: bool,
    /// Temporarily takes no new users.
    pub backoff: bool,
}

/// One assignment of a user (a user may have several; see `current`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The uid tokens carry.
    pub uid: u64,
    /// The node's URL.
    pub node: String,
    /// The identity's generation (0 when unknown).
    pub generation: u64,
    /// When the identity's keys last changed, once known.
    pub keys_changed_at: Option<u64>,
    /// Hex client state ("" when none).
    pub client_state: String,
    /// When the row was made, unix ms.
    pub created_at_ms: u64,
    /// When it was replaced, unix ms.
    pub replaced_at_ms: Option<u64>,
}

/// What a login presents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// `{app}-{version}`.
    pub service: String,
    /// `<user>@<domain>`.
    pub email: String,
    /// The verifier's generation, when it gave one.
    pub generation: Option<u64>,
    /// From `X-KeyID`, when sent.
    pub keys_changed_at: Option<u64>,
    /// From `X-Client-State` or `X-KeyID` ("" when neither).
    pub client_state: String,
    /// Unix ms of the login.
    pub now_ms: u64,
    /// Whether the issuer is under its new-user cap (the edge decides; a
    /// returning user is never capped).
    pub may_create: bool,
}

/// Why a login was refused (the spec's error rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refused {
    /// `invalid-generation`.
    #[error("generation older than stored")]
    Generation,
    /// `invalid-keysChangedAt`.
    #[error("keys_changed_at regressed or missing")]
    KeysChangedAt,
    /// `invalid-client-state`, with the spec's description suffix.
    #[error("Unacceptable client-state value {0}")]
    ClientState(String),
    /// `new-users-disabled`.
    #[error("New users are not allowed")]
    NewUsersDisabled,
    /// The edge's new-user cap (429).
    #[error("Too many requests")]
    NewUserCap,
    /// No node can take the user, even after releasing capacity (503).
    #[error("No capacity")]
    NoCapacity,
    /// An input over a bound, or an unknown service or node.
    #[error("{0}")]
    Invalid(String),
}

/// The commands that change assignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A token request: find or make the user's current row.
    Login(Login),
    /// Adds a node, or changes what is given of an existing one.
    SetNode {
        /// The service.
        service: String,
        /// The node's URL.
        url: String,
        /// New capacity.
        capacity: Option<u32>,
        /// New available count.
        available: Option<u32>,
        /// New load.
        current_load: Option<u32>,
        /// Downed or not.
        downed: Option<bool>,
        /// Backoff or not.
        backoff: Option<bool>,
    },
    /// Marks every user of a node replaced: they move on next login.
    UnassignNode {
        /// The service.
        service: String,
        /// The node's URL.
        url: String,
        /// Unix ms.
        now_ms: u64,
    },
    /// Removes a node (its users are unassigned first).
    RemoveNode {
        /// The service.
        service: String,
        /// The node's URL.
        url: String,
        /// Unix ms.
        now_ms: u64,
    },
    /// Places a user on `node` (or where the policy says), with a new uid;
    /// the user's older rows are replaced. Keeps the current row's
    /// generation and client state, so the identity rules hold.
    AllocateUser {
        /// The service.
        service: String,
        /// `<user>@<domain>`.
        email: String,
        /// The node's URL; `None` lets the policy choose.
        node: Option<String>,
        /// Unix ms.
        now_ms: u64,
    },
    /// Allows or refuses new users.
    AllowNewUsers(bool),
    /// Sets the share of a node's capacity released at a time, in ‰
    /// (clamped to 1..=1000).
    SetReleaseRate(u32),
    /// Sets a service's policy; switching to buckets maps them round-robin
    /// over the service's nodes that are not downed, in URL order. Users
    /// keep their nodes; only new placements follow the policy.
    SetPolicy {
        /// The service.
        service: String,
        /// The policy.
        policy: Policy,
    },
    /// Maps a bucket to a node, and marks that bucket's users on other
    /// nodes replaced: they move on their next login.
    MoveBucket {
        /// The service.
        service: String,
        /// The bucket (0-based).
        bucket: u32,
        /// The node's URL.
        url: String,
        /// Unix ms.
        now_ms: u64,
    },
    /// Forgets rows replaced before `before_ms`, freeing their slots.
    Purge {
        /// The service.
        service: String,
        /// Rows replaced before this are purged.
        before_ms: u64,
    },
}

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The user's current row after a login.
    Assigned(Row),
    /// A node's state after a change.
    Node(Node),
    /// Rows changed (unassigned or purged): (uid, node) of each.
    Rows(Vec<(u64, String)>),
    /// A service's bucket map (empty: least-loaded).
    Buckets(Vec<String>),
    /// Done.
    Done,
    /// Refused; nothing changed.
    Refused(Refused),
}

/// Every service's nodes and users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    nodes: BTreeMap<(String, String), Node>,
    users: BTreeMap<(String, String), Vec<Row>>,
    next_uid: u64,
    allow_new_users: bool,
    release_rate_permille: u32,
    /// Checkpointed on its own (see [`BucketMaps`]).
    #[serde(skip)]
    buckets: BucketMaps,
}

impl Default for Assignments {
    fn default() -> Self {
        Assignments::new(RELEASE_RATE_PERMILLE_DEFAULT)
    }
}

impl Assignments {
    /// Empty, releasing `release_rate_permille` ‰ of a node's capacity at
    /// a time (1..=1000).
    pub fn new(release_rate_permille: u32) -> Assignments {
        Assignments {
            nodes: BTreeMap::new(),
            users: BTreeMap::new(),
            next_uid: 1,
            allow_new_users: true,
            release_rate_permille: release_rate_permille.clamp(1, 1_000),
            buckets: BucketMaps::default(),
        }
    }

    /// A node, if it exists.
    pub fn node(&self, service: &str, url: &str) -> Option<&Node> {
        self.nodes.get(&(service.to_string(), url.to_string()))
    }

    /// Whether `url` is a node of any service (tokens for other nodes are
    /// not accepted here).
    pub fn serves(&self, url: &str) -> bool {
        self.nodes.keys().any(|(_, u)| u == url)
    }

    /// The node of the current row with `uid`, if any (a scan: queue
    /// creation asks, not the request path).
    pub fn node_of_uid(&self, uid: u64) -> Option<&str> {
        self.users
            .values()
            .flat_map(|rows| rows.iter())
            .find(|r| r.uid == uid && r.replaced_at_ms.is_none())
            .map(|r| r.node.as_str())
    }

    /// The share of a node's capacity released at a time, in ‰.
    pub fn release_rate_permille(&self) -> u32 {
        self.release_rate_permille
    }

    /// Every bucketed service's map, for checkpoints.
    pub fn bucket_maps(&self) -> &BucketMaps {
        &self.buckets
    }

    /// Restores the bucket maps from a checkpoint.
    pub fn set_bucket_maps(&mut self, maps: BucketMaps) {
        self.buckets = maps;
    }

    /// A service's bucket map (node URL per bucket), if it is bucketed.
    pub fn buckets(&self, service: &str) -> Option<&[String]> {
        self.buckets.0.get(service).map(Vec::as_slice)
    }

    /// Whether users not seen before may be assigned (the operators'
    /// switch).
    pub fn allows_new_users(&self) -> bool {
        self.allow_new_users
    }

    /// The rows of a user, oldest first.
    pub fn rows(&self, service: &str, email: &str) -> &[Row] {
        self.users
            .get(&(service.to_string(), email.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// Users with a current (not replaced) row on `service`.
    pub fn count_users(&self, service: &str) -> usize {
        self.users
            .iter()
            .filter(|((s, _), rows)| {
                s == service && current(rows).is_some_and(|r| r.replaced_at_ms.is_none())
            })
            .count()
    }

    /// The row a login would get if applying it would change nothing: a
    /// returning user on a live node, with the same client state and no
    /// newer generation or keys_changed_at. Such logins need no Raft
    /// command (the token endpoint answers them from a read).
    pub fn unchanged_login(&self, login: &Login) -> Option<Row> {
        let rows = self.rows(&login.service, &login.email);
        let user = current(rows)?;
        let node_live = self
            .node(&login.service, &user.node)
            .is_some_and(|n| !n.downed);
        let unchanged = node_live
            && user.replaced_at_ms.is_none()
            && login.client_state == user.client_state
            && login.generation.is_none_or(|g| g == user.generation)
            && login.keys_changed_at == user.keys_changed_at;
        unchanged.then(|| user.clone())
    }

    /// Applies a command.
    pub fn apply(&mut self, command: Command) -> Reply {
        match command {
            Command::Login(login) => match self.login(login) {
                Ok(row) => Reply::Assigned(row),
                Err(refused) => Reply::Refused(refused),
            },
            Command::SetNode {
                service,
                url,
                capacity,
                available,
                current_load,
                downed,
                backoff,
            } => {
                let key = (service, url);
                if !self.nodes.contains_key(&key)
                    && self.nodes.keys().filter(|(s, _)| *s == key.0).count() >= NODES_MAX
                {
                    return Reply::Refused(Refused::Invalid(format!(
                        "a service has at most {NODES_MAX} nodes"
                    )));
                }
                let rate = self.release_rate_permille;
                let node = self.nodes.entry(key).or_insert_with(|| {
                    let capacity = capacity.unwrap_or(0);
                    Node {
                        capacity,
                        current_load: 0,
                        available: release(capacity, 0, rate),
                        downed: false,
                        backoff: false,
                    }
                });
                if let Some(c) = capacity {
                    node.capacity = c;
                }
                if let Some(a) = available {
                    node.available = a;
                }
                if let Some(l) = current_load {
                    node.current_load = l;
                }
                if let Some(d) = downed {
                    node.downed = d;
                }
                if let Some(b) = backoff {
                    node.backoff = b;
                }
                Reply::Node(node.clone())
            }
            Command::UnassignNode {
                service,
                url,
                now_ms,
            } => Reply::Rows(self.unassign(&service, &url, now_ms)),
            Command::RemoveNode {
                service,
                url,
                now_ms,
            } => {
                let rows = self.unassign(&service, &url, now_ms);
                self.nodes.remove(&(service, url));
                Reply::Rows(rows)
            }
            Command::AllowNewUsers(allow) => {
                self.allow_new_users = allow;
                Reply::Done
            }
            Command::AllocateUser {
                service,
                email,
                node,
                now_ms,
            } => match self.allocate_user(service, email, node, now_ms) {
                Ok(row) => Reply::Assigned(row),
                Err(refused) => Reply::Refused(refused),
            },
            Command::SetReleaseRate(permille) => {
                self.release_rate_permille = permille.clamp(1, 1_000);
                Reply::Done
            }
            Command::Purge { service, before_ms } => Reply::Rows(self.purge(&service, before_ms)),
            Command::SetPolicy { service, policy } => match self.set_policy(service, policy) {
                Ok(map) => Reply::Buckets(map),
                Err(refused) => Reply::Refused(refused),
            },
            Command::MoveBucket {
                service,
                bucket,
                url,
                now_ms,
            } => match self.move_bucket(&service, bucket, url, now_ms) {
                Ok(rows) => Reply::Rows(rows),
                Err(refused) => Reply::Refused(refused),
            },
        }
    }

    fn login(&mut self, login: Login) -> Result<Row, Refused> {
        if login.email.is_empty() || login.email.len() > EMAIL_BYTES_MAX {
            return Err(Refused::Invalid(format!(
                "emails are 1..={EMAIL_BYTES_MAX} bytes"
            )));
        }
        let key = (login.service.clone(), login.email.clone());
        let rows = self.users.get(&key).cloned().unwrap_or_default();
        let Some(user) = current(&rows).cloned() else {
            if !self.allow_new_users {
                return Err(Refused::NewUsersDisabled);
            }
            if !login.may_create {
                return Err(Refused::NewUserCap);
            }
            let node = self.allocate(&login.service, None, &login.email)?;
            let row = self.new_row(&login, node, login.generation.unwrap_or(0));
            self.users.insert(key, vec![row.clone()]);
            return Ok(row);
        };
        check_identity(&login, &user, &rows)?;
        let generation = login
            .generation
            .unwrap_or(user.generation)
            .max(user.generation);
        let keys_changed_at = login.keys_changed_at.or(user.keys_changed_at);
        let node_gone = self
            .node(&login.service, &user.node)
            .is_none_or(|n| n.downed);
        if login.client_state != user.client_state {
            // A new client state: a new uid, on the same node if it can
            // still serve; older rows are replaced.
            let node = if node_gone {
                self.allocate(&login.service, Some(&user.node), &login.email)?
            } else {
                user.node.clone()
            };
            return Ok(self.replace_with(&key, &login, node, generation));
        }
        if user.replaced_at_ms.is_some() || node_gone {
            // Moved off its node (unassigned, or the node is gone): go
            // elsewhere when anywhere else can take the user.
            let node = self.allocate(&login.service, Some(&user.node), &login.email)?;
            return Ok(self.replace_with(&key, &login, node, generation));
        }
        // Same client state: record what moved forward.
        let rows = self.users.entry(key).or_default();
        let Some(last) = rows
            .iter_mut()
            .max_by_key(|r| (r.generation, r.created_at_ms))
        else {
            return Err(Refused::Invalid("the user has no rows".into()));
        };
        last.generation = generation;
        last.keys_changed_at = keys_changed_at;
        Ok(last.clone())
    }

    /// Adds a row for `login` on `node`, marking the others replaced.
    fn replace_with(
        &mut self,
        key: &(String, String),
        login: &Login,
        node: String,
        generation: u64,
    ) -> Row {
        let row = self.new_row(login, node, generation);
        let rows = self.users.entry(key.clone()).or_default();
        for r in rows.iter_mut() {
            r.replaced_at_ms.get_or_insert(login.now_ms);
        }
        rows.push(row.clone());
        if rows.len() > ROWS_PER_USER_MAX {
            // Keep the newest; the dropped rows' client states were
            // replaced long ago.
            let excess = rows.len() - ROWS_PER_USER_MAX;
            rows.drain(..excess);
        }
        row
    }

    fn new_row(&mut self, login: &Login, node: String, generation: u64) -> Row {
        let uid = self.next_uid;
        self.next_uid += 1;
        Row {
            uid,
            node,
            generation,
            keys_changed_at: login.keys_changed_at,
            client_state: login.client_state.clone(),
            created_at_ms: login.now_ms,
            replaced_at_ms: None,
        }
    }

    /// Picks the least-loaded node that can take a user (other than
    /// `avoid` when another can) and charges it; releases capacity once if
    /// none can.
    fn allocate(
        &mut self,
        service: &str,
        avoid: Option<&str>,
        email: &str,
    ) -> Result<String, Refused> {
        if let Some(map) = self.buckets.0.get(service) {
            // Bucketed: the bucket's node or nothing (the operator moves
            // the bucket when its node cannot take more).
            let url = map[bucket_of(email, map.len())].clone();
            let node = self
                .nodes
                .get_mut(&(service.to_string(), url.clone()))
                .filter(|n| !n.downed && !n.backoff && n.current_load < n.capacity)
                .ok_or(Refused::NoCapacity)?;
            node.current_load += 1;
            node.available = node.available.saturating_sub(1);
            return Ok(url);
        }
        let url = match self
            .pick(service, avoid)
            .or_else(|| self.pick(service, None))
        {
            Some(url) => url,
            None => {
                let rate = self.release_rate_permille;
                let mut released = false;
                for ((s, _), n) in self.nodes.iter_mut() {
                    if s == service && n.available == 0 && n.capacity > n.current_load && !n.downed
                    {
                        n.available = release(n.capacity, n.current_load, rate);
                        released |= n.available > 0;
                    }
                }
                if !released {
                    return Err(Refused::NoCapacity);
                }
                self.pick(service, avoid)
                    .or_else(|| self.pick(service, None))
                    .ok_or(Refused::NoCapacity)?
            }
        };
        if let Some(n) = self.nodes.get_mut(&(service.to_string(), url.clone())) {
            n.current_load += 1;
            n.available = n.available.saturating_sub(1);
        }
        Ok(url)
    }

    /// The node with the lowest `ln(load) / ln(capacity)` among those that
    /// can take a user (an empty node first; ties to the first URL, and
    /// URLs `{public_url}/g/{group}` sort by group within a cluster).
    fn pick(&self, service: &str, avoid: Option<&str>) -> Option<String> {
        let score = |n: &Node| -> f64 {
            if n.current_load == 0 {
                f64::NEG_INFINITY
            } else if n.capacity <= 1 {
                f64::INFINITY
            } else {
                f64::from(n.current_load).ln() / f64::from(n.capacity).ln()
            }
        };
        self.nodes
            .iter()
            .filter(|((s, url), n)| {
                s == service
                    && avoid != Some(url.as_str())
                    && n.available > 0
                    && n.capacity > n.current_load
                    && !n.downed
                    && !n.backoff
            })
            .min_by(|(a_key, a), (b_key, b)| {
                score(a)
                    .total_cmp(&score(b))
                    .then_with(|| group_order(&a_key.1).cmp(&group_order(&b_key.1)))
            })
            .map(|((_, url), _)| url.clone())
    }

    fn unassign(&mut self, service: &str, url: &str, now_ms: u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for ((s, _), rows) in self.users.iter_mut() {
            if s != service {
                continue;
            }
            for r in rows
                .iter_mut()
                .filter(|r| r.node == url && r.replaced_at_ms.is_none())
            {
                r.replaced_at_ms = Some(now_ms);
                out.push((r.uid, r.node.clone()));
            }
        }
        out
    }

    fn allocate_user(
        &mut self,
        service: String,
        email: String,
        node: Option<String>,
        now_ms: u64,
    ) -> Result<Row, Refused> {
        if email.is_empty() || email.len() > EMAIL_BYTES_MAX {
            return Err(Refused::Invalid(format!(
                "emails are 1..={EMAIL_BYTES_MAX} bytes"
            )));
        }
        let key = (service.clone(), email.clone());
        let current = self.users.get(&key).and_then(|rows| current(rows).cloned());
        let url = match node {
            Some(url) => {
                let n = self
                    .nodes
                    .get_mut(&(service.clone(), url.clone()))
                    .filter(|n| !n.downed)
                    .ok_or_else(|| Refused::Invalid(format!("no serving node {url:?}")))?;
                n.current_load += 1;
                n.available = n.available.saturating_sub(1);
                url
            }
            None => self.allocate(&service, None, &email)?,
        };
        let login = Login {
            service,
            email,
            generation: current.as_ref().map(|r| r.generation),
            keys_changed_at: current.as_ref().and_then(|r| r.keys_changed_at),
            client_state: current
                .as_ref()
                .map(|r| r.client_state.clone())
                .unwrap_or_default(),
            now_ms,
            may_create: true,
        };
        let generation = login.generation.unwrap_or(0);
        Ok(self.replace_with(&key, &login, url, generation))
    }

    fn set_policy(&mut self, service: String, policy: Policy) -> Result<Vec<String>, Refused> {
        let Policy::Bucketed { buckets } = policy else {
            self.buckets.0.remove(&service);
            return Ok(Vec::new());
        };
        if !(1..=BUCKETS_MAX).contains(&buckets) {
            return Err(Refused::Invalid(format!(
                "buckets must be in 1..={BUCKETS_MAX}"
            )));
        }
        let urls: Vec<&String> = self
            .nodes
            .iter()
            .filter(|((s, _), n)| *s == service && !n.downed)
            .map(|((_, url), _)| url)
            .collect();
        if urls.is_empty() {
            return Err(Refused::Invalid(format!(
                "service {service:?} has no node to map buckets to"
            )));
        }
        let map: Vec<String> = (0..buckets as usize)
            .map(|b| urls[b % urls.len()].clone())
            .collect();
        self.buckets.0.insert(service, map.clone());
        Ok(map)
    }

    fn move_bucket(
        &mut self,
        service: &str,
        bucket: u32,
        url: String,
        now_ms: u64,
    ) -> Result<Vec<(u64, String)>, Refused> {
        if self.node(service, &url).is_none_or(|n| n.downed) {
            return Err(Refused::Invalid(format!("no serving node {url:?}")));
        }
        let map = self
            .buckets
            .0
            .get_mut(service)
            .ok_or_else(|| Refused::Invalid(format!("service {service:?} is not bucketed")))?;
        let slot = map
            .get_mut(bucket as usize)
            .ok_or_else(|| Refused::Invalid(format!("no bucket {bucket}")))?;
        slot.clone_from(&url);
        let buckets = map.len();
        let mut moved = Vec::new();
        for ((s, email), rows) in self.users.iter_mut() {
            if s != service || bucket_of(email, buckets) != bucket as usize {
                continue;
            }
            for r in rows.iter_mut() {
                if r.replaced_at_ms.is_none() && r.node != url {
                    r.replaced_at_ms = Some(now_ms);
                    moved.push((r.uid, r.node.clone()));
                }
            }
        }
        Ok(moved)
    }

    /// The uids a `Purge { service, before_ms }` would forget now: rows
    /// replaced before `before_ms`.
    pub fn purgeable(&self, service: &str, before_ms: u64) -> Vec<u64> {
        self.users
            .iter()
            .filter(|((s, _), _)| s == service)
            .flat_map(|(_, rows)| rows.iter())
            .filter(|r| r.replaced_at_ms.is_some_and(|at| at < before_ms))
            .map(|r| r.uid)
            .collect()
    }

    fn purge(&mut self, service: &str, before_ms: u64) -> Vec<(u64, String)> {
        let mut purged = Vec::new();
        for ((s, _), rows) in self.users.iter_mut() {
            if s != service {
                continue;
            }
            rows.retain(|r| {
                let old = r.replaced_at_ms.is_some_and(|at| at < before_ms);
                if old {
                    purged.push((r.uid, r.node.clone()));
                }
                !old
            });
        }
        self.users.retain(|_, rows| !rows.is_empty());
        for (_, url) in &purged {
            if let Some(n) = self.nodes.get_mut(&(service.to_string(), url.clone())) {
                n.current_load = n.current_load.saturating_sub(1);
            }
        }
        purged
    }
}

/// The current row: the greatest (generation, created_at).
fn current(rows: &[Row]) -> Option<&Row> {
    rows.iter().max_by_key(|r| (r.generation, r.created_at_ms))
}

/// Generation and keys_changed_at never go backwards; a new client state
/// needs both to move forward, and an old one never comes back.
fn check_identity(login: &Login, user: &Row, rows: &[Row]) -> Result<(), Refused> {
    if login.generation.is_some_and(|g| g < user.generation) {
        return Err(Refused::Generation);
    }
    match (login.keys_changed_at, user.keys_changed_at) {
        (Some(k), Some(seen)) if k < seen => return Err(Refused::KeysChangedAt),
        (None, Some(_)) => return Err(Refused::KeysChangedAt),
        _ => {}
    }
    if login.client_state == user.client_state {
        return Ok(());
    }
    if login.client_state.is_empty() {
        return Err(Refused::ClientState("empty string".into()));
    }
    if rows.iter().any(|r| r.client_state == login.client_state) {
        return Err(Refused::ClientState("stale value".into()));
    }
    if login.generation.is_none_or(|g| g <= user.generation) && user.generation > 0 {
        return Err(Refused::ClientState(
            "new value with no generation change".into(),
        ));
    }
    if let Some(seen) = user.keys_changed_at
        && login.keys_changed_at.is_none_or(|k| k <= seen)
    {
        return Err(Refused::ClientState(
            "new value with no keys_changed_at change".into(),
        ));
    }
    Ok(())
}

/// `ceil(capacity × rate)`, at most the room left.
fn release(capacity: u32, load: u32, rate_permille: u32) -> u32 {
    let share = (u64::from(capacity) * u64::from(rate_permille)).div_ceil(1_000);
    (share as u32).min(capacity.saturating_sub(load))
}

/// Sorts `…/g/{n}` URLs by group number, others after them by text.
fn group_order(url: &str) -> (u64, &str) {
    let group = url
        .rsplit_once("/g/")
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (group, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "queuey-1.0";

    fn with_nodes(capacities: &[u32]) -> Assignments {
        let mut a = Assignments::new(100);
        for (i, c) in capacities.iter().enumerate() {
            a.apply(Command::SetNode {
                service: S.into(),
                url: format!("http://n/g/{}", i + 1),
                capacity: Some(*c),
                available: None,
                current_load: None,
                downed: None,
                backoff: None,
            });
        }
        a
    }

    fn login(email: &str, generation: Option<u64>, kca: Option<u64>, state: &str) -> Command {
        Command::Login(Login {
            service: S.into(),
            email: email.into(),
            generation,
            keys_changed_at: kca,
            client_state: state.into(),
            now_ms: 1_000,
            may_create: true,
        })
    }

    fn assigned(reply: Reply) -> Row {
        match reply {
            Reply::Assigned(row) => row,
            other => panic!("not assigned: {other:?}"),
        }
    }

    fn refused(reply: Reply) -> Refused {
        match reply {
            Reply::Refused(r) => r,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn bucketed_users_follow_their_bucket_and_move_with_it() {
        let mut a = with_nodes(&[100, 100]);
        let policy = |buckets| Command::SetPolicy {
            service: S.into(),
            policy: Policy::Bucketed { buckets },
        };
        assert!(matches!(refused(a.apply(policy(0))), Refused::Invalid(_)));
        let Reply::Buckets(map) = a.apply(policy(4)) else {
            panic!("a bucket map");
        };
        assert_eq!(
            map,
            [
                "http://n/g/1",
                "http://n/g/2",
                "http://n/g/1",
                "http://n/g/2"
            ]
        );
        // Every new user lands on its bucket's node, whatever the load.
        let emails: Vec<String> = (0..40).map(|i| format!("u{i}@x")).collect();
        for e in &emails {
            let row = assigned(a.apply(login(e, Some(1), None, "")));
            assert_eq!(row.node, map[bucket_of(e, 4)], "{e}");
        }
        // Moving bucket 1 to node 1 moves exactly its users, on next login.
        let in_bucket: Vec<&String> = emails.iter().filter(|e| bucket_of(e, 4) == 1).collect();
        assert!(!in_bucket.is_empty());
        let moved = match a.apply(Command::MoveBucket {
            service: S.into(),
            bucket: 1,
            url: "http://n/g/1".into(),
            now_ms: 2_000,
        }) {
            Reply::Rows(rows) => rows,
            other => panic!("rows: {other:?}"),
        };
        assert_eq!(moved.len(), in_bucket.len());
        assert!(moved.iter().all(|(_, node)| node == "http://n/g/2"));
        for e in &emails {
            let row = assigned(a.apply(login(e, Some(1), None, "")));
            let want = if bucket_of(e, 4) == 1 {
                "http://n/g/1"
            } else {
                &map[bucket_of(e, 4)]
            };
            assert_eq!(row.node, want, "{e}");
        }
        // Node 1 took the moved users; node 2 keeps their old slots until
        // a purge frees them.
        let on_one = emails
            .iter()
            .filter(|e| bucket_of(e, 4).is_multiple_of(2))
            .count()
            + moved.len();
        assert_eq!(
            a.node(S, "http://n/g/1").map(|n| n.current_load as usize),
            Some(on_one)
        );
        // A full bucket node refuses rather than spilling elsewhere.
        a.apply(Command::SetNode {
            service: S.into(),
            url: "http://n/g/1".into(),
            capacity: Some(0),
            available: None,
            current_load: None,
            downed: None,
            backoff: None,
        });
        let newcomer = (100..)
            .map(|i| format!("n{i}@x"))
            .find(|e| bucket_of(e, 4) == 0)
            .expect("one");
        assert_eq!(
            refused(a.apply(login(&newcomer, Some(1), None, ""))),
            Refused::NoCapacity
        );
        // Back to least-loaded: the map goes, placement by load returns.
        assert_eq!(
            a.apply(Command::SetPolicy {
                service: S.into(),
                policy: Policy::LeastLoaded
            }),
            Reply::Buckets(Vec::new())
        );
        assert_eq!(
            assigned(a.apply(login(&newcomer, Some(1), None, ""))).node,
            "http://n/g/2"
        );
        assert!(a.buckets(S).is_none());
    }

    #[test]
    fn an_operator_places_a_user_and_the_user_stays_there() {
        let mut a = with_nodes(&[100, 100]);
        let first = assigned(a.apply(login("a@x", Some(3), None, "aa")));
        assert_eq!(first.node, "http://n/g/1");
        let allocate = |node: Option<&str>| Command::AllocateUser {
            service: S.into(),
            email: "a@x".into(),
            node: node.map(str::to_string),
            now_ms: 2_000,
        };
        let placed = assigned(a.apply(allocate(Some("http://n/g/2"))));
        assert_eq!(placed.node, "http://n/g/2");
        assert_ne!(placed.uid, first.uid, "a new uid on the new node");
        assert_eq!((placed.generation, placed.client_state.as_str()), (3, "aa"));
        // The user's next login finds the placed row.
        let again = assigned(a.apply(login("a@x", Some(3), None, "aa")));
        assert_eq!((again.uid, again.node), (placed.uid, placed.node));
        assert!(matches!(
            refused(a.apply(allocate(Some("http://n/g/9")))),
            Refused::Invalid(_)
        ));
        // Without a node the policy chooses; a user not seen before works too.
        let fresh = assigned(a.apply(Command::AllocateUser {
            service: S.into(),
            email: "new@x".into(),
            node: None,
            now_ms: 3_000,
        }));
        assert_eq!(fresh.node, "http://n/g/1", "the less loaded node");
        assert_eq!(a.count_users(S), 2);
    }

    #[test]
    fn buckets_hash_stably() {
        // FNV-1a 64 of "a@x" is fixed; a change here would move users.
        assert_eq!(bucket_of("a@x", 1 << 16), bucket_of("a@x", 1 << 16));
        assert_eq!(bucket_of("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
        assert_eq!(bucket_of("x", 0), 0, "no buckets is one bucket");
    }

    #[test]
    fn users_stick_to_their_node_and_new_ones_go_to_the_least_loaded() {
        let mut a = with_nodes(&[100, 100]);
        let first = assigned(a.apply(login("a@x", Some(1), None, "")));
        assert_eq!(first.node, "http://n/g/1", "ties go to the lowest group");
        let second = assigned(a.apply(login("b@x", Some(1), None, "")));
        assert_eq!(second.node, "http://n/g/2", "an empty node sorts first");
        let again = assigned(a.apply(login("a@x", Some(1), None, "")));
        assert_eq!((again.uid, again.node), (first.uid, first.node));
        assert_eq!(a.node(S, "http://n/g/1").map(|n| n.current_load), Some(1));
        assert_eq!(a.count_users(S), 2);
    }

    #[test]
    fn capacity_is_released_slowly_and_never_exceeded() {
        // capacity 20 at 10 %: 2 users per release.
        let mut a = with_nodes(&[20]);
        assert_eq!(a.node(S, "http://n/g/1").map(|n| n.available), Some(2));
        for i in 0..20 {
            assigned(a.apply(login(&format!("u{i}@x"), None, None, "")));
        }
        let node = a.node(S, "http://n/g/1").cloned().expect("node");
        assert_eq!((node.current_load, node.available), (20, 0));
        assert_eq!(
            refused(a.apply(login("late@x", None, None, ""))),
            Refused::NoCapacity
        );
        // Downed and backoff nodes take nobody.
        let mut b = with_nodes(&[10, 10]);
        b.apply(Command::SetNode {
            service: S.into(),
            url: "http://n/g/1".into(),
            capacity: None,
            available: None,
            current_load: None,
            downed: Some(true),
            backoff: None,
        });
        b.apply(Command::SetNode {
            service: S.into(),
            url: "http://n/g/2".into(),
            capacity: None,
            available: None,
            current_load: None,
            downed: None,
            backoff: Some(true),
        });
        assert_eq!(
            refused(b.apply(login("a@x", None, None, ""))),
            Refused::NoCapacity
        );
    }

    #[test]
    fn identity_rules_follow_the_spec() {
        let mut a = with_nodes(&[100]);
        let first = assigned(a.apply(login("a@x", Some(5), Some(50), "aaaa")));
        assert_eq!(
            refused(a.apply(login("a@x", Some(4), Some(50), "aaaa"))),
            Refused::Generation
        );
        assert_eq!(
            refused(a.apply(login("a@x", Some(5), Some(49), "aaaa"))),
            Refused::KeysChangedAt
        );
        assert_eq!(
            refused(a.apply(login("a@x", Some(5), None, "aaaa"))),
            Refused::KeysChangedAt
        );
        assert_eq!(
            refused(a.apply(login("a@x", Some(5), Some(50), "bbbb"))),
            Refused::ClientState("new value with no generation change".into())
        );
        assert_eq!(
            refused(a.apply(login("a@x", Some(6), Some(50), "bbbb"))),
            Refused::ClientState("new value with no keys_changed_at change".into())
        );
        assert_eq!(
            refused(a.apply(login("a@x", Some(6), Some(51), ""))),
            Refused::ClientState("empty string".into())
        );
        // A proper change: new uid, same node, the old row replaced.
        let changed = assigned(a.apply(login("a@x", Some(6), Some(51), "bbbb")));
        assert_ne!(changed.uid, first.uid);
        assert_eq!(changed.node, first.node);
        assert!(a.rows(S, "a@x")[0].replaced_at_ms.is_some());
        // The old state never comes back.
        assert_eq!(
            refused(a.apply(login("a@x", Some(7), Some(52), "aaaa"))),
            Refused::ClientState("stale value".into())
        );
        // Moving forward with the same state keeps the uid.
        let forward = assigned(a.apply(login("a@x", Some(9), Some(60), "bbbb")));
        assert_eq!((forward.uid, forward.generation), (changed.uid, 9));
    }

    #[test]
    fn unassigned_users_move_and_purges_free_slots() {
        let mut a = with_nodes(&[100, 100]);
        let first = assigned(a.apply(login("a@x", None, None, "")));
        let moved = a.apply(Command::UnassignNode {
            service: S.into(),
            url: first.node.clone(),
            now_ms: 2_000,
        });
        assert_eq!(moved, Reply::Rows(vec![(first.uid, first.node.clone())]));
        // The next login lands on another node, with a new uid.
        let next = assigned(a.apply(login("a@x", None, None, "")));
        assert_ne!(next.node, first.node);
        assert_ne!(next.uid, first.uid);
        let purged = a.apply(Command::Purge {
            service: S.into(),
            before_ms: 3_000,
        });
        assert_eq!(purged, Reply::Rows(vec![(first.uid, first.node.clone())]));
        assert_eq!(a.node(S, &first.node).map(|n| n.current_load), Some(0));
        assert_eq!(a.rows(S, "a@x").len(), 1);
    }

    #[test]
    fn new_users_can_be_refused_while_returning_users_log_in() {
        let mut a = with_nodes(&[100]);
        let known = assigned(a.apply(login("a@x", None, None, "")));
        a.apply(Command::AllowNewUsers(false));
        assert_eq!(
            refused(a.apply(login("b@x", None, None, ""))),
            Refused::NewUsersDisabled
        );
        assert_eq!(
            assigned(a.apply(login("a@x", None, None, ""))).uid,
            known.uid
        );
        a.apply(Command::AllowNewUsers(true));
        let Command::Login(mut capped) = login("c@x", None, None, "") else {
            unreachable!("a login");
        };
        capped.may_create = false;
        assert_eq!(
            refused(a.apply(Command::Login(capped))),
            Refused::NewUserCap
        );
        assert!(matches!(
            a.apply(login("", None, None, "")),
            Reply::Refused(Refused::Invalid(_))
        ));
    }

    #[test]
    fn unchanged_logins_are_recognised_without_applying() {
        let mut a = with_nodes(&[100]);
        let Command::Login(first) = login("a@x", Some(3), Some(30), "aaaa") else {
            unreachable!("a login");
        };
        assert_eq!(a.unchanged_login(&first), None, "a new user changes state");
        let row = assigned(a.apply(Command::Login(first.clone())));
        assert_eq!(a.unchanged_login(&first), Some(row.clone()));
        let before = a.clone();
        assert_eq!(assigned(a.apply(Command::Login(first.clone()))), row);
        assert_eq!(a, before, "and indeed applying it changes nothing");
        for changed in [
            Login {
                generation: Some(4),
                ..first.clone()
            },
            Login {
                keys_changed_at: Some(31),
                ..first.clone()
            },
            Login {
                client_state: "bbbb".into(),
                ..first.clone()
            },
        ] {
            assert_eq!(a.unchanged_login(&changed), None, "{changed:?}");
        }
    }

    #[test]
    fn release_arithmetic() {
        assert_eq!(release(20, 0, 100), 2);
        assert_eq!(release(21, 0, 100), 3, "ceil");
        assert_eq!(release(20, 19, 100), 1, "at most the room left");
        assert_eq!(release(0, 0, 100), 0);
        assert_eq!(group_order("http://h/g/10").0, 10);
        assert!(group_order("http://h/g/2") < group_order("http://h/g/10"));
    }
}
