//! Hawk on the queue APIs (`token.md`, "Hawk on the storage side"): a
//! request signed with a token's id and key acts as principle
//! `user:<uid>`.
//!
//! A route layer checks, in order: the header's syntax; that the token's
//! node is one this cluster serves; the token's signature (with that
//! node's secret, derived from the master) and expiry; the request MAC
//! over the path as the client sent it (before the `/g/{group}` hint is
//! stripped), the Host and port; the payload hash when sent; the
//! timestamp skew; and last the nonce, so a forged request cannot fill
//! the cache. Then the handlers see the verified user in an internal
//! header that is always removed from what clients send.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_token::hawk::{self, HawkError};
use sluice_token::{ids, token};
use tower::Service;
use tower::layer::{LayerFn, layer_fn};

use crate::http::{AppState, SentPath};
use crate::v1::error::V1Error;

/// The internal header carrying a verified Hawk user's uid.
/// A `HeaderName`, not a `&str`: looking a header up by a string parses
/// and checks the name first, on every request.
pub static USER_HEADER: HeaderName = HeaderName::from_static("x-sluice-hawk-user");

/// The route layer, checking against `state`'s token service and nonce
/// cache. Written out rather than `middleware::from_fn`, which boxes the
/// inner service and the future of every request: here only a
/// Hawk-signed request (whose check must await) is boxed, and the rest
/// pass through as they are.
pub fn layer<S>(state: AppState) -> LayerFn<impl Fn(S) -> Hawk<S> + Clone> {
    layer_fn(move |inner| Hawk {
        inner,
        state: state.clone(),
    })
}

/// A route's service behind the Hawk check (see [`layer`]).
#[derive(Clone)]
pub struct Hawk<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Hawk<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Checked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        request.headers_mut().remove(&USER_HEADER);
        if !is_hawk(request.headers()) {
            return Checked::Passed {
                inner: self.inner.call(request),
            };
        }
        // The service polled ready is the one that serves; a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Checked::Hawk {
            future: Box::pin(async move {
                match verify(&state, request).await {
                    Ok(request) => match inner.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    Err(e) => e.into_response(),
                }
            }),
        }
    }
}

/// Whether the request is signed with Hawk (its `Authorization` scheme).
pub fn is_hawk(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().get(..5))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"hawk "))
}

pin_project_lite::pin_project! {
    /// A request's response: the route's own future when the request
    /// carries no Hawk header, else the check followed by the route.
    // The macro takes no docs on variants' fields; the variants say it.
    #[allow(missing_docs)]
    #[project = CheckedProjection]
    pub enum Checked<F> {
        /// Not Hawk: the handler decides (a bearer key, or a 401).
        Passed { #[pin] inner: F },
        /// Hawk: verified first, then the route.
        Hawk { future: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl<F> Future for Checked<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CheckedProjection::Passed { inner } => inner.poll(cx),
            CheckedProjection::Hawk { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}

fn refused(why: impl std::fmt::Display) -> V1Error {
    V1Error::new(StatusCode::UNAUTHORIZED, "InvalidHawk", why.to_string())
}

async fn verify(state: &AppState, request: Request) -> Result<Request, V1Error> {
    let service = state
        .token
        .as_ref()
        .ok_or_else(|| refused("Hawk needs the token service (--token-secret)"))?;
    let text = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("the Authorization header is not text"))?;
    let parsed = hawk::parse(text).map_err(refused)?;
    let claimed = token::unverified_payload(&parsed.id).map_err(refused)?;
    let served = state
        .cluster
        .meta_local(|m| m.tokens().serves(&claimed.node))
        .map_err(V1Error::from)?;
    if !served {
        return Err(refused(
            "the token is for a node this cluster does not serve",
        ));
    }
    let secret = ids::node_secret(&service.settings.secret, &claimed.node)
        .ok_or_else(|| refused("no secret for the token's node"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| refused("the clock is before 1970"))?;
    let verified = token::verify(&parsed.id, &[&secret], now.as_secs_f64()).map_err(refused)?;

    let (mut parts, body) = request.into_parts();
    let sent = parts
        .extensions
        .get::<SentPath>()
        .map(|s| s.0.clone())
        .or_else(|| parts.uri.path_and_query().map(|p| p.as_str().to_string()))
        .unwrap_or_else(|| "/".to_string());
    let host_header = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (host, port) = split_host(&host_header);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The body is read only when a payload hash must be checked.
    let (body, bytes) = if parsed.hash.is_some() {
        let bytes = crate::body::collect(body, state.limits.body_bytes_max)
            .await
            .ok_or_else(|| {
                V1Error::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body",
                    "The request body is too large.",
                )
            })?;
        (Body::from(bytes.clone()), bytes)
    } else {
        (body, axum::body::Bytes::new())
    };
    let method = parts.method.as_str().to_string();
    let checked = hawk::Request {
        method: &method,
        path_and_query: &sent,
        host: &host,
        port,
        content_type: &content_type,
        body: &bytes,
    };
    let now_secs = now.as_secs();
    hawk::verify(
        &parsed,
        &checked,
        &verified.key,
        now_secs,
        state.hawk_skew_s,
    )
    .map_err(refused)?;
    let fresh = state
        .nonces
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(&parsed.id, &parsed.nonce, parsed.ts, now_secs);
    match fresh {
        Ok(()) => {}
        Err(HawkError::Busy) => {
            return Err(V1Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "too many Hawk requests in the window",
            ));
        }
        Err(e) => return Err(refused(e)),
    }
    parts.headers.remove(header::AUTHORIZATION);
    parts
        .headers
        .insert(&USER_HEADER, HeaderValue::from(verified.payload.uid));
    Ok(Request::from_parts(parts, body))
}

/// `host[:port]` (an IPv6 literal in brackets keeps its colons); the port
/// defaults to 80: nodes serve plain HTTP, TLS ends in front of them.
fn split_host(text: &str) -> (String, u16) {
    if let Some((host, port)) = text.rsplit_once(':')
        && !host.is_empty()
        && (!host.contains(':') || host.ends_with(']'))
        && let Ok(port) = port.parse::<u16>()
    {
        return (host.to_string(), port);
    }
    (text.to_string(), 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(split_host("127.0.0.1:8080"), ("127.0.0.1".into(), 8080));
        assert_eq!(split_host("example.com"), ("example.com".into(), 80));
        assert_eq!(split_host("[::1]:81"), ("[::1]".into(), 81));
        assert_eq!(split_host("[::1]"), ("[::1]".into(), 80));
    }
}
