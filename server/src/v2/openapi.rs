//! `GET /v2/openapi.json`: the native API's OpenAPI 3.1 document, kept
//! beside the code (`openapi.json`) and checked against the router's
//! routes by a test.

use axum::http::header;
use axum::response::IntoResponse;

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Serves the document.
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_json_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/v2/{app}/queues", "get"),
            ("/v2/{app}/queues", "post"),
            ("/v2/{app}/queues/{queue}", "get"),
            ("/v2/{app}/queues/{queue}", "put"),
            ("/v2/{app}/queues/{queue}", "delete"),
            ("/v2/{app}/{queue}/messages", "post"),
            ("/v2/{app}/{queue}/partitions/{partition}/messages", "get"),
            ("/v2/{app}/{queue}/groups/{group}", "get"),
            ("/v2/{app}/{queue}/groups/{group}/members", "post"),
            (
                "/v2/{app}/{queue}/groups/{group}/members/{member}",
                "delete",
            ),
            (
                "/v2/{app}/{queue}/groups/{group}/members/{member}/heartbeat",
                "post",
            ),
            ("/v2/{app}/{queue}/groups/{group}/poll", "get"),
            ("/v2/{app}/{queue}/groups/{group}/offsets", "put"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} is not documented"
            );
        }
    }
}
