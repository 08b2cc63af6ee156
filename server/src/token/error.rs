//! The token endpoint's error answers (`token.md`'s table): `{"status":
//! S, "errors": [{"location", "name", "description"}]}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client is told to wait after a 429 or a 503 for capacity.
pub const RETRY_AFTER_S: u64 = 60;

/// One refusal of a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// HTTP status.
    pub http: StatusCode,
    /// The body's `status`.
    pub status: &'static str,
    /// `location` of the error.
    pub location: &'static str,
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// Whether to send `Retry-After`.
    pub retry_after: bool,
}

impl TokenError {
    fn new(
        http: StatusCode,
        status: &'static str,
        location: &'static str,
        name: &str,
        description: &str,
    ) -> Self {
        TokenError {
            http,
            status,
            location,
            name: name.to_string(),
            description: description.to_string(),
            retry_after: false,
        }
    }

    /// 401 `error`: no or malformed `Authorization`.
    pub fn unauthorized() -> Self {
        TokenError::new(
            StatusCode::UNAUTHORIZED,
            "error",
            "body",
            "",
            "Unauthorized",
        )
    }

    /// 401 `error`: a scheme other than Bearer.
    pub fn unsupported() -> Self {
        TokenError::new(StatusCode::UNAUTHORIZED, "error", "body", "", "Unsupported")
    }

    /// 401 with a specific status (`invalid-credentials`,
    /// `invalid-generation`, `invalid-keysChangedAt`).
    pub fn invalid(status: &'static str) -> Self {
        TokenError::new(StatusCode::UNAUTHORIZED, status, "body", "", "Unauthorized")
    }

    /// 401 `invalid-client-state` with the rule broken.
    pub fn client_state(rule: &str) -> Self {
        TokenError::new(
            StatusCode::UNAUTHORIZED,
            "invalid-client-state",
            "header",
            "X-Client-State",
            &format!("Unacceptable client-state value {rule}"),
        )
    }

    /// 400: `X-Client-State` syntax.
    pub fn bad_client_state() -> Self {
        TokenError::new(
            StatusCode::BAD_REQUEST,
            "error",
            "header",
            "X-Client-State",
            "Invalid client state value",
        )
    }

    /// 404: an application not served.
    pub fn unknown_app() -> Self {
        TokenError::new(
            StatusCode::NOT_FOUND,
            "error",
            "url",
            "application",
            "Unsupported application",
        )
    }

    /// 404: a version not served.
    pub fn unknown_version(version: &str) -> Self {
        let shown: String = version.chars().take(40).collect();
        TokenError::new(
            StatusCode::NOT_FOUND,
            "error",
            "url",
            &shown,
            "Unsupported application version",
        )
    }

    /// 403: new users are disabled.
    pub fn new_users_disabled() -> Self {
        TokenError::new(
            StatusCode::FORBIDDEN,
            "new-users-disabled",
            "body",
            "",
            "New users are not allowed",
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many() -> Self {
        TokenError {
            retry_after: true,
            ..TokenError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "error",
                "body",
                "",
                "Too many requests",
            )
        }
    }

    /// 503 with `Retry-After`: no group can take the user.
    pub fn no_capacity() -> Self {
        TokenError {
            retry_after: true,
            ..TokenError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "error",
                "body",
                "",
                "No capacity",
            )
        }
    }

    /// 503: the verifier (or the cluster) could not be reached.
    pub fn unavailable() -> Self {
        TokenError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "error",
            "body",
            "",
            "Resource is not available",
        )
    }

    /// 503: this server has no verifier configured.
    pub fn not_configured() -> Self {
        TokenError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "error",
            "body",
            "",
            "No token verifier is configured on this server (see --token-secret and --token-verify-url)",
        )
    }

    /// 400 for an input over a bound.
    pub fn bad_request(description: &str) -> Self {
        TokenError::new(StatusCode::BAD_REQUEST, "error", "body", "", description)
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status,
            "errors": [{
                "location": self.location,
                "name": self.name,
                "description": self.description,
            }],
        });
        let mut response = (self.http, Json(body)).into_response();
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        response
    }
}
