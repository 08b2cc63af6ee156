//! Parsing Queuey v1 parameters: form bodies and query strings, booleans
//! as 0.8 read them, decimal-second timestamps, message ids and id lists,
//! and the one conversion between v1 partition numbers (from 1) and
//! partition ids (from 0).

use sluice_engine::{MessageId, Timestamp};
use sluice_raft::PartitionId;

use crate::v1::error::V1Error;

/// Most fields a form body or query string may carry.
const FIELDS_MAX: usize = 64;
/// Most ids one by-id request may list.
pub const IDS_MAX: usize = 1_000;
/// Most partitions one read may list.
pub const READ_PARTITIONS_MAX: usize = 200;
/// Digits of the fractional part of a timestamp (100 ns ticks).
const FRACTION_DIGITS: usize = 7;

/// Decoded `name=value` pairs of a form body or query string.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes (a body or a query
    /// string); at most `FIELDS_MAX` fields.
    pub fn parse(bytes: &[u8]) -> Result<Params, V1Error> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(bytes)
            .take(FIELDS_MAX + 1)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.len() > FIELDS_MAX {
            return Err(V1Error::bad(
                "params",
                format!("at most {FIELDS_MAX} fields"),
            ));
        }
        Ok(Params(pairs))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean as Queuey 0.8 read it: `false` or `0` (any case) is
    /// false, any other non-empty value true; absent or empty is false.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| {
            !v.is_empty() && !v.eq_ignore_ascii_case("false") && !v.eq_ignore_ascii_case("0")
        })
    }

    /// An integer in `min..=max`, or `None` when absent; out of range or
    /// not a number is 400 naming `name`.
    pub fn int_in(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, V1Error> {
        self.get(name)
            .map(|v| int_in(name, v, min, max))
            .transpose()
    }
}

/// Parses an integer in `min..=max` with Queuey's messages.
pub fn int_in(field: &str, text: &str, min: u64, max: u64) -> Result<u64, V1Error> {
    let shown: String = text.chars().take(40).collect();
    let n: u64 = digits(text)
        .then(|| text.parse().ok())
        .flatten()
        .ok_or_else(|| V1Error::bad(field, format!("\"{shown}\" is not a number")))?;
    if n < min {
        return Err(V1Error::bad(
            field,
            format!("{n} is less than minimum value {min}"),
        ));
    }
    if n > max {
        return Err(V1Error::bad(
            field,
            format!("{n} is greater than maximum value {max}"),
        ));
    }
    Ok(n)
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A v1 partition number (from 1) as the id (from 0) of one of a queue's
/// `partitions`; `None` outside `1..=partitions`.
pub fn partition_id(number: u32, partitions: u32) -> Option<PartitionId> {
    number
        .checked_sub(1)
        .filter(|p| *p < partitions)
        .map(PartitionId)
}

/// A partition id as its v1 number.
pub fn partition_number(id: PartitionId) -> u32 {
    id.0.saturating_add(1)
}

/// A timestamp as Queuey writes it: decimal seconds, up to 7 fractional
/// digits, no trailing zeros.
pub fn format_timestamp(t: Timestamp) -> String {
    let mut text = String::with_capacity(20);
    write_timestamp(&mut text, t);
    text
}

/// Appends [`format_timestamp`]'s text to `out`. Digits are written by
/// hand and `itoa`: every v1 post's answer carries one per message, and
/// `write!` cost it about 550 instructions
/// (`bench/instructions.sh`).
pub fn write_timestamp(out: &mut String, t: Timestamp) {
    let secs = t.0 / Timestamp::TICKS_PER_SEC;
    let mut frac = t.0 % Timestamp::TICKS_PER_SEC;
    out.push_str(itoa::Buffer::new().format(secs));
    if frac == 0 {
        return;
    }
    let mut digits = [b'0'; FRACTION_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    // `frac` was not 0, so some digit is not '0'.
    let kept = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    out.push('.');
    for &d in &digits[..kept] {
        out.push(char::from(d));
    }
}

/// Parses decimal seconds (`1323973966.2820351`); digits past the 7th
/// fractional one are dropped (below the clock's resolution).
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if !digits(whole) || !(frac.is_empty() || digits(frac)) || whole.len() > 12 {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let mut ticks = 0u64;
    for i in 0..FRACTION_DIGITS {
        let d = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        ticks = ticks * 10 + d;
    }
    secs.checked_mul(Timestamp::TICKS_PER_SEC)?
        .checked_add(ticks)
        .map(Timestamp)
}

/// Parses 32 hex digits (either case) as a message id.
pub fn parse_id(text: &str) -> Option<MessageId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(MessageId(id))
}

/// A message id as 32 lowercase hex digits.
pub fn format_id(id: &MessageId) -> String {
    sluice_token::encoding::hex(&id.0)
}

/// Appends [`format_id`]'s text to `out`.
pub fn write_id(out: &mut String, id: &MessageId) {
    sluice_token::encoding::hex_into(out, &id.0);
}

/// Parses an `{ids}` segment: a comma list of `[partition:]hex`
/// (partition defaults to 1). Partitions are v1 numbers, not checked
/// against the queue here.
pub fn parse_ids(text: &str) -> Result<Vec<(u32, MessageId)>, V1Error> {
    let malformed = |entry: &str| {
        let shown: String = entry.chars().take(80).collect();
        V1Error::bad(
            "messages",
            format!("\"{shown}\" is not a message id ([partition:]32 hex digits)"),
        )
    };
    let mut out = Vec::new();
    for entry in text.split(',') {
        if out.len() == IDS_MAX {
            return Err(V1Error::bad("messages", format!("at most {IDS_MAX} ids")));
        }
        let (partition, hex) = match entry.split_once(':') {
            Some((p, hex)) => {
                let p = digits(p)
                    .then(|| p.parse::<u32>().ok())
                    .flatten()
                    .ok_or_else(|| malformed(entry))?;
                (p, hex)
            }
            None => (1, entry),
        };
        let id = parse_id(hex).ok_or_else(|| malformed(entry))?;
        out.push((partition, id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_100_ns() {
        for ticks in [
            0u64,
            1,
            13_239_739_662_820_351,
            13_239_739_660_000_000,
            10_000_001,
        ] {
            let t = Timestamp(ticks);
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "{ticks}");
        }
        assert_eq!(
            format_timestamp(Timestamp(13_239_739_662_820_000)),
            "1323973966.282"
        );
        for (ticks, text) in [
            (0, "0"),
            (1, "0.0000001"),
            (15_000_000, "1.5"),
            (10_000_000, "1"),
            (u64::MAX, "1844674407370.9551615"),
        ] {
            assert_eq!(format_timestamp(Timestamp(ticks)), text);
        }
        let mut appended = String::from("at ");
        write_timestamp(&mut appended, Timestamp(13_239_739_660_001_200));
        assert_eq!(appended, "at 1323973966.00012");
        assert_eq!(parse_timestamp("1.123456789"), Some(Timestamp(11_234_567)));
        for bad in ["", ".5", "1.", "1e9", "-1", "1.2.3", "abc", "9999999999999"] {
            if bad == "1." {
                assert_eq!(parse_timestamp(bad), Some(Timestamp(10_000_000)));
                continue;
            }
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_parse_with_optional_partitions() {
        let hex = "0123456789abcdef0123456789ABCDEF";
        let ids = parse_ids(&format!("{hex},3:{hex}")).expect("ids");
        assert_eq!(ids.len(), 2);
        assert_eq!((ids[0].0, ids[1].0), (1, 3));
        assert_eq!(format_id(&ids[0].1), hex.to_lowercase());
        for bad in [
            "",
            "xyz",
            &hex[1..],
            &format!("a:{hex}"),
            &format!("{hex},"),
        ] {
            assert_eq!(
                parse_ids(bad).map_err(|e| e.status.as_u16()),
                Err(400),
                "{bad}"
            );
        }
    }

    #[test]
    fn integers_and_flags_read_as_queuey_did() {
        let p = Params::parse(b"a=fred&b=4&c=0&d=FALSE&e=yes&f=").expect("parse");
        assert_eq!(
            p.int_in("a", 1, 3).map_err(|e| e.message),
            Err("\"fred\" is not a number".to_string())
        );
        assert_eq!(
            p.int_in("b", 1, 1).map_err(|e| e.message),
            Err("4 is greater than maximum value 1".to_string())
        );
        assert_eq!(p.int_in("zz", 1, 1).map_err(|e| e.message), Ok(None));
        assert!(!p.flag("c") && !p.flag("d") && p.flag("e") && !p.flag("f") && !p.flag("zz"));
        assert_eq!(partition_id(1, 1), Some(PartitionId(0)));
        assert_eq!(partition_id(0, 1), None);
        assert_eq!(partition_id(2, 1), None);
        assert_eq!(partition_number(PartitionId(0)), 1);
    }
}
