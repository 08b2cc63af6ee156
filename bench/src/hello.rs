//! The HTTP ceiling: an axum server that reads the body and answers 200,
//! so a load run against it measures the client and the HTTP stack alone.
//! It also answers `POST /v1/verify` as an FxA-compatible verifier that
//! accepts any credential as the user of that name (for token-endpoint
//! runs; never for anything but benchmarks).

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;

/// Serves until killed.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/v1/verify",
            axum::routing::post(|body: Bytes| async move {
                let token = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["token"].as_str().map(str::to_string))
                    .unwrap_or_default();
                axum::Json(serde_json::json!({"user": token, "scope": ["sluice"]}))
            }),
        )
        .fallback(|_body: Bytes| async { StatusCode::OK });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("sluice-bench: hello on http://{}", listener.local_addr()?);
    // As `sluice serve` does.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
