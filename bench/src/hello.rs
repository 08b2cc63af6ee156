//! The HTTP ceiling: an axum server that reads the body and answers 200,
//! so a load run against it measures the client and the HTTP stack alone.

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;

/// Serves until killed.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let app = Router::new().fallback(|_body: Bytes| async { StatusCode::OK });
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
