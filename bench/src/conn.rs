//! One HTTP/1.1 connection with keep-alive, reopened after an error: the
//! lightest client hyper offers, so a load run measures the server, not
//! the client.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// A connection to one node.
pub struct Conn {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// An answer: status and body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Conn {
    /// A connection to `base` (`http://host:port`), opened on first use.
    pub fn new(base: &str) -> anyhow::Result<Conn> {
        let Some(addr) = base.strip_prefix("http://") else {
            bail!("the target must be an http:// URL, not {base:?}");
        };
        Ok(Conn {
            addr: addr.trim_end_matches('/').to_string(),
            sender: None,
        })
    }

    async fn open(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .context("the connection could not be opened")
    }

    /// Sends one request and reads the whole answer. On an error the
    /// connection is dropped, and the next request opens a new one.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let host = self.addr.clone();
        let result = async {
            let sender = self.open().await?;
            sender.ready().await?;
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", host);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = sender.send_request(request.body(Full::new(body))?).await?;
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(Answer {
                status,
                headers: parts.headers,
                body,
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}
