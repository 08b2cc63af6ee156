//! Message payloads: OMB's (a payload file, or a pool of randomized
//! payloads) or Sluice's default text, each sent with its intended send
//! time written over its first bytes, so a consumer measures end-to-end
//! latency from the payload alone.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;

use crate::workload::Workload;

/// Bytes of the stamp: the intended send time in microseconds since the
/// run's origin, as 16 lowercase hex digits (text, so a text payload stays
/// text on APIs that return text and base64 otherwise).
pub const STAMP_BYTES: usize = 16;

/// Largest randomized payload pool (OMB's files ask for 1,000).
const POOL_MAX: usize = 10_000;

/// The payloads of a run, handed out in turn.
#[derive(Clone)]
pub struct Payloads {
    pool: Vec<Vec<u8>>,
    next: usize,
}

impl Payloads {
    /// The payloads `workload` asks for. `payloadFile` is read relative to
    /// `base_dir` (OMB's: the workload folder's parent); when it is not
    /// there, generated text of `messageSize` bytes is used instead (and
    /// said so on stderr).
    pub fn for_workload(workload: &Workload, base_dir: Option<&Path>) -> anyhow::Result<Payloads> {
        let size = workload.message_size;
        let mut rng = SplitMix64(0x05ee_d0f5_11ce);
        if workload.use_randomized_payloads {
            let count = workload.randomized_payload_pool_size.clamp(1, POOL_MAX);
            // OMB: the first `ratio` of each payload random, the rest zero.
            let random = (size as f64 * workload.random_bytes_ratio) as usize;
            let pool = (0..count)
                .map(|_| {
                    let mut p = vec![0u8; size];
                    rng.fill(&mut p[..random.min(size)]);
                    p
                })
                .collect();
            return Ok(Payloads { pool, next: 0 });
        }
        if let (Some(file), Some(dir)) = (&workload.payload_file, base_dir) {
            let path = dir.join(file);
            if path.is_file() {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                if bytes.len() != size {
                    eprintln!(
                        "note: {} holds {} bytes, not messageSize {size}; sending the file as it is",
                        path.display(),
                        bytes.len()
                    );
                }
                return Ok(Payloads {
                    pool: vec![bytes],
                    next: 0,
                });
            }
            eprintln!(
                "note: payload file {} not found; sending generated text of {size} bytes",
                path.display()
            );
        }
        Ok(Payloads::text(size, &mut rng))
    }

    /// One payload of `size` printable ASCII bytes.
    fn text(size: usize, rng: &mut SplitMix64) -> Payloads {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut raw = vec![0u8; size];
        rng.fill(&mut raw);
        let text = raw
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()])
            .collect();
        Payloads {
            pool: vec![text],
            next: 0,
        }
    }

    /// The next payload, stamped with `intended_us`.
    pub fn stamped(&mut self, intended_us: u64) -> Bytes {
        let mut payload = self.pool[self.next].clone();
        self.next = (self.next + 1) % self.pool.len();
        stamp(&mut payload, intended_us);
        Bytes::from(payload)
    }
}

/// Writes the stamp over the payload's first bytes (nothing when the
/// payload is shorter than a stamp: such a run reports no end-to-end
/// latency).
pub fn stamp(payload: &mut [u8], intended_us: u64) {
    if let Some(head) = payload.get_mut(..STAMP_BYTES) {
        head.copy_from_slice(format!("{intended_us:016x}").as_bytes());
    }
}

/// The stamp of a received payload, if it has one.
pub fn stamp_of(payload: &[u8]) -> Option<u64> {
    let head = std::str::from_utf8(payload.get(..STAMP_BYTES)?).ok()?;
    u64::from_str_radix(head, 16).ok()
}

/// A small, fast, deterministic generator (payload bytes need no more).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::parse;

    const SHAPE: &str = "name: t\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: 10\ntestDurationSeconds: 1\n";

    #[test]
    fn a_stamp_survives_the_trip() {
        let mut p = Payloads::for_workload(&parse(SHAPE).expect("parses"), None).expect("payloads");
        let sent = p.stamped(123_456_789);
        assert_eq!(sent.len(), 100);
        assert_eq!(stamp_of(&sent), Some(123_456_789));
        assert!(sent.is_ascii(), "default payloads are text");
        assert_eq!(stamp_of(b"short"), None);
        assert_eq!(stamp_of(&[0xff; 32]), None);
    }

    #[test]
    fn randomized_payloads_follow_omb() {
        let text = format!(
            "{SHAPE}useRandomizedPayloads: true\nrandomBytesRatio: 0.5\nrandomizedPayloadPoolSize: 3\n"
        );
        let w = parse(&text).expect("parses");
        let mut p = Payloads::for_workload(&w, None).expect("payloads");
        assert_eq!(p.pool.len(), 3);
        for payload in &p.pool {
            assert!(payload[50..].iter().all(|b| *b == 0), "the rest is zero");
            assert!(payload[..50].iter().any(|b| *b != 0), "half is random");
        }
        assert_ne!(p.pool[0], p.pool[1]);
        let (a, b) = (p.stamped(1), p.stamped(2));
        assert_ne!(
            a[STAMP_BYTES..],
            b[STAMP_BYTES..],
            "the pool is taken in turn"
        );
    }
}
