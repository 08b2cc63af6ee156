//! `sluice serve`'s settings: command-line flags, `SLUICE_*` environment
//! variables, a TOML file (`--config`), and defaults, in that order of
//! precedence. clap resolves flag over variable; this module lays the file
//! and the defaults under them and checks the result as a whole, so a bad
//! setting stops the start with a message naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_engine::disk::WriteMode;
use sluice_raft::meta::command::DATA_GROUPS_MAX;

/// Default listener: loopback only, so a first start exposes nothing.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "./sluice-data";
/// Default data groups at cluster formation.
pub const GROUPS_DEFAULT: u32 = 4;
/// Default cap on messages a v1 read returns per partition without `limit`.
pub const READ_CAP_DEFAULT: usize = 10_000;
/// Largest configurable read cap.
pub const READ_CAP_MAX: usize = 100_000;
/// Default free space the data directory's disk keeps, in MiB.
pub const DISK_RESERVE_MB_DEFAULT: u64 = 256;
/// Largest reserve, in MiB (1 PiB: a larger one is a typo).
pub const DISK_RESERVE_MB_MAX: u64 = 1 << 30;
/// Default size at which a partition log starts a new segment, in KiB.
pub const SEGMENT_KIB_DEFAULT: u64 = 64 * 1024;
/// Default pace of the scrubber, which re-verifies sealed segments.
pub const SCRUB_MIB_PER_S_DEFAULT: u64 = 8;
/// Fastest configurable scrubber (0 turns it off).
pub const SCRUB_MIB_PER_S_MAX: u64 = 10_000;
/// Fewest Raft entries between checkpoints of a group.
pub const CHECKPOINT_ENTRIES_MIN: u64 = 10;
/// Most Raft entries between checkpoints of a group (the WAL keeps every
/// entry since the last checkpoint, and a restart replays them).
pub const CHECKPOINT_ENTRIES_MAX: u64 = 10_000_000;
/// Longest accepted `--config` file.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most `--app-key` entries.
const APP_KEYS_MAX: usize = 100;

/// The flags of `sluice serve` (each also a `SLUICE_*` variable).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (flags and variables win).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<String>,
    /// The URL clients reach this node at [default: http://<listen>].
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where data lives [default: ./sluice-data].
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's id, ≥ 1 [default: 1].
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Initial members, `1=HOST:PORT,2=HOST:PORT,...` [default: this node alone].
    #[arg(long, env = "SLUICE_PEERS")]
    pub peers: Option<String>,
    /// Data groups at cluster formation [default: 4].
    #[arg(long, env = "SLUICE_GROUPS")]
    pub groups: Option<u32>,
    /// Secret shared by the nodes (required with --peers).
    #[arg(long, env = "SLUICE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Operators' key [default: generated at first start, kept in the data directory].
    #[arg(long, env = "SLUICE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// `NAME=KEY`: create application NAME or add KEY to it (repeatable).
    #[arg(
        long = "app-key",
        env = "SLUICE_APP_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub app_keys: Vec<String>,
    /// Most messages a v1 read returns per partition without `limit` [default: 10000].
    #[arg(long, env = "SLUICE_READ_CAP")]
    pub read_cap: Option<usize>,
    /// Free space (MiB) the data directory's disk keeps: writes are refused with 507 below it [default: 256].
    #[arg(long, env = "SLUICE_DISK_RESERVE_MB")]
    pub disk_reserve_mb: Option<u64>,
    /// Size (KiB) at which a partition log starts a new segment [default: 65536].
    #[arg(long, env = "SLUICE_SEGMENT_KIB")]
    pub segment_kib: Option<u64>,
    /// How partition logs are written: `direct` (O_DIRECT; the newest bytes are read from memory, older ones from the disk) or `buffered` (through the page cache, which then also serves consumers reading a backlog) [default: direct].
    #[arg(long, env = "SLUICE_PARTITION_WRITES", value_enum)]
    pub partition_writes: Option<PartitionWrites>,
    /// Raft entries between checkpoints of a group (they flush partition logs and let the WAL shrink) [default: 10000].
    #[arg(long, env = "SLUICE_CHECKPOINT_ENTRIES")]
    pub checkpoint_entries: Option<u64>,
    /// MiB/s the scrubber re-verifies sealed segments at; 0 turns it off [default: 8].
    #[arg(long, env = "SLUICE_SCRUB_MIB_PER_S")]
    pub scrub_mib_per_s: Option<u64>,
    /// Log as JSON lines instead of human-readable text. `RUST_LOG`
    /// filters the logs (default `info,openraft=warn`).
    #[arg(long, env = "SLUICE_LOG_JSON")]
    pub log_json: bool,
    /// Master secret that signs tokens (the same on every node) [default: no token service].
    #[arg(long, env = "SLUICE_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// FxA-compatible remote verifier: `POST {URL}/v1/verify`.
    #[arg(long, env = "SLUICE_TOKEN_VERIFY_URL")]
    pub token_verify_url: Option<String>,
    /// Scope a credential must carry [default: sluice].
    #[arg(long, env = "SLUICE_TOKEN_SCOPE")]
    pub token_scope: Option<String>,
    /// Users' email domain (`<user>@<domain>`) [default: api.accounts.firefox.com].
    #[arg(long, env = "SLUICE_TOKEN_EMAIL_DOMAIN")]
    pub token_email_domain: Option<String>,
    /// `NAME-VERSION[:DURATION_S]` served at /1.0/NAME/VERSION (repeatable) [default: queuey-1.0:3600].
    #[arg(long = "token-app", env = "SLUICE_TOKEN_APPS", value_delimiter = ',')]
    pub token_apps: Vec<String>,
    /// Users each data group takes [default: 100000].
    #[arg(long, env = "SLUICE_TOKEN_NODE_CAPACITY")]
    pub token_node_capacity: Option<u32>,
    /// Secret of the hashed user and device ids in tokens [default: the token secret].
    #[arg(long, env = "SLUICE_TOKEN_METRICS_SECRET", hide_env_values = true)]
    pub token_metrics_secret: Option<String>,
    /// A JWKS file: JWT credentials are verified locally against its keys (RS256, EdDSA).
    #[arg(long, env = "SLUICE_TOKEN_JWKS")]
    pub token_jwks: Option<PathBuf>,
    /// An issuer JWTs may come from (repeatable) [default: any].
    #[arg(
        long = "token-issuer",
        env = "SLUICE_TOKEN_ISSUERS",
        value_delimiter = ','
    )]
    pub token_issuers: Vec<String>,
    /// Token requests per second per client address, 0 = unlimited [default: 20].
    #[arg(long, env = "SLUICE_TOKEN_IP_RATE")]
    pub token_ip_rate: Option<u32>,
    /// New users assigned per minute on this node, 0 = unlimited [default: 600].
    #[arg(long, env = "SLUICE_TOKEN_NEW_USERS_PER_MINUTE")]
    pub token_new_users_per_minute: Option<u32>,
    /// Share of a token node's capacity released at a time, 0 < R <= 1 (cluster-wide; the last node started with it sets it) [default: 0.1].
    #[arg(long, env = "SLUICE_TOKEN_RELEASE_RATE")]
    pub token_release_rate: Option<f64>,
    /// Seconds a Hawk request's timestamp may differ from this node's clock [default: 60].
    #[arg(long, env = "SLUICE_HAWK_SKEW_S")]
    pub hawk_skew_s: Option<u64>,
    /// New users assigned per minute on this node from any one issuer, 0 = unlimited [default: 300].
    #[arg(long, env = "SLUICE_TOKEN_NEW_USERS_PER_ISSUER_PER_MINUTE")]
    pub token_new_users_per_issuer_per_minute: Option<u32>,
}

/// How partition logs are written (`--partition-writes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionWrites {
    /// `O_DIRECT` write-outs; readers of the newest bytes get them from
    /// memory (engine `WriteMode::Direct`). Spares the page cache's new
    /// pages, costly on the VM measured (docs/benchmarks.md).
    Direct,
    /// Through the page cache (engine `WriteMode::Buffered`), which then
    /// also holds recent data for consumers reading a backlog.
    Buffered,
}

impl PartitionWrites {
    /// The engine's write mode for this choice.
    pub fn write_mode(self) -> WriteMode {
        match self {
            PartitionWrites::Direct => WriteMode::Direct,
            PartitionWrites::Buffered => WriteMode::Buffered,
        }
    }
}

/// The `--config` file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    node_id: Option<u64>,
    peers: Option<String>,
    groups: Option<u32>,
    cluster_secret: Option<String>,
    admin_key: Option<String>,
    #[serde(default)]
    app_keys: Vec<String>,
    read_cap: Option<usize>,
    disk_reserve_mb: Option<u64>,
    segment_kib: Option<u64>,
    partition_writes: Option<PartitionWrites>,
    checkpoint_entries: Option<u64>,
    scrub_mib_per_s: Option<u64>,
    log_json: Option<bool>,
    token_secret: Option<String>,
    token_verify_url: Option<String>,
    token_scope: Option<String>,
    token_email_domain: Option<String>,
    #[serde(default)]
    token_apps: Vec<String>,
    token_node_capacity: Option<u32>,
    token_metrics_secret: Option<String>,
    token_ip_rate: Option<u32>,
    token_new_users_per_minute: Option<u32>,
    token_new_users_per_issuer_per_minute: Option<u32>,
    token_release_rate: Option<f64>,
    hawk_skew_s: Option<u64>,
    token_jwks: Option<PathBuf>,
    #[serde(default)]
    token_issuers: Vec<String>,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting's value is invalid.
    #[error("--{setting}: {reason}")]
    Invalid {
        /// The setting, as its flag is spelled.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// The resolved settings of one node.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The public URL, when configured (else derived from the bound address).
    pub public_url: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// This node's id.
    pub node_id: u64,
    /// Initial members (empty: a single-node cluster of this node).
    pub peers: BTreeMap<u64, String>,
    /// Data groups at formation.
    pub groups: u32,
    /// The cluster secret, when configured.
    pub cluster_secret: Option<String>,
    /// The admin key, when configured.
    pub admin_key: Option<String>,
    /// Application keys to ensure: (application, key).
    pub app_keys: Vec<(String, String)>,
    /// Per-partition cap of a v1 read without `limit`.
    pub read_cap: usize,
    /// Free space the disk keeps; writes are refused below it.
    pub disk_reserve_bytes: u64,
    /// Size at which a partition log starts a new segment.
    pub segment_bytes: u64,
    /// How partition logs are written.
    pub partition_writes: PartitionWrites,
    /// Raft entries between checkpoints of a group.
    pub checkpoint_entries: u64,
    /// Bytes per second the scrubber verifies (0: off).
    pub scrub_bytes_per_s: u64,
    /// Whether logs are JSON lines.
    pub log_json: bool,
    /// Seconds a Hawk timestamp may differ from the clock.
    pub hawk_skew_s: u64,
    /// The token service, when `--token-secret` is given.
    pub token: Option<TokenSettings>,
}

/// Default lifetime of a token, seconds.
pub const TOKEN_DURATION_S_DEFAULT: u64 = 3_600;
/// Widest Hawk skew window, seconds: past an hour, replay protection would
/// need nonces kept for that long.
pub const HAWK_SKEW_S_MAX: u64 = 3_600;

/// Longest token lifetime, seconds.
pub const TOKEN_DURATION_S_MAX: u64 = 86_400;
/// Default users per data group.
pub const TOKEN_NODE_CAPACITY_DEFAULT: u32 = 100_000;

/// The token service's settings.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// Master secret; each node's signing secret derives from it.
    pub secret: String,
    /// Secret of the hashed metrics ids.
    pub metrics_secret: String,
    /// The remote verifier's base URL, if any.
    pub verify_url: Option<String>,
    /// Required scope.
    pub scope: String,
    /// Users' email domain.
    pub email_domain: String,
    /// Served `(app, version)` → token lifetime in seconds.
    pub apps: BTreeMap<(String, String), u64>,
    /// Users each data group takes.
    pub node_capacity: u32,
    /// Token requests per second per client address (0: unlimited).
    pub ip_rate_per_s: u32,
    /// New users per minute on a node (0: unlimited).
    pub new_users_per_minute: u32,
    /// New users per minute on a node from one issuer (0: unlimited).
    pub new_users_per_issuer_per_minute: u32,
    /// The release rate to set cluster-wide, in ‰, when given.
    pub release_rate_permille: Option<u32>,
    /// The JWKS file for local JWT verification.
    pub jwks: Option<PathBuf>,
    /// Issuers JWTs may come from (empty: any).
    pub issuers: Vec<String>,
}

impl ServeConfig {
    /// Resolves flags and variables (`args`), the file they name, and the
    /// defaults into checked settings.
    pub fn resolve(args: ServeArgs) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let listen_text = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| LISTEN_DEFAULT.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|e| invalid("listen", format!("{listen_text:?}: {e} (want IP:PORT)")))?;
        let public_url = args.public_url.or(file.public_url);
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "public-url",
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        let node_id = args.node_id.or(file.node_id).unwrap_or(1);
        if node_id == 0 {
            return Err(invalid("node-id", "node ids start at 1"));
        }
        let peers = match args.peers.or(file.peers) {
            Some(text) => parse_peers(&text)?,
            None => BTreeMap::new(),
        };
        if !peers.is_empty() && !peers.contains_key(&node_id) {
            return Err(invalid(
                "peers",
                format!("this node ({node_id}) is not among the peers"),
            ));
        }
        let groups = args.groups.or(file.groups).unwrap_or(GROUPS_DEFAULT);
        if !(1..=DATA_GROUPS_MAX).contains(&groups) {
            return Err(invalid(
                "groups",
                format!("{groups} is not in 1..={DATA_GROUPS_MAX}"),
            ));
        }
        let cluster_secret = args.cluster_secret.or(file.cluster_secret);
        if !peers.is_empty() && cluster_secret.is_none() {
            return Err(invalid(
                "cluster-secret",
                "required with --peers (every node must know it)",
            ));
        }
        let admin_key = args.admin_key.or(file.admin_key);
        if let Some(key) = &admin_key {
            check_key("admin-key", key)?;
        }
        let app_key_texts = if args.app_keys.is_empty() {
            file.app_keys
        } else {
            args.app_keys
        };
        if app_key_texts.len() > APP_KEYS_MAX {
            return Err(invalid(
                "app-key",
                format!("at most {APP_KEYS_MAX} entries"),
            ));
        }
        let app_keys = app_key_texts
            .iter()
            .map(|t| parse_app_key(t))
            .collect::<Result<Vec<_>, _>>()?;
        let read_cap = args.read_cap.or(file.read_cap).unwrap_or(READ_CAP_DEFAULT);
        if !(1..=READ_CAP_MAX).contains(&read_cap) {
            return Err(invalid(
                "read-cap",
                format!("{read_cap} is not in 1..={READ_CAP_MAX}"),
            ));
        }
        let reserve_mb = args
            .disk_reserve_mb
            .or(file.disk_reserve_mb)
            .unwrap_or(DISK_RESERVE_MB_DEFAULT);
        if reserve_mb > DISK_RESERVE_MB_MAX {
            return Err(invalid(
                "disk-reserve-mb",
                format!("{reserve_mb} is over {DISK_RESERVE_MB_MAX}"),
            ));
        }
        let segment_kib = args
            .segment_kib
            .or(file.segment_kib)
            .unwrap_or(SEGMENT_KIB_DEFAULT);
        let (min_kib, max_kib) = (
            sluice_engine::limits::SEGMENT_BYTES_MIN / 1024,
            sluice_engine::limits::SEGMENT_BYTES_MAX / 1024,
        );
        if !(min_kib..=max_kib).contains(&segment_kib) {
            return Err(invalid(
                "segment-kib",
                format!("{segment_kib} is not in {min_kib}..={max_kib}"),
            ));
        }
        let checkpoint_entries = args
            .checkpoint_entries
            .or(file.checkpoint_entries)
            .unwrap_or(sluice_raft::node::CHECKPOINT_ENTRIES_DEFAULT);
        if !(CHECKPOINT_ENTRIES_MIN..=CHECKPOINT_ENTRIES_MAX).contains(&checkpoint_entries) {
            return Err(invalid(
                "checkpoint-entries",
                format!(
                    "{checkpoint_entries} is not in {CHECKPOINT_ENTRIES_MIN}..={CHECKPOINT_ENTRIES_MAX}"
                ),
            ));
        }
        let scrub_mib_per_s = args
            .scrub_mib_per_s
            .or(file.scrub_mib_per_s)
            .unwrap_or(SCRUB_MIB_PER_S_DEFAULT);
        if scrub_mib_per_s > SCRUB_MIB_PER_S_MAX {
            return Err(invalid(
                "scrub-mib-per-s",
                format!("{scrub_mib_per_s} is over {SCRUB_MIB_PER_S_MAX}"),
            ));
        }
        let hawk_skew_s = args
            .hawk_skew_s
            .or(file.hawk_skew_s)
            .unwrap_or(sluice_token::hawk::SKEW_SECS_DEFAULT);
        if !(1..=HAWK_SKEW_S_MAX).contains(&hawk_skew_s) {
            return Err(invalid(
                "hawk-skew-s",
                format!("{hawk_skew_s} is not in 1..={HAWK_SKEW_S_MAX}"),
            ));
        }
        Ok(ServeConfig {
            listen,
            public_url,
            hawk_skew_s,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            node_id,
            peers,
            groups,
            cluster_secret,
            admin_key,
            app_keys,
            read_cap,
            disk_reserve_bytes: reserve_mb * 1024 * 1024,
            segment_bytes: segment_kib * 1024,
            partition_writes: args
                .partition_writes
                .or(file.partition_writes)
                .unwrap_or(PartitionWrites::Direct),
            checkpoint_entries,
            scrub_bytes_per_s: scrub_mib_per_s * 1024 * 1024,
            log_json: args.log_json || file.log_json.unwrap_or(false),
            token: token_settings(TokenInputs {
                secret: args.token_secret.or(file.token_secret),
                verify_url: args.token_verify_url.or(file.token_verify_url),
                scope: args.token_scope.or(file.token_scope),
                email_domain: args.token_email_domain.or(file.token_email_domain),
                apps: if args.token_apps.is_empty() {
                    file.token_apps
                } else {
                    args.token_apps
                },
                node_capacity: args.token_node_capacity.or(file.token_node_capacity),
                metrics_secret: args.token_metrics_secret.or(file.token_metrics_secret),
                ip_rate_per_s: args.token_ip_rate.or(file.token_ip_rate),
                new_users_per_minute: args
                    .token_new_users_per_minute
                    .or(file.token_new_users_per_minute),
                new_users_per_issuer_per_minute: args
                    .token_new_users_per_issuer_per_minute
                    .or(file.token_new_users_per_issuer_per_minute),
                release_rate: args.token_release_rate.or(file.token_release_rate),
                jwks: args.token_jwks.or(file.token_jwks),
                issuers: if args.token_issuers.is_empty() {
                    file.token_issuers
                } else {
                    args.token_issuers
                },
            })?,
        })
    }
}

/// The token settings as given, before checks.
struct TokenInputs {
    secret: Option<String>,
    verify_url: Option<String>,
    scope: Option<String>,
    email_domain: Option<String>,
    apps: Vec<String>,
    node_capacity: Option<u32>,
    metrics_secret: Option<String>,
    ip_rate_per_s: Option<u32>,
    new_users_per_minute: Option<u32>,
    new_users_per_issuer_per_minute: Option<u32>,
    release_rate: Option<f64>,
    jwks: Option<PathBuf>,
    issuers: Vec<String>,
}

/// Checks the token settings; `None` without a secret (then the token
/// endpoint answers 503).
fn token_settings(inputs: TokenInputs) -> Result<Option<TokenSettings>, ConfigError> {
    let TokenInputs {
        secret,
        verify_url,
        scope,
        email_domain,
        apps,
        node_capacity,
        metrics_secret,
        ip_rate_per_s,
        new_users_per_minute,
        new_users_per_issuer_per_minute,
        release_rate,
        jwks,
        issuers,
    } = inputs;
    let release_rate_permille = match release_rate {
        None => None,
        Some(r) if r > 0.0 && r <= 1.0 => Some(((r * 1_000.0).round() as u32).max(1)),
        Some(r) => {
            return Err(invalid(
                "token-release-rate",
                format!("{r} is not in (0, 1]"),
            ));
        }
    };
    let Some(secret) = secret else {
        return Ok(None);
    };
    check_key("token-secret", &secret)?;
    if let Some(url) = &verify_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid(
            "token-verify-url",
            format!("{url:?} is not an http(s) URL"),
        ));
    }
    let apps_text = if apps.is_empty() {
        vec!["queuey-1.0:3600".to_string()]
    } else {
        apps
    };
    let mut apps = BTreeMap::new();
    for text in apps_text.iter().take(APP_KEYS_MAX + 1) {
        let (name_version, duration) = match text.split_once(':') {
            Some((nv, d)) => (nv, Some(d)),
            None => (text.as_str(), None),
        };
        let (name, version) = name_version
            .rsplit_once('-')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| {
                invalid(
                    "token-app",
                    format!("{text:?} is not NAME-VERSION[:DURATION_S]"),
                )
            })?;
        let duration_s = match duration {
            None => TOKEN_DURATION_S_DEFAULT,
            Some(d) => d
                .parse::<u64>()
                .ok()
                .filter(|d| (1..=TOKEN_DURATION_S_MAX).contains(d))
                .ok_or_else(|| {
                    invalid(
                        "token-app",
                        format!("duration {d:?} is not in 1..={TOKEN_DURATION_S_MAX}"),
                    )
                })?,
        };
        apps.insert((name.to_string(), version.to_string()), duration_s);
    }
    if apps.len() > APP_KEYS_MAX {
        return Err(invalid(
            "token-app",
            format!("at most {APP_KEYS_MAX} entries"),
        ));
    }
    Ok(Some(TokenSettings {
        metrics_secret: metrics_secret.unwrap_or_else(|| secret.clone()),
        secret,
        verify_url: verify_url.map(|u| u.trim_end_matches('/').to_string()),
        scope: scope.unwrap_or_else(|| "sluice".to_string()),
        email_domain: email_domain.unwrap_or_else(|| "api.accounts.firefox.com".to_string()),
        apps,
        node_capacity: node_capacity.unwrap_or(TOKEN_NODE_CAPACITY_DEFAULT),
        ip_rate_per_s: ip_rate_per_s.unwrap_or(20),
        new_users_per_minute: new_users_per_minute.unwrap_or(600),
        new_users_per_issuer_per_minute: new_users_per_issuer_per_minute.unwrap_or(300),
        release_rate_permille,
        jwks,
        issuers,
    }))
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let fail = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if len > CONFIG_FILE_BYTES_MAX {
        return Err(fail(format!(
            "{len} bytes; at most {CONFIG_FILE_BYTES_MAX}"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    toml::from_str(&text).map_err(|e| fail(e.to_string()))
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| invalid("peers", format!("{entry:?} is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 1)
            .ok_or_else(|| invalid("peers", format!("{id:?} is not a node id ≥ 1")))?;
        let addr = addr.trim();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid("peers", format!("{addr:?} is not HOST:PORT")));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(invalid("peers", format!("node {id} is listed twice")));
        }
    }
    Ok(peers)
}

/// Parses `NAME=KEY`.
fn parse_app_key(text: &str) -> Result<(String, String), ConfigError> {
    let (name, key) = text
        .split_once('=')
        .ok_or_else(|| invalid("app-key", "want NAME=KEY"))?;
    if !sluice_raft::meta::machine::valid_name(name) {
        return Err(invalid(
            "app-key",
            format!("{name:?}: names are 1..=50 of [A-Za-z0-9_-]"),
        ));
    }
    check_key("app-key", key)?;
    Ok((name.to_string(), key.to_string()))
}

/// Shortest accepted key (application or admin).
pub const KEY_BYTES_MIN: usize = 16;
/// Longest accepted key.
pub const KEY_BYTES_MAX: usize = 256;

fn check_key(setting: &'static str, key: &str) -> Result<(), ConfigError> {
    let ok = (KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            setting,
            format!("keys are {KEY_BYTES_MIN}..={KEY_BYTES_MAX} visible ASCII characters"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_settings() {
        let c = ServeConfig::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(c.listen.to_string(), LISTEN_DEFAULT);
        assert_eq!(c.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
        assert_eq!(
            (c.node_id, c.groups, c.read_cap),
            (1, GROUPS_DEFAULT, READ_CAP_DEFAULT)
        );
        assert!(c.peers.is_empty());
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ngroups = 8\nread-cap = 50\napp-keys = [\"web=0123456789abcdef\"]\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            groups: Some(2),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(args).expect("resolve");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000", "from the file");
        assert_eq!(c.groups, 2, "the flag wins");
        assert_eq!(c.read_cap, 50);
        assert_eq!(c.app_keys, vec![("web".into(), "0123456789abcdef".into())]);

        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let err = ServeConfig::resolve(args).expect_err("a misspelt key");
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn the_release_rate_is_kept_in_permille_and_the_skew_in_seconds() {
        let c = ServeConfig::resolve(ServeArgs {
            token_secret: Some("token-master-secret-0123456789".into()),
            token_release_rate: Some(0.25),
            hawk_skew_s: Some(5),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert_eq!(c.token.map(|t| t.release_rate_permille), Some(Some(250)));
        assert_eq!(c.hawk_skew_s, 5);
        let defaults = ServeConfig::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(defaults.hawk_skew_s, sluice_token::hawk::SKEW_SECS_DEFAULT);
    }

    #[test]
    fn storage_settings_come_from_the_file_and_are_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "segment-kib = 4\ncheckpoint-entries = 10\nscrub-mib-per-s = 0\npartition-writes = \"buffered\"\n",
        )
        .expect("write");
        let c = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .expect("resolve");
        assert_eq!(
            (c.segment_bytes, c.checkpoint_entries, c.scrub_bytes_per_s),
            (4096, 10, 0)
        );
        assert_eq!(c.partition_writes, PartitionWrites::Buffered);
        let defaults = ServeConfig::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(defaults.segment_bytes, SEGMENT_KIB_DEFAULT * 1024);
        assert_eq!(defaults.partition_writes, PartitionWrites::Direct);
        assert_eq!(
            defaults.scrub_bytes_per_s,
            SCRUB_MIB_PER_S_DEFAULT * 1024 * 1024
        );
        let refused = [
            (
                ServeArgs {
                    segment_kib: Some(3),
                    ..ServeArgs::default()
                },
                "--segment-kib",
            ),
            (
                ServeArgs {
                    checkpoint_entries: Some(9),
                    ..ServeArgs::default()
                },
                "--checkpoint-entries",
            ),
            (
                ServeArgs {
                    scrub_mib_per_s: Some(SCRUB_MIB_PER_S_MAX + 1),
                    ..ServeArgs::default()
                },
                "--scrub-mib-per-s",
            ),
        ];
        for (args, flag) in refused {
            let err = ServeConfig::resolve(args).expect_err(flag);
            assert!(err.to_string().contains(flag), "{err}");
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (
                ServeArgs {
                    listen: Some("localhost".into()),
                    ..ServeArgs::default()
                },
                "--listen",
            ),
            (
                ServeArgs {
                    peers: Some("1=127.0.0.1:1,2=127.0.0.1:2".into()),
                    ..ServeArgs::default()
                },
                "--cluster-secret",
            ),
            (
                ServeArgs {
                    peers: Some("2=127.0.0.1:1".into()),
                    cluster_secret: Some("s".repeat(20)),
                    ..ServeArgs::default()
                },
                "--peers",
            ),
            (
                ServeArgs {
                    peers: Some("1=127.0.0.1,2=x:1".into()),
                    ..ServeArgs::default()
                },
                "--peers",
            ),
            (
                ServeArgs {
                    node_id: Some(0),
                    ..ServeArgs::default()
                },
                "--node-id",
            ),
            (
                ServeArgs {
                    groups: Some(0),
                    ..ServeArgs::default()
                },
                "--groups",
            ),
            (
                ServeArgs {
                    app_keys: vec!["no key".into()],
                    ..ServeArgs::default()
                },
                "--app-key",
            ),
            (
                ServeArgs {
                    app_keys: vec!["web=short".into()],
                    ..ServeArgs::default()
                },
                "--app-key",
            ),
            (
                ServeArgs {
                    admin_key: Some("short".into()),
                    ..ServeArgs::default()
                },
                "--admin-key",
            ),
            (
                ServeArgs {
                    hawk_skew_s: Some(0),
                    ..ServeArgs::default()
                },
                "--hawk-skew-s",
            ),
            (
                ServeArgs {
                    token_release_rate: Some(0.0),
                    ..ServeArgs::default()
                },
                "--token-release-rate",
            ),
            (
                ServeArgs {
                    token_release_rate: Some(1.5),
                    ..ServeArgs::default()
                },
                "--token-release-rate",
            ),
        ];
        for (args, setting) in cases {
            let err = ServeConfig::resolve(args.clone()).expect_err("refused");
            assert!(err.to_string().starts_with(setting), "{args:?}: {err}");
        }
    }
}
