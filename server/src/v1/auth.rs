//! Who is calling, and what they may do (Queuey v1 permission rules).
//!
//! `Authorization: Application <key>` names an application by one of its
//! keys (checked against the SHA-256 digests the meta group keeps, so a
//! key is never stored). Hawk (token users) comes with the token server.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use sluice_raft::meta::command::{Queue, QueueType};
use sluice_raft::meta::machine::MetaState;

use crate::v1::error::V1Error;

/// A request's credentials as presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'h> {
    /// No `Authorization` header.
    None,
    /// `Application <key>`, borrowed from the request's headers.
    AppKey(&'h str),
    /// A token user whose Hawk signature the route layer verified.
    User(u64),
    /// Any other scheme, or a malformed header.
    Unsupported,
}

/// Longest `Authorization` header looked at.
const AUTHORIZATION_BYTES_MAX: usize = 4096;

impl Credentials<'_> {
    /// Reads the `Authorization` header.
    pub fn from_headers(headers: &HeaderMap) -> Credentials<'_> {
        // Set only by `hawk_auth`, which removes it from client requests.
        if let Some(uid) = headers
            .get(&crate::hawk_auth::USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Credentials::User(uid);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credentials::None;
        };
        let Ok(text) = value.to_str() else {
            return Credentials::Unsupported;
        };
        if text.len() > AUTHORIZATION_BYTES_MAX {
            return Credentials::Unsupported;
        }
        match text.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("Application") => {
                Credentials::AppKey(key.trim())
            }
            _ => Credentials::Unsupported,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// An application, by name (shared with the meta state: resolved on
    /// every request).
    App(Arc<str>),
    /// A token user, by uid (principle `user:<uid>`).
    User(u64),
}

impl Caller {
    /// Resolves credentials against the meta state: an unknown key, or an
    /// unsupported scheme, is 401.
    pub fn resolve(credentials: &Credentials<'_>, meta: &MetaState) -> Result<Caller, V1Error> {
        match credentials {
            Credentials::None => Ok(Caller::Anonymous),
            Credentials::AppKey(key) => meta
                .app_of_key(key)
                .map(|app| Caller::App(Arc::clone(app)))
                .ok_or_else(V1Error::bad_key),
            Credentials::User(uid) => Ok(Caller::User(*uid)),
            Credentials::Unsupported => Err(V1Error::bad_key()),
        }
    }

    /// Whether this caller is application `app`.
    pub fn is_app(&self, app: &str) -> bool {
        matches!(self, Caller::App(a) if **a == *app)
    }

    /// Requires the caller to be application `app` (403 otherwise).
    pub fn require_app(&self, app: &str) -> Result<(), V1Error> {
        if self.is_app(app) {
            Ok(())
        } else {
            Err(V1Error::forbidden())
        }
    }

    /// Whether the caller matches one of `principles` (`app:<name>`).
    fn is_principle(&self, principles: &[String]) -> bool {
        match self {
            Caller::App(app) => principles
                .iter()
                .any(|p| p.strip_prefix("app:") == Some(&**app)),
            Caller::User(uid) => {
                let me = format!("user:{uid}");
                principles.contains(&me)
            }
            Caller::Anonymous => false,
        }
    }

    /// May read the queue's messages: anyone for a public queue; else its
    /// principles when it has some, else its application.
    pub fn may_read(&self, queue: &Queue) -> Result<(), V1Error> {
        if queue.settings.queue_type == QueueType::Public {
            return Ok(());
        }
        self.may_delete(queue)
    }

    /// May delete the queue's messages: its principles when it has some,
    /// else its application.
    pub fn may_delete(&self, queue: &Queue) -> Result<(), V1Error> {
        let allowed = if queue.settings.principles.is_empty() {
            self.is_app(&queue.app)
        } else {
            self.is_principle(&queue.settings.principles)
        };
        if allowed {
            Ok(())
        } else {
            Err(V1Error::forbidden())
        }
    }
}
