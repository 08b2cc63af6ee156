//! The meta group's state machine: data groups, node addresses,
//! applications and their key digests, and queue metadata with placement.
//!
//! The state is small, so a checkpoint writes all of it (with the Raft
//! state) into one checkpoint file, and a snapshot is that file's body:
//! installing one is writing it.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_engine::Timestamp;
use sluice_engine::disk::Disk;

use crate::checkpoint;
use crate::data::requests::RequestWindow;
use crate::glue::{GroupMachine, codec};
use crate::ids::{GroupId, QueueId};
use crate::meta::command::{
    APP_KEYS_MAX, APPS_MAX, DATA_GROUPS_MAX, MetaCommand, MetaProposal, MetaRefusal, MetaReply,
    NAME_BYTES_MAX, PARTITIONS_MAX, PRINCIPLE_BYTES_MAX, PRINCIPLES_MAX, QUEUES_MAX, Queue,
    QueueSettings,
};
use sluice_token::assign::{Assignments, BucketMaps};

const CHECKPOINT_FILE: &str = "checkpoint";
/// Meta requests remembered for retries.
const REQUEST_WINDOW: usize = 10_000;
/// Longest public URL.
const URL_BYTES_MAX: usize = 2_048;

/// The replicated metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    data_groups: BTreeSet<GroupId>,
    nodes: BTreeMap<u64, String>,
    /// Application → its key digests.
    apps: BTreeMap<String, BTreeSet<[u8; 32]>>,
    /// Key digest → application, for authentication.
    keys: BTreeMap<[u8; 32], Arc<str>>,
    /// (application, name) → queue.
    /// Shared: a request's lookup takes its queue without copying it.
    queues: BTreeMap<(String, String), Arc<Queue>>,
    next_queue: u64,
    requests: RequestWindow<MetaReply>,
    /// Token users' assignments. Checkpointed after the rest (see
    /// `MetaCheckpoint`), so checkpoints written before tokens existed
    /// still decode.
    #[serde(skip)]
    tokens: Assignments,
}

impl Default for MetaState {
    fn default() -> Self {
        MetaState {
            data_groups: BTreeSet::new(),
            nodes: BTreeMap::new(),
            apps: BTreeMap::new(),
            keys: BTreeMap::new(),
            queues: BTreeMap::new(),
            next_queue: 1,
            requests: RequestWindow::new(REQUEST_WINDOW),
            tokens: Assignments::default(),
        }
    }
}

/// SHA-256 of an application key, as the meta group stores it.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `name` is a valid application or queue name: 1..=50 bytes of
/// `[A-Za-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A queue's key, `(application, name)`, owned or borrowed: the map of
/// queues is looked up on every request, and a `(String, String)` key
/// built for it cost two allocations.
trait QueueKey {
    /// The application and the queue's name.
    fn parts(&self) -> (&str, &str);
}

impl QueueKey for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl QueueKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn QueueKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn QueueKey + 'a) {
        self
    }
}

// Ordered as `(String, String)` is (by application, then name), as
// `Borrow` requires.
impl PartialEq for dyn QueueKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn QueueKey + '_ {}

impl PartialOrd for dyn QueueKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn QueueKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl MetaState {
    /// Applies a proposal; a request applied recently gets its first reply.
    pub fn apply(&mut self, proposal: MetaProposal) -> MetaReply {
        if let Some(reply) = self.requests.reply_of(proposal.request_id) {
            return reply.clone();
        }
        let reply = self
            .apply_command(proposal.command, proposal.proposed_at)
            .unwrap_or_else(MetaReply::Refused);
        self.requests.remember(proposal.request_id, reply.clone());
        reply
    }

    fn apply_command(
        &mut self,
        command: MetaCommand,
        now: Timestamp,
    ) -> Result<MetaReply, MetaRefusal> {
        match command {
            MetaCommand::AddDataGroups { groups } => {
                if groups.iter().any(|g| g.0 == 0 || g.0 > DATA_GROUPS_MAX) {
                    return Err(invalid(
                        "groups",
                        format!("data groups are 1..={DATA_GROUPS_MAX}"),
                    ));
                }
                self.data_groups.extend(groups);
                Ok(MetaReply::Done)
            }
            MetaCommand::SetNode { node, public_url } => {
                if public_url.is_empty() || public_url.len() > URL_BYTES_MAX {
                    return Err(invalid("public_url", format!("1..={URL_BYTES_MAX} bytes")));
                }
                self.nodes.insert(node, public_url);
                Ok(MetaReply::Done)
            }
            MetaCommand::AddAppKey { app, key_digest } => {
                check_name("app", &app)?;
                if let Some(owner) = self.keys.get(&key_digest) {
                    if **owner == *app {
                        return Ok(MetaReply::Done);
                    }
                    return Err(invalid(
                        "key",
                        "the key belongs to another application".into(),
                    ));
                }
                if !self.apps.contains_key(&app) && self.apps.len() >= APPS_MAX {
                    return Err(MetaRefusal::Full(format!(
                        "at most {APPS_MAX} applications"
                    )));
                }
                let keys = self.apps.entry(app.clone()).or_default();
                if keys.len() >= APP_KEYS_MAX {
                    return Err(MetaRefusal::Full(format!(
                        "at most {APP_KEYS_MAX} keys per application"
                    )));
                }
                keys.insert(key_digest);
                self.keys.insert(key_digest, Arc::from(app));
                Ok(MetaReply::Done)
            }
            MetaCommand::CreateQueue {
                app,
                name,
                settings,
                pinned_group,
            } => {
                check_name("queue_name", &name)?;
                check_settings(&settings)?;
                if !self.apps.contains_key(&app) {
                    return Err(MetaRefusal::UnknownApp(app));
                }
                let key = (app, name);
                if self.queues.contains_key(&key) {
                    return Err(MetaRefusal::QueueExists(key.1));
                }
                if self.queues.len() >= QUEUES_MAX {
                    return Err(MetaRefusal::Full(format!("at most {QUEUES_MAX} queues")));
                }
                let group = match pinned_group.filter(|g| self.data_groups.contains(g)) {
                    Some(g) => g,
                    None => self.least_loaded_group().ok_or(MetaRefusal::NoDataGroups)?,
                };
                let queue = Queue {
                    id: QueueId(self.next_queue),
                    app: key.0.clone(),
                    name: key.1.clone(),
                    group,
                    created_at: now,
                    settings,
                };
                self.next_queue += 1;
                self.queues.insert(key, Arc::new(queue.clone()));
                Ok(MetaReply::Queue(queue))
            }
            MetaCommand::UpdateQueue {
                app,
                name,
                partitions,
                queue_type,
                consistency,
                principles,
            } => {
                let queue = self
                    .queues
                    .get_mut(&(app, name.clone()))
                    .ok_or(MetaRefusal::UnknownQueue(name))?;
                let mut settings = queue.settings.clone();
                if let Some(p) = partitions {
                    if p < settings.partitions {
                        return Err(MetaRefusal::PartitionsShrink(settings.partitions));
                    }
                    settings.partitions = p;
                }
                if let Some(t) = queue_type {
                    settings.queue_type = t;
                }
                if let Some(c) = consistency {
                    settings.consistency = c;
                }
                if let Some(p) = principles {
                    settings.principles = p;
                }
                check_settings(&settings)?;
                Arc::make_mut(queue).settings = settings;
                Ok(MetaReply::Queue(Queue::clone(queue)))
            }
            MetaCommand::DeleteQueue { app, name } => {
                let queue = self
                    .queues
                    .remove(&(app, name.clone()))
                    .ok_or(MetaRefusal::UnknownQueue(name))?;
                Ok(MetaReply::Queue(Arc::unwrap_or_clone(queue)))
            }
            MetaCommand::Token(command) => Ok(MetaReply::Token(self.tokens.apply(command))),
        }
    }

    /// Token users' assignments.
    pub fn tokens(&self) -> &Assignments {
        &self.tokens
    }

    /// The data group holding the fewest partitions (ties: lowest id).
    fn least_loaded_group(&self) -> Option<GroupId> {
        let mut load: BTreeMap<GroupId, u64> = self.data_groups.iter().map(|g| (*g, 0)).collect();
        for q in self.queues.values() {
            if let Some(l) = load.get_mut(&q.group) {
                *l += u64::from(q.settings.partitions);
            }
        }
        load.into_iter()
            .min_by_key(|(g, l)| (*l, *g))
            .map(|(g, _)| g)
    }

    /// The application a key belongs to (the key is hashed first, so the
    /// lookup never compares the secret itself).
    pub fn app_of_key(&self, key: &str) -> Option<&Arc<str>> {
        self.keys.get(&key_digest(key))
    }

    /// Whether the application exists.
    pub fn has_app(&self, app: &str) -> bool {
        self.apps.contains_key(app)
    }

    /// A queue by application and name.
    pub fn queue(&self, app: &str, name: &str) -> Option<&Arc<Queue>> {
        self.queues.get(&(app, name) as &dyn QueueKey)
    }

    /// An application's queues in name order, from `from` (inclusive) on,
    /// at most `limit`.
    pub fn queues_of(&self, app: &str, from: Option<&str>, limit: usize) -> Vec<&Queue> {
        let start = (app.to_string(), from.unwrap_or("").to_string());
        self.queues
            .range(start..)
            .take_while(|((a, _), _)| a == app)
            .take(limit)
            .map(|(_, q)| &**q)
            .collect()
    }

    /// Every queue, by application then name.
    pub fn all_queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values().map(|q| &**q)
    }

    /// The data groups.
    pub fn data_groups(&self) -> &BTreeSet<GroupId> {
        &self.data_groups
    }

    /// Node id → public URL.
    pub fn nodes(&self) -> &BTreeMap<u64, String> {
        &self.nodes
    }
}

fn invalid(field: &str, reason: String) -> MetaRefusal {
    MetaRefusal::Invalid {
        field: field.to_string(),
        reason,
    }
}

fn check_name(field: &str, name: &str) -> Result<(), MetaRefusal> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("1..={NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ -"),
        ))
    }
}

fn check_settings(settings: &QueueSettings) -> Result<(), MetaRefusal> {
    if settings.partitions == 0 || settings.partitions > PARTITIONS_MAX {
        return Err(invalid("partitions", format!("1..={PARTITIONS_MAX}")));
    }
    if settings.principles.len() > PRINCIPLES_MAX {
        return Err(invalid("principles", format!("at most {PRINCIPLES_MAX}")));
    }
    if let Some(p) = settings
        .principles
        .iter()
        .find(|p| p.is_empty() || p.len() > PRINCIPLE_BYTES_MAX)
    {
        return Err(invalid(
            "principles",
            format!("{p:?}: 1..={PRINCIPLE_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// What the meta checkpoint holds.
#[derive(Debug, Serialize, Deserialize)]
struct MetaCheckpoint {
    raft_state: Vec<u8>,
    state: MetaState,
    /// Written after the rest; absent from checkpoints that predate token
    /// assignments (`codec::decode_extended` reads both).
    tokens: Assignments,
    /// Bucketed services' maps; absent from checkpoints that predate them.
    token_buckets: BucketMaps,
}

/// A checkpoint's fields before `tokens`, for decoding.
#[derive(Deserialize)]
struct MetaCheckpointHead {
    raft_state: Vec<u8>,
    state: MetaState,
}

/// Decodes a meta checkpoint, old or new.
fn decode_checkpoint(bytes: &[u8]) -> io::Result<(Vec<u8>, MetaState)> {
    let (head, mut extensions) = codec::decode_extended::<MetaCheckpointHead>(bytes)?;
    let mut tokens: Assignments = extensions.next()?;
    tokens.set_bucket_maps(extensions.next()?);
    extensions.finish()?;
    let mut state = head.state;
    state.tokens = tokens;
    Ok((head.raft_state, state))
}

/// The meta group's state machine: `MetaState`, checkpointed whole.
#[derive(Debug)]
pub struct MetaMachine {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    state: MetaState,
    raft_state: Vec<u8>,
}

impl MetaMachine {
    /// Opens the meta state in `dir` (empty if there is no checkpoint; a
    /// damaged checkpoint is an `InvalidData` error).
    pub fn open(disk: Arc<dyn Disk>, dir: impl AsRef<Path>) -> io::Result<MetaMachine> {
        let dir = dir.as_ref();
        disk.create_dir_all(dir)?;
        let path = dir.join(CHECKPOINT_FILE);
        let (state, raft_state) = match checkpoint::read(disk.as_ref(), &path)? {
            Some(body) => {
                let (raft_state, state) = decode_checkpoint(&body)?;
                (state, raft_state)
            }
            None => (MetaState::default(), Vec::new()),
        };
        Ok(MetaMachine {
            disk,
            path,
            state,
            raft_state,
        })
    }

    /// The replicated metadata, for reads.
    pub fn state(&self) -> &MetaState {
        &self.state
    }

    fn write_checkpoint(&mut self, raft_state: Vec<u8>) -> io::Result<Bytes> {
        let body = MetaCheckpoint {
            raft_state,
            state: self.state.clone(),
            tokens: self.state.tokens.clone(),
            token_buckets: self.state.tokens.bucket_maps().clone(),
        };
        let bytes = codec::encode(&body)?;
        checkpoint::write(self.disk.as_ref(), &self.path, &bytes)?;
        self.raft_state = body.raft_state;
        Ok(bytes)
    }
}

impl GroupMachine for MetaMachine {
    fn apply(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        let reply = match codec::decode::<MetaProposal>(command) {
            Ok(proposal) => self.state.apply(proposal),
            Err(e) => MetaReply::Refused(MetaRefusal::Undecodable(e.to_string())),
        };
        Ok(codec::encode(&reply)?.to_vec())
    }

    fn checkpoint(&mut self, raft_state: Vec<u8>) -> io::Result<Bytes> {
        self.write_checkpoint(raft_state)
    }

    fn raft_state(&self) -> &[u8] {
        &self.raft_state
    }

    fn install(&mut self, raft_state: Vec<u8>, snapshot: &[u8]) -> io::Result<()> {
        let (_, state) = decode_checkpoint(snapshot)?;
        self.state = state;
        self.write_checkpoint(raft_state).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;
    use crate::meta::command::{Consistency, QueueType};
    use sluice_engine::sim::SimDisk;

    fn settings(partitions: u32) -> QueueSettings {
        QueueSettings {
            partitions,
            queue_type: QueueType::User,
            consistency: Consistency::Strong,
            principles: Vec::new(),
        }
    }

    fn run(state: &mut MetaState, request: u128, command: MetaCommand) -> MetaReply {
        state.apply(MetaProposal {
            request_id: RequestId(request),
            proposed_at: Timestamp::from_secs(1_000 + request as u64),
            command,
        })
    }

    fn create(state: &mut MetaState, request: u128, name: &str, partitions: u32) -> MetaReply {
        run(
            state,
            request,
            MetaCommand::CreateQueue {
                app: "app".into(),
                name: name.into(),
                settings: settings(partitions),
                pinned_group: None,
            },
        )
    }

    fn group_of(reply: MetaReply) -> u32 {
        match reply {
            MetaReply::Queue(q) => q.group.0,
            other => panic!("not a queue: {other:?}"),
        }
    }

    #[test]
    fn queues_go_to_the_group_with_fewest_partitions_and_names_are_checked() {
        let mut s = MetaState::default();
        assert_eq!(
            create(&mut s, 1, "q", 1),
            MetaReply::Refused(MetaRefusal::UnknownApp("app".into()))
        );
        run(
            &mut s,
            2,
            MetaCommand::AddAppKey {
                app: "app".into(),
                key_digest: key_digest("k1"),
            },
        );
        assert_eq!(
            create(&mut s, 3, "q", 1),
            MetaReply::Refused(MetaRefusal::NoDataGroups)
        );
        run(
            &mut s,
            4,
            MetaCommand::AddDataGroups {
                groups: vec![GroupId(1), GroupId(2)],
            },
        );
        assert_eq!(group_of(create(&mut s, 5, "big", 10)), 1);
        assert_eq!(group_of(create(&mut s, 6, "small", 3)), 2);
        assert_eq!(
            group_of(create(&mut s, 7, "next", 1)),
            2,
            "2 has 3 partitions, 1 has 10"
        );
        assert_eq!(
            create(&mut s, 8, "big", 1),
            MetaReply::Refused(MetaRefusal::QueueExists("big".into()))
        );
        assert_eq!(
            create(&mut s, 8, "big", 1),
            create(&mut s, 8, "other", 1),
            "a retry"
        );
        for (i, bad) in ["", "has space", "ü", &"x".repeat(51)]
            .into_iter()
            .enumerate()
        {
            assert!(
                matches!(
                    create(&mut s, 100 + i as u128, bad, 1),
                    MetaReply::Refused(MetaRefusal::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            create(&mut s, 10, "zero", 0),
            MetaReply::Refused(MetaRefusal::Invalid { .. })
        ));
        assert_eq!(s.app_of_key("k1").map(|a| &**a), Some("app"));
        assert_eq!(s.app_of_key("k2"), None);
        let names: Vec<&str> = s
            .queues_of("app", Some("next"), 10)
            .iter()
            .map(|q| q.name.as_str())
            .collect();
        assert_eq!(names, vec!["next", "small"]);
    }

    #[test]
    fn a_queue_is_found_by_borrowed_names_exactly() {
        let mut s = MetaState::default();
        run(
            &mut s,
            1,
            MetaCommand::AddDataGroups {
                groups: vec![GroupId(1)],
            },
        );
        // Pairs whose concatenations collide, or that sort differently
        // joined than as pairs: the lookup must compare as the map does.
        let pairs = [
            ("a", "bc"),
            ("ab", "c"),
            ("a", "b"),
            ("a-", "a"),
            ("b", "a"),
        ];
        for (i, (app, name)) in pairs.into_iter().enumerate() {
            let request = 10 * (i as u128 + 1);
            run(
                &mut s,
                request,
                MetaCommand::AddAppKey {
                    app: app.into(),
                    key_digest: key_digest(&format!("key-{app}")),
                },
            );
            let reply = run(
                &mut s,
                request + 1,
                MetaCommand::CreateQueue {
                    app: app.into(),
                    name: name.into(),
                    settings: settings(1),
                    pinned_group: None,
                },
            );
            assert!(matches!(reply, MetaReply::Queue(_)), "{reply:?}");
        }
        for (app, name) in pairs {
            let queue = s.queue(app, name).expect("created");
            assert_eq!((queue.app.as_str(), queue.name.as_str()), (app, name));
        }
        for (app, name) in [("a", "c"), ("ab", "bc"), ("", "abc"), ("b", "b"), ("a", "")] {
            assert!(s.queue(app, name).is_none(), "{app}/{name}");
        }
    }

    #[test]
    fn updates_keep_omitted_fields_and_partitions_only_grow() {
        let mut s = MetaState::default();
        run(
            &mut s,
            1,
            MetaCommand::AddAppKey {
                app: "app".into(),
                key_digest: key_digest("k"),
            },
        );
        run(
            &mut s,
            2,
            MetaCommand::AddDataGroups {
                groups: vec![GroupId(1)],
            },
        );
        let MetaReply::Queue(created) = create(&mut s, 3, "q", 2) else {
            panic!("create")
        };
        let update = |partitions, queue_type| MetaCommand::UpdateQueue {
            app: "app".into(),
            name: "q".into(),
            partitions,
            queue_type,
            consistency: None,
            principles: None,
        };
        assert_eq!(
            run(&mut s, 4, update(Some(1), None)),
            MetaReply::Refused(MetaRefusal::PartitionsShrink(2))
        );
        let MetaReply::Queue(q) = run(&mut s, 5, update(Some(4), Some(QueueType::Public))) else {
            panic!("update")
        };
        assert_eq!(
            (
                q.settings.partitions,
                q.settings.queue_type,
                q.settings.consistency
            ),
            (4, QueueType::Public, Consistency::Strong)
        );
        assert_eq!(q.id, created.id);
        run(
            &mut s,
            6,
            MetaCommand::DeleteQueue {
                app: "app".into(),
                name: "q".into(),
            },
        );
        let MetaReply::Queue(again) = create(&mut s, 7, "q", 1) else {
            panic!("re-create")
        };
        assert_ne!(again.id, created.id, "a re-created name gets a new id");
    }

    #[test]
    fn token_assignments_are_checkpointed_and_old_checkpoints_still_open() {
        use sluice_token::assign::{Command, Login, Policy, Reply};
        let disk = SimDisk::new();
        let mut m = MetaMachine::open(Arc::new(disk.clone()), "/n1/meta").expect("open");
        let commands = [
            Command::SetNode {
                service: "queuey-1.0".into(),
                url: "http://h/g/1".into(),
                capacity: Some(10),
                available: None,
                current_load: None,
                downed: None,
                backoff: None,
            },
            Command::SetPolicy {
                service: "queuey-1.0".into(),
                policy: Policy::Bucketed { buckets: 2 },
            },
            Command::Login(Login {
                service: "queuey-1.0".into(),
                email: "u@x".into(),
                generation: Some(1),
                keys_changed_at: None,
                client_state: String::new(),
                now_ms: 5,
                may_create: true,
            }),
        ];
        let mut last = None;
        for (i, command) in commands.into_iter().enumerate() {
            let p = MetaProposal {
                request_id: RequestId(10 + i as u128),
                proposed_at: Timestamp(1),
                command: MetaCommand::Token(command),
            };
            last = Some(MetaReply::decode(
                &m.apply(&p.encode().expect("encode")).expect("apply"),
            ));
        }
        assert!(matches!(
            last,
            Some(Ok(MetaReply::Token(Reply::Assigned(_))))
        ));
        m.checkpoint(b"raft".to_vec()).expect("checkpoint");
        let reopened = MetaMachine::open(Arc::new(disk.clone()), "/n1/meta").expect("reopen");
        assert_eq!(reopened.state().tokens().rows("queuey-1.0", "u@x").len(), 1);
        assert_eq!(
            reopened
                .state()
                .tokens()
                .buckets("queuey-1.0")
                .map(<[String]>::len),
            Some(2),
            "bucket maps are checkpointed"
        );
        assert_eq!(reopened.state(), m.state());
        // A checkpoint written before bucket maps existed.
        #[derive(Serialize)]
        struct BeforeBuckets {
            raft_state: Vec<u8>,
            state: MetaState,
            tokens: Assignments,
        }
        let before = codec::encode(&BeforeBuckets {
            raft_state: b"r".to_vec(),
            state: MetaState::default(),
            tokens: m.state().tokens().clone(),
        })
        .expect("encode");
        let (_, state) = decode_checkpoint(&before).expect("a checkpoint without buckets");
        assert_eq!(state.tokens().rows("queuey-1.0", "u@x").len(), 1);
        assert!(state.tokens().buckets("queuey-1.0").is_none());
        // A checkpoint written before token assignments existed.
        #[derive(Serialize)]
        struct Old {
            raft_state: Vec<u8>,
            state: MetaState,
        }
        let old = codec::encode(&Old {
            raft_state: b"r".to_vec(),
            state: MetaState::default(),
        })
        .expect("encode");
        let (raft_state, state) = decode_checkpoint(&old).expect("an old checkpoint");
        assert_eq!((raft_state, state), (b"r".to_vec(), MetaState::default()));
        let mut damaged = old.to_vec();
        damaged.push(0xff);
        assert!(
            decode_checkpoint(&damaged).is_err(),
            "a bad extension is an error"
        );
    }

    #[test]
    fn a_checkpoint_reopens_and_installs_elsewhere() {
        let disk = SimDisk::new();
        let mut m = MetaMachine::open(Arc::new(disk.clone()), "/n1/meta").expect("open");
        let p = MetaProposal {
            request_id: RequestId(1),
            proposed_at: Timestamp(1),
            command: MetaCommand::AddAppKey {
                app: "a".into(),
                key_digest: key_digest("k"),
            },
        };
        m.apply(&p.encode().expect("encode")).expect("apply");
        let snapshot = m.checkpoint(b"raft".to_vec()).expect("checkpoint");
        let reopened = MetaMachine::open(Arc::new(disk.clone()), "/n1/meta").expect("reopen");
        assert_eq!(reopened.state(), m.state());
        assert_eq!(reopened.raft_state(), b"raft");
        let mut other = MetaMachine::open(Arc::new(disk.clone()), "/n2/meta").expect("open");
        other
            .install(b"raft2".to_vec(), &snapshot)
            .expect("install");
        assert_eq!(other.state().app_of_key("k").map(|a| &**a), Some("a"));
        let reply = other.apply(b"garbage").expect("apply");
        assert!(matches!(
            MetaReply::decode(&reply),
            Ok(MetaReply::Refused(MetaRefusal::Undecodable(_)))
        ));
    }
}
