//! `POST /v1/{app}/{queue}` and `POST /v2/{app}/{queue}/messages` served
//! before the router: the routes every producer hits, a single-message
//! one once per message.
//!
//! Through the router, such a request paid for route matching, four
//! inserts into its extensions (the peer's address, the matched path,
//! the URL parameters, each boxed in a map allocated for the purpose),
//! the parameters decoded into owned strings, and the route's boxed
//! service cloned: a tenth to a fifth of the server's CPU per
//! single-message POST (see `docs/benchmarks.md`). Here the
//! path is split in place and the handler called directly; everything
//! else (another method or path, a `%` in a name, a Hawk signature to
//! verify, a `/g/{group}` hint) goes to the router unchanged, with the
//! peer's address the token endpoint needs.
//!
//! What the route layers would have done is done here too: the internal
//! Hawk user header is removed from what the client sent, and the
//! request is counted in `/metrics` under the route's own name.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tower::Service;

use crate::hawk_auth::{USER_HEADER, is_hawk};
use crate::http::AppState;

/// The v1 route served here, as the router names it (and `/metrics`
/// counts it).
pub const QUEUE_ROUTE: &str = "/v1/{app}/{queue}";
/// The v2 route served here, likewise.
pub const PRODUCE_ROUTE: &str = "/v2/{app}/{queue}/messages";

/// Which hot route a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    /// `POST /v1/{app}/{queue}`.
    V1Post,
    /// `POST /v2/{app}/{queue}/messages`.
    V2Produce,
}

impl Hot {
    fn route(self) -> &'static str {
        match self {
            Hot::V1Post => QUEUE_ROUTE,
            Hot::V2Produce => PRODUCE_ROUTE,
        }
    }
}

/// Makes a [`HotRoute`] for each accepted connection, remembering its
/// peer's address.
#[derive(Clone)]
pub struct MakeHotRoute<S> {
    state: AppState,
    routed: S,
}

impl<S> MakeHotRoute<S> {
    /// Serves the hot route itself, and hands the rest to `routed`.
    pub fn new(state: AppState, routed: S) -> MakeHotRoute<S> {
        MakeHotRoute { state, routed }
    }
}

impl<L, S> Service<IncomingStream<'_, L>> for MakeHotRoute<S>
where
    L: Listener<Addr = SocketAddr>,
    S: Clone,
{
    type Response = HotRoute<S>;
    type Error = Infallible;
    type Future = Ready<Result<HotRoute<S>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, L>) -> Self::Future {
        ready(Ok(HotRoute {
            state: self.state.clone(),
            routed: self.routed.clone(),
            peer: *stream.remote_addr(),
        }))
    }
}

/// One connection's service: the hot route, else the router.
#[derive(Clone)]
pub struct HotRoute<S> {
    state: AppState,
    routed: S,
    peer: SocketAddr,
}

impl<S> Service<Request> for HotRoute<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Served<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.routed.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(hot) = hot_route(&request) {
            request.headers_mut().remove(&USER_HEADER);
            return Served::Hot {
                future: Box::pin(serve(hot, self.state.clone(), request)),
            };
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Served::Routed {
            inner: self.routed.call(request),
        }
    }
}

/// The hot route `request` takes, if any: a post whose path is exactly
/// one of the two, with names the router would pass on undecoded, from
/// a caller not signing with Hawk (whose check is the router's).
fn hot_route(request: &Request) -> Option<Hot> {
    if request.method() != Method::POST {
        return None;
    }
    if is_hawk(request.headers()) {
        return None;
    }
    hot_path(request.uri().path()).map(|(hot, _, _)| hot)
}

/// The hot route, application and queue of `path`, when it is
/// `/v1/{app}/{queue}` or `/v2/{app}/{queue}/messages` with both names
/// non-empty and free of `%` (an escaped name is left to the router to
/// decode). `/v2/{app}/queues/...` is the router's: a static segment
/// wins there.
fn hot_path(path: &str) -> Option<(Hot, &str, &str)> {
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    let (hot, names) = if let Some(names) = path.strip_prefix("/v1/") {
        (Hot::V1Post, names)
    } else {
        let names = path.strip_prefix("/v2/")?.strip_suffix("/messages")?;
        (Hot::V2Produce, names)
    };
    let (app, queue) = names.split_once('/')?;
    let routed_elsewhere = hot == Hot::V2Produce && queue == "queues";
    (plain(app) && plain(queue) && !routed_elsewhere).then_some((hot, app, queue))
}

/// Serves a hot request and counts it, as the router's `Track` layer
/// does.
async fn serve(hot: Hot, state: AppState, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let response = match hot_path(parts.uri.path()) {
        Some((Hot::V1Post, app, queue)) => {
            crate::v1::messages::post_parts(&state, app, queue, &parts.headers, body)
                .await
                .into_response()
        }
        Some((Hot::V2Produce, app, queue)) => {
            crate::v2::produce::produce_parts(&state, app, queue, &parts.headers, body)
                .await
                .into_response()
        }
        // `hot_route` checked the path, and nothing changes it since.
        None => crate::http::no_such_resource().into_response(),
    };
    state.metrics.observe(
        hot.route(),
        &Method::POST,
        response.status().as_u16(),
        started.elapsed().as_micros() as u64,
    );
    response
}

pin_project_lite::pin_project! {
    /// A request's response: the hot route's, or the router's.
    // The macro takes no docs on variants' fields; the variants say it.
    #[allow(missing_docs)]
    #[project = ServedProjection]
    pub enum Served<F> {
        /// Served here.
        Hot { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        /// Served by the router.
        Routed { #[pin] inner: F },
    }
}

impl<F> Future for Served<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServedProjection::Hot { future } => future.as_mut().poll(cx).map(Ok),
            ServedProjection::Routed { inner } => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(method: &str, uri: &str, authorization: Option<&str>) -> bool {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        hot_route(&request.body(axum::body::Body::empty()).expect("request")).is_some()
    }

    #[test]
    fn produce_posts_take_the_hot_route_unless_the_router_has_a_static_one() {
        assert_eq!(
            hot_path("/v2/app/q/messages"),
            Some((Hot::V2Produce, "app", "q"))
        );
        assert_eq!(hot_path("/v1/app/q"), Some((Hot::V1Post, "app", "q")));
        assert!(hot("POST", "/v2/app/q/messages?x=1", Some("Application k")));
        assert!(!hot("GET", "/v2/app/q/messages", None));
        assert!(
            !hot("POST", "/v2/app/queues/messages", None),
            "a queue named by its route"
        );
        assert!(!hot("POST", "/v2/app/q/partitions/0/messages", None));
        assert!(!hot("POST", "/v2/app/messages", None));
        assert!(!hot("POST", "/v2/app//messages", None));
        assert!(!hot("POST", "/v2/a%70p/q/messages", None));
        assert!(!hot("POST", "/v2/app/q/messages/", None));
        assert!(!hot("POST", "/v2/app/q/messages", Some("hawk id=\"x\"")));
    }

    #[test]
    fn only_plain_posts_to_a_queue_take_the_hot_route() {
        assert!(hot("POST", "/v1/app/q", None));
        assert!(hot("POST", "/v1/app/q?ignored=1", Some("Application k")));
        assert!(!hot("GET", "/v1/app/q", None), "reads are routed");
        assert!(!hot("POST", "/v1/app", None), "queue creation is routed");
        assert!(!hot("POST", "/v1/app/q/", None));
        assert!(!hot("POST", "/v1/app/q/ids", None));
        assert!(!hot("POST", "/v1//q", None));
        assert!(
            !hot("POST", "/v1/a%70p/q", None),
            "escapes are decoded by the router"
        );
        assert!(
            !hot("POST", "/g/1/v1/app/q", None),
            "hints are stripped by the router"
        );
        assert!(!hot("POST", "/v2/app/q", None));
        assert!(
            !hot("POST", "/v1/app/q", Some("Hawk id=\"x\"")),
            "Hawk is verified by the router's layer"
        );
    }
}
