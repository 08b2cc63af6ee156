//! Reading a request's body whole, within a limit.
//!
//! `axum::body::to_bytes` gathers every body into a buffer list before
//! joining it; a small POST's body is one frame, and handing that frame
//! back as it came saves the list's allocation and bookkeeping on every
//! single-message POST (~550 instructions, `bench/instructions.sh`).

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody as _};

/// The body's bytes, or `None` once they pass `max_bytes` or when reading
/// fails (the client went away mid-body). Trailers are ignored.
pub async fn collect(mut body: Body, max_bytes: usize) -> Option<Bytes> {
    let mut first: Option<Bytes> = None;
    // Only a body of two frames or more is copied, into here.
    let mut joined: Vec<u8> = Vec::new();
    let mut total_bytes = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        total_bytes = total_bytes.checked_add(data.len())?;
        if total_bytes > max_bytes {
            return None;
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(earlier) = first.take() {
            joined.reserve(total_bytes);
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&data);
    }
    Some(match first {
        Some(only) => only,
        None => Bytes::from(joined),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Poll};

    use http_body::Frame;

    use super::*;

    /// A body that yields the given frames one by one (or an error where
    /// a frame is `None`).
    struct Frames(VecDeque<Option<&'static [u8]>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|frame| match frame {
                Some(bytes) => Ok(Frame::data(Bytes::from_static(bytes))),
                None => Err(std::io::Error::other("the client went away")),
            }))
        }
    }

    fn body(frames: &[Option<&'static [u8]>]) -> Body {
        Body::new(Frames(frames.iter().copied().collect()))
    }

    #[tokio::test]
    async fn one_frame_comes_back_as_it_came() {
        let sent: &'static [u8] = b"hello";
        let got = collect(body(&[Some(sent)]), 5)
            .await
            .expect("within the limit");
        assert_eq!(got, sent);
        // The very bytes sent, not a copy.
        assert_eq!(got.as_ptr(), sent.as_ptr());
    }

    #[tokio::test]
    async fn frames_are_joined_in_order() {
        let frames = [
            Some(&b"ab"[..]),
            Some(&b""[..]),
            Some(&b"cde"[..]),
            Some(&b"f"[..]),
        ];
        let got = collect(body(&frames), 6).await.expect("within the limit");
        assert_eq!(got, &b"abcdef"[..]);
        assert_eq!(collect(body(&[]), 0).await.expect("empty"), &b""[..]);
        let empty_first = [Some(&b""[..]), Some(&b"xy"[..])];
        assert_eq!(
            collect(body(&empty_first), 2).await.expect("two"),
            &b"xy"[..]
        );
    }

    #[tokio::test]
    async fn past_the_limit_or_a_failed_read_is_none() {
        assert_eq!(collect(body(&[Some(b"hello")]), 4).await, None);
        assert_eq!(collect(body(&[Some(b"ab"), Some(b"cd")]), 3).await, None);
        assert_eq!(collect(body(&[Some(b"ab"), None]), 10).await, None);
    }
}
