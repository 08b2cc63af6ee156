//! Deterministic message timestamps and ids.
//!
//! Every replica applies the same entries, so every replica must compute
//! the same timestamp and id for a message without a clock of its own. The
//! leader proposes a timestamp; apply fixes it as
//! `max(proposed, previous timestamp in the partition + 100 ns)` and derives
//! the id from it. Ids and timestamps therefore strictly increase with
//! offset in every partition (for ids Sluice generates).
//!
//! Ids use the UUID version 1 layout (RFC 9562 section 5.1), so their time
//! is recoverable and the v1 API can read by it:
//!
//! ```text
//! time_low (32) | time_mid (16) | version 1 + time_high (4 + 12)
//! | variant 0b10 + clock_seq (2 + 14) | node (48)
//! ```
//!
//! The 60-bit time counts 100 ns since 1582-10-15. `node` is not a MAC: its
//! multicast bit is set (as RFC 9562 asks of random node ids), then it
//! holds the group (16 bits) and partition (24 bits), so ids from
//! different partitions never collide even at the same instant.
//! `clock_seq` is 0: uniqueness within a partition comes from the strictly
//! increasing time.

use sluice_engine::{MessageId, Timestamp};

use crate::ids::{GroupId, PartitionId};

/// 100 ns ticks from 1582-10-15 (the UUID epoch) to 1970-01-01.
const UUID_EPOCH_OFFSET_TICKS: u64 = 0x01B2_1DD2_1381_4000;

/// Largest time a version 1 UUID can hold (60 bits).
const UUID_TIME_MAX: u64 = (1 << 60) - 1;

/// The timestamp apply gives a message: the proposed one, or one tick after
/// the partition's previous message if that is later.
pub fn apply_timestamp(proposed: Timestamp, previous: Option<Timestamp>) -> Timestamp {
    match previous {
        Some(prev) => proposed.max(Timestamp(prev.0.saturating_add(1))),
        None => proposed,
    }
}

/// The version 1 id of the message at `timestamp` in `partition` of
/// `group`. Times past the UUID range (year 5236) saturate.
pub fn message_id(timestamp: Timestamp, group: GroupId, partition: PartitionId) -> MessageId {
    let time = timestamp
        .0
        .saturating_add(UUID_EPOCH_OFFSET_TICKS)
        .min(UUID_TIME_MAX);
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&((time & 0xFFFF_FFFF) as u32).to_be_bytes());
    b[4..6].copy_from_slice(&(((time >> 32) & 0xFFFF) as u16).to_be_bytes());
    b[6..8].copy_from_slice(&((((time >> 48) & 0x0FFF) as u16) | 0x1000).to_be_bytes());
    b[8] = 0x80; // variant 0b10, clock_seq high bits 0
    b[9] = 0; // clock_seq low
    b[10] = 0x01; // multicast bit: not a MAC address
    b[11..13].copy_from_slice(&(group.0 as u16).to_be_bytes());
    let p = partition.0.min(0x00FF_FFFF).to_be_bytes();
    b[13..16].copy_from_slice(&p[1..4]);
    MessageId(b)
}

/// The timestamp inside a version 1 id, or `None` for any other id (a
/// client may choose ids of other versions; they read by append order).
pub fn timestamp_of(id: &MessageId) -> Option<Timestamp> {
    let b = &id.0;
    if b[6] >> 4 != 1 || b[8] & 0xC0 != 0x80 {
        return None;
    }
    let low = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let mid = u64::from(u16::from_be_bytes([b[4], b[5]]));
    let high = u64::from(u16::from_be_bytes([b[6], b[7]]) & 0x0FFF);
    let time = (high << 48) | (mid << 32) | low;
    time.checked_sub(UUID_EPOCH_OFFSET_TICKS).map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_within_a_partition() {
        let t = Timestamp(1_000);
        assert_eq!(apply_timestamp(t, None), t);
        assert_eq!(apply_timestamp(t, Some(Timestamp(5_000))), Timestamp(5_001));
        assert_eq!(
            apply_timestamp(Timestamp(9_000), Some(Timestamp(5_000))),
            Timestamp(9_000)
        );
        assert_eq!(
            apply_timestamp(t, Some(Timestamp(u64::MAX))),
            Timestamp(u64::MAX)
        );
    }

    #[test]
    fn ids_are_version_1_and_carry_their_time() {
        // 2026-11-25T00:00:00Z in ticks.
        let t = Timestamp::from_secs(1_795_564_800);
        let id = message_id(t, GroupId(3), PartitionId(7));
        assert_eq!(id.0[6] >> 4, 1, "version 1");
        assert_eq!(id.0[8] >> 6, 0b10, "RFC variant");
        assert_eq!(timestamp_of(&id), Some(t));
        // Computed independently with Python's `uuid.UUID(fields=...)`,
        // whose `.time` reads back the same 60-bit time.
        let hex: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "2841c000e86311f18000010003000007");
        let later = message_id(Timestamp(t.0 + 1), GroupId(3), PartitionId(7));
        assert_eq!(timestamp_of(&later), Some(Timestamp(t.0 + 1)));
        assert_ne!(
            message_id(t, GroupId(3), PartitionId(8)),
            id,
            "partitions never collide"
        );
        assert_ne!(
            message_id(t, GroupId(4), PartitionId(7)),
            id,
            "groups never collide"
        );
    }

    #[test]
    fn other_versions_have_no_time() {
        let mut v4 = [0x11u8; 16];
        v4[6] = 0x40;
        v4[8] = 0x80;
        assert_eq!(timestamp_of(&MessageId(v4)), None);
        assert_eq!(timestamp_of(&MessageId([0; 16])), None);
    }
}
