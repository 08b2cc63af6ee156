//! The HTTP ceilings: an axum server that reads the body and answers 200,
//! so a load run against it measures the client and the HTTP stack alone;
//! with `--fsync-dir`, it answers only once the body is appended to a file
//! and covered by an `fdatasync` (group commit, one writer thread), the
//! ceiling of "single POSTs acknowledged after fsync" with no Raft, index
//! or framing at all. It also answers `POST /v1/verify` as an
//! FxA-compatible verifier that accepts any credential as the user of
//! that name (for token-endpoint runs; never for anything but benchmarks).

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::{mpsc, oneshot};

/// Bodies waiting for the writer; callers wait to enqueue past it.
const WAITING_MAX: usize = 16_384;
/// Most bytes one write + fdatasync covers.
const COMMIT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// A file rolls to a fresh one past this size, as a log's segments do.
const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Serves until killed; with `fsync_dir`, the body of every request but
/// `/v1/verify` is made durable there before the 200.
pub async fn serve(listen: &str, fsync_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let app = match fsync_dir {
        None => Router::new()
            .route("/v1/verify", post(verify))
            .fallback(|_body: Bytes| async { StatusCode::OK }),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let log = RollingFile::open(&dir, FILE_BYTES_MAX)
                .with_context(|| format!("opening a file in {}", dir.display()))?;
            let (tx, rx) = mpsc::channel(WAITING_MAX);
            std::thread::Builder::new()
                .name("hello-commit".into())
                .spawn(move || commit_loop(log, rx))
                .context("starting the commit thread")?;
            Router::<mpsc::Sender<Waiting>>::new()
                .route("/v1/verify", post(verify))
                .fallback(durable)
                .with_state(tx)
        }
    };
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

/// Accepts any credential as the user of that name.
async fn verify(body: Bytes) -> axum::Json<serde_json::Value> {
    let token = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .unwrap_or_default();
    axum::Json(serde_json::json!({"user": token, "scope": ["sluice"]}))
}

/// A body and the caller waiting for its fdatasync.
type Waiting = (Bytes, oneshot::Sender<io::Result<()>>);

/// 200 once `body` is durable; 500 if the writer failed or stopped.
async fn durable(State(writer): State<mpsc::Sender<Waiting>>, body: Bytes) -> StatusCode {
    let (done, committed) = oneshot::channel();
    if writer.send((body, done)).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    match committed.await {
        Ok(Ok(())) => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Group commit: whatever queued while the last fdatasync ran goes out as
/// one write and one fdatasync, then every caller in it is answered.
fn commit_loop(mut log: RollingFile, mut queue: mpsc::Receiver<Waiting>) {
    let mut buffer = Vec::with_capacity(COMMIT_BYTES_MAX);
    let mut callers = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        buffer.clear();
        buffer.extend_from_slice(&first.0);
        callers.push(first.1);
        while buffer.len() < COMMIT_BYTES_MAX {
            let Ok((body, done)) = queue.try_recv() else {
                break;
            };
            buffer.extend_from_slice(&body);
            callers.push(done);
        }
        let result = log.append_durably(&buffer);
        for done in callers.drain(..) {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// An append-only file that rolls to a fresh one (deleting the old) past
/// `bytes_max` (`FILE_BYTES_MAX` when serving), so a long run neither
/// fills the disk nor overwrites blocks already allocated (which would
/// make fdatasync cheaper than a log's).
struct RollingFile {
    dir: PathBuf,
    file: File,
    number: u64,
    bytes: u64,
    bytes_max: u64,
}

impl RollingFile {
    fn open(dir: &Path, bytes_max: u64) -> io::Result<RollingFile> {
        Ok(RollingFile {
            dir: dir.to_path_buf(),
            file: File::create(Self::path(dir, 0))?,
            number: 0,
            bytes: 0,
            bytes_max,
        })
    }

    fn path(dir: &Path, number: u64) -> PathBuf {
        dir.join(format!("commit-{number:08}.log"))
    }

    fn append_durably(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.bytes >= self.bytes_max {
            let next = self.number + 1;
            self.file = File::create(Self::path(&self.dir, next))?;
            std::fs::remove_file(Self::path(&self.dir, self.number))?;
            self.number = next;
            self.bytes = 0;
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_body_is_in_the_file_before_its_answer_and_files_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::channel(WAITING_MAX);
        let log = RollingFile::open(dir.path(), 8).expect("open");
        let writer = std::thread::spawn(move || commit_loop(log, rx));
        // One at a time, so each is its own commit.
        for body in ["first", "second", "third"] {
            let (done, answer) = oneshot::channel();
            tx.send((Bytes::from(body), done)).await.expect("writer");
            answer.await.expect("answered").expect("durable");
        }
        drop(tx);
        writer.join().expect("writer thread");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("listing")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        // 5 + 6 bytes pass the limit of 8: the third body starts a new
        // file and the full one is gone.
        assert_eq!(names, ["commit-00000001.log"]);
        let last = std::fs::read(dir.path().join(&names[0])).expect("read");
        assert_eq!(last, b"third");
    }
}
