//! The token server endpoint, `GET /1.0/{app}/{version}`
//! (`../shared/spec/token.md`): verify the caller's credential, find or
//! make their assignment to a data group in the meta group (one Raft
//! command, so allocation is race-free), and sign a tokenlib-compatible
//! token with that group's node secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sluice_raft::meta::command::{MetaCommand, MetaReply};
use sluice_token::assign::{Command, Login, Refused, Reply};
use sluice_token::encoding::{b64url_decode, hex};
use sluice_token::{ids, token};

use crate::config::TokenSettings;
use crate::http::AppState;
use crate::token::error::TokenError;

pub mod admin;
pub mod error;
pub mod limits;
pub mod verify;

/// The token service of this node.
pub struct TokenService {
    /// Its settings.
    pub settings: TokenSettings,
    /// HTTP client for the remote verifier.
    pub client: reqwest::Client,
    /// Requests per client address.
    pub per_client: limits::PerClient,
    /// New assignments per minute.
    pub new_users: limits::NewUsers,
    /// Local JWT verification, when a JWKS is configured.
    pub jwt: Option<verify::LocalJwt>,
}

/// The token routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/1.0/{app}/{version}", get(issue))
        .merge(admin::router())
}

/// The service name of an application version: `{app}-{version}`.
pub fn service_name(app: &str, version: &str) -> String {
    format!("{app}-{version}")
}

/// The node URL of a data group.
pub fn node_url(public_url: &str, group: u32) -> String {
    format!("{}/g/{group}", public_url.trim_end_matches('/'))
}

/// `GET /1.0/{app}/{version}[?duration=N]`.
async fn issue(
    State(state): State<AppState>,
    Path((app, version)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    client: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if let (Some(service), Some(axum::Extension(ConnectInfo(addr)))) =
        (state.token.as_ref(), client)
        && !service
            .per_client
            .allow(addr.ip(), std::time::Instant::now())
    {
        return TokenError::too_many().into_response();
    }
    match issue_token(&state, &app, &version, query.as_deref(), &headers).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn issue_token(
    state: &AppState,
    app: &str,
    version: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, TokenError> {
    let Some(service) = state.token.as_ref() else {
        return Err(TokenError::not_configured());
    };
    let settings = &service.settings;
    let default_duration = match settings.apps.get(&(app.to_string(), version.to_string())) {
        Some(d) => *d,
        None if settings.apps.keys().any(|(a, _)| a == app) => {
            return Err(TokenError::unknown_version(version));
        }
        None => return Err(TokenError::unknown_app()),
    };
    let credential = bearer(headers)?;
    let client_state = client_state(headers)?;
    let identity = match (&service.jwt, settings.verify_url.as_deref()) {
        (Some(jwt), _) if verify::LocalJwt::looks_like_jwt(&credential) => {
            jwt.verify(&credential, &settings.scope)?
        }
        (_, Some(url)) => {
            verify::remote(&service.client, url, &credential, &settings.scope).await?
        }
        (Some(_), None) => return Err(TokenError::invalid("invalid-credentials")),
        (None, None) => return Err(TokenError::not_configured()),
    };
    let duration = requested_duration(query)
        .filter(|d| *d <= default_duration)
        .unwrap_or(default_duration);
    let now_ms = now_ms();
    let name = service_name(app, version);
    let email = format!("{}@{}", identity.user, settings.email_domain);
    let mut login = Login {
        service: name,
        email,
        generation: identity.generation,
        keys_changed_at: client_state.keys_changed_at,
        client_state: client_state.hex.clone(),
        now_ms,
        may_create: false,
    };
    // One linearizable read: a returning user whose login changes nothing
    // is answered from it; anything else is one Raft command.
    let (known, unchanged, open_to_new) = state
        .cluster
        .meta(|m| {
            let tokens = m.tokens();
            let known = !tokens.rows(&login.service, &login.email).is_empty();
            (
                known,
                tokens.unchanged_login(&login),
                tokens.allows_new_users(),
            )
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "reading a token user");
            TokenError::unavailable()
        })?;
    let reply = match unchanged {
        Some(row) => MetaReply::Token(Reply::Assigned(row)),
        None => {
            // A user not seen before takes a slot of the new-user cap; a
            // returning user never does (the state machine decides which
            // it is when the command applies).
            login.may_create = known
                || (open_to_new
                    && service
                        .new_users
                        .reserve(&identity.issuer, std::time::Instant::now()));
            if !known && open_to_new && !login.may_create {
                // Over the cap: refused here, so that a flood of new
                // identities costs no Raft write.
                return Err(refusal(Refused::NewUserCap));
            }
            state
                .cluster
                .propose_meta(MetaCommand::Token(Command::Login(login)))
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "assigning a token user");
                    TokenError::unavailable()
                })?
        }
    };
    let row = match reply {
        MetaReply::Token(Reply::Assigned(row)) => row,
        MetaReply::Token(Reply::Refused(refused)) => return Err(refusal(refused)),
        other => {
            tracing::error!(reply = ?other, "unexpected assignment reply");
            return Err(TokenError::unavailable());
        }
    };
    let node_secret =
        ids::node_secret(&settings.secret, &row.node).ok_or_else(TokenError::unavailable)?;
    let hashed_fxa_uid = ids::hashed_fxa_uid(&settings.metrics_secret, &identity.user);
    let kid_time = client_state
        .keys_changed_at
        .or(row.keys_changed_at)
        .unwrap_or(row.generation);
    let salt = hex(&crate::secrets::random_bytes::<3>().map_err(|_| TokenError::unavailable())?);
    let payload = token::Payload {
        uid: row.uid,
        node: row.node.clone(),
        expires: (now_ms / 1_000 + duration) as f64,
        salt,
        fxa_uid: identity.user.clone(),
        fxa_kid: ids::fxa_kid(kid_time, &row.client_state).unwrap_or_default(),
        hashed_device_id: ids::hashed_device_id(&settings.metrics_secret, &hashed_fxa_uid),
        hashed_fxa_uid: hashed_fxa_uid.clone(),
    };
    let made = token::make(&node_secret, &payload).map_err(|_| TokenError::unavailable())?;
    let body = json!({
        "id": made.id,
        "key": made.key,
        "uid": row.uid,
        "api_endpoint": format!("{}/v1", row.node),
        "duration": duration,
        "hashalg": "sha256",
        "hashed_fxa_uid": hashed_fxa_uid,
        "node_type": "sluice",
    });
    let mut response = Json(body).into_response();
    let h = response.headers_mut();
    h.insert("x-timestamp", HeaderValue::from(now_ms / 1_000));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// An assignment refusal as the spec's error row.
fn refusal(refused: Refused) -> TokenError {
    match refused {
        Refused::Generation => TokenError::invalid("invalid-generation"),
        Refused::KeysChangedAt => TokenError::invalid("invalid-keysChangedAt"),
        Refused::ClientState(rule) => TokenError::client_state(&rule),
        Refused::NewUsersDisabled => TokenError::new_users_disabled(),
        Refused::NewUserCap => TokenError::too_many(),
        Refused::NoCapacity => TokenError::no_capacity(),
        Refused::Invalid(why) => TokenError::bad_request(&why),
    }
}

/// The Bearer credential (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Result<String, TokenError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 8_192)
        .ok_or_else(TokenError::unauthorized)?;
    let (scheme, credential) = value.split_once(' ').ok_or_else(TokenError::unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::unsupported());
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(TokenError::unauthorized());
    }
    Ok(credential.to_string())
}

/// What `X-KeyID` and `X-Client-State` say.
#[derive(Debug, Default, PartialEq, Eq)]
struct ClientState {
    keys_changed_at: Option<u64>,
    hex: String,
}

/// Reads `X-Client-State` (`^[a-zA-Z0-9._-]{1,32}$`, else 400) and
/// `X-KeyID` (`<keys_changed_at>-<base64url(client state)>`, else 401);
/// both optional, and they must agree.
fn client_state(headers: &HeaderMap) -> Result<ClientState, TokenError> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map(str::to_string));
    let header_state = match text("x-client-state") {
        None => None,
        Some(Ok(s))
            if (1..=32).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
        {
            Some(s.to_ascii_lowercase())
        }
        Some(_) => return Err(TokenError::bad_client_state()),
    };
    let key_id = match text("x-keyid") {
        None => None,
        Some(Ok(k)) => {
            Some(parse_key_id(&k).ok_or_else(|| TokenError::invalid("invalid-credentials"))?)
        }
        Some(Err(_)) => return Err(TokenError::invalid("invalid-credentials")),
    };
    match (header_state, key_id) {
        (Some(h), Some((_, k))) if h != k => Err(TokenError::client_state(
            "X-Client-State and X-KeyID disagree",
        )),
        (_, Some((kca, k))) => Ok(ClientState {
            keys_changed_at: Some(kca),
            hex: k,
        }),
        (Some(h), None) => Ok(ClientState {
            keys_changed_at: None,
            hex: h,
        }),
        (None, None) => Ok(ClientState::default()),
    }
}

/// `<keys_changed_at>-<base64url-nopad(client state)>` → (time, hex).
fn parse_key_id(text: &str) -> Option<(u64, String)> {
    let (time, state) = text.split_once('-')?;
    if time.is_empty() || time.len() > 20 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time = time.parse().ok()?;
    let bytes = b64url_decode(state)?;
    (bytes.len() <= 32).then(|| (time, hex(&bytes)))
}

/// `?duration=N` when it is a positive integer.
fn requested_duration(query: Option<&str>) -> Option<u64> {
    let pairs: BTreeMap<String, String> = form_urlencoded::parse(query?.as_bytes())
        .take(16)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs
        .get("duration")?
        .parse::<u64>()
        .ok()
        .filter(|d| *d > 0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Registers every data group as a node of every served application, at
/// `capacity`, unless it is registered already (an operator's changes are
/// kept); and sets the release rate when `--token-release-rate` names one
/// the cluster does not have yet.
pub async fn register_nodes(state: &AppState, public_url: &str) -> Result<usize, String> {
    let Some(service) = state.token.as_ref() else {
        return Ok(0);
    };
    let (rate, groups, known) = state
        .cluster
        .meta(|m| {
            let groups: Vec<u32> = m.data_groups().iter().map(|g| g.0).collect();
            let known: Vec<(String, String)> = service
                .settings
                .apps
                .keys()
                .flat_map(|(a, v)| {
                    let name = service_name(a, v);
                    groups
                        .iter()
                        .map(move |g| (name.clone(), node_url(public_url, *g)))
                        .collect::<Vec<_>>()
                })
                .filter(|(s, u)| m.tokens().node(s, u).is_some())
                .collect();
            (m.tokens().release_rate_permille(), groups, known)
        })
        .await
        .map_err(|e| e.to_string())?;
    // Before the nodes: a new node's first release follows the rate.
    if let Some(permille) = service.settings.release_rate_permille
        && permille != rate
    {
        state
            .cluster
            .propose_meta(MetaCommand::Token(Command::SetReleaseRate(permille)))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut added = 0;
    for (app, version) in service.settings.apps.keys() {
        let name = service_name(app, version);
        for g in &groups {
            let url = node_url(public_url, *g);
            if known.contains(&(name.clone(), url.clone())) {
                continue;
            }
            let command = Command::SetNode {
                service: name.clone(),
                url,
                capacity: Some(service.settings.node_capacity),
                available: None,
                current_load: None,
                downed: None,
                backoff: None,
            };
            state
                .cluster
                .propose_meta(MetaCommand::Token(command))
                .await
                .map_err(|e| e.to_string())?;
            added += 1;
        }
    }
    Ok(added)
}

/// A token service for `settings`.
pub fn service(settings: TokenSettings) -> Result<Arc<TokenService>, String> {
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let jwt = match &settings.jwks {
        None => None,
        Some(path) => {
            let text =
                std::fs::read(path).map_err(|e| format!("--token-jwks {}: {e}", path.display()))?;
            Some(
                verify::LocalJwt::from_jwks(&text, settings.issuers.clone())
                    .map_err(|e| format!("--token-jwks {}: {e}", path.display()))?,
            )
        }
    };
    Ok(Arc::new(TokenService {
        jwt,
        per_client: limits::PerClient::new(
            settings.ip_rate_per_s,
            settings.ip_rate_per_s.saturating_mul(2),
        ),
        new_users: limits::NewUsers::new(
            settings.new_users_per_minute,
            settings.new_users_per_issuer_per_minute,
        ),
        settings,
        client,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn client_state_headers_follow_the_spec() {
        assert_eq!(client_state(&headers(&[])), Ok(ClientState::default()));
        assert_eq!(
            client_state(&headers(&[("x-keyid", "1234-qqo")])),
            Ok(ClientState {
                keys_changed_at: Some(1234),
                hex: "aaaa".into()
            })
        );
        assert_eq!(
            client_state(&headers(&[
                ("x-client-state", "AAAA"),
                ("x-keyid", "1234-qqo")
            ]))
            .map(|c| c.hex),
            Ok("aaaa".into())
        );
        assert_eq!(
            client_state(&headers(&[
                ("x-client-state", "bbbb"),
                ("x-keyid", "1234-qqo")
            ]))
            .map_err(|e| e.status),
            Err("invalid-client-state")
        );
        for bad in ["", "has space", &"a".repeat(33), "a/b"] {
            let err = client_state(&headers(&[("x-client-state", bad)])).expect_err(bad);
            assert_eq!((err.http.as_u16(), err.status), (400, "error"), "{bad}");
        }
        for bad in ["qqo", "x-qqo", "12-!!", "-qqo"] {
            let err = client_state(&headers(&[("x-keyid", bad)])).expect_err(bad);
            assert_eq!(err.status, "invalid-credentials", "{bad}");
        }
    }

    #[test]
    fn bearer_credentials_and_durations() {
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer abc")])),
            Ok("abc".into())
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "BrowserID x")])).map_err(|e| e.description),
            Err("Unsupported".into())
        );
        assert!(bearer(&headers(&[("authorization", "Bearer ")])).is_err());
        assert!(bearer(&headers(&[])).is_err());
        assert_eq!(requested_duration(Some("duration=60")), Some(60));
        assert_eq!(requested_duration(Some("duration=0")), None);
        assert_eq!(requested_duration(Some("duration=x")), None);
        assert_eq!(node_url("http://h:1/", 3), "http://h:1/g/3");
    }
}
