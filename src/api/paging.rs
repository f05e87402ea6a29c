//! Opaque page tokens and page sizes (AIP-158): a ListTokens token records the filter it was
//! made for and the last id returned, so the next page starts after that id; a GetHistory token
//! records the last history sequence returned, so the next page holds the older entries.

use crate::model::TokenFilter;
use crate::model::Violations;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 1000;

const VERSION: u8 = 1;
const NONE: u8 = 0xFF;

/// The effective page size for a requested `page_size`.
pub fn page_size(requested: i32) -> Result<usize, Violations> {
    match requested {
        n if n < 0 => Err(Violations::one(
            "page_size",
            format!("{n} is negative; send 0 for the default of {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE}"),
        )),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

fn filter_bytes(filter: &TokenFilter) -> [u8; 2] {
    [
        filter.domain.map_or(NONE, |d| d as u8),
        filter.entity_type.map_or(NONE, |t| t as u8),
    ]
}

/// The token for the page after `last_id` under `filter`.
pub fn encode(filter: &TokenFilter, last_id: u32) -> String {
    let [d, t] = filter_bytes(filter);
    let mut bytes = vec![VERSION, d, t];
    bytes.extend(last_id.to_be_bytes());
    seal(bytes)
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0x5Au8, |acc, b| acc.rotate_left(3) ^ b)
}

/// `bytes` plus their checksum, as hex.
fn seal(mut bytes: Vec<u8>) -> String {
    bytes.push(checksum(&bytes));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a token of `len` bytes (checksum included) sealed with `version` first, without
/// the checksum; `None` if it is anything else.
fn unseal(token: &str, len: usize, version: u8) -> Option<Vec<u8>> {
    if token.len() != len * 2 || !token.is_ascii() {
        return None;
    }
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| u8::from_str_radix(&token[i * 2..i * 2 + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let check = bytes.pop()?;
    (bytes.first() == Some(&version) && checksum(&bytes) == check).then_some(bytes)
}

fn malformed() -> Violations {
    Violations::one(
        "page_token",
        "is malformed; pass back a next_page_token unchanged",
    )
}

/// Version byte of GetHistory page tokens (distinct from ListTokens', so one is never taken
/// for the other).
const HISTORY_VERSION: u8 = 2;

/// The GetHistory token for the page after (older than) history sequence `last_sequence`.
pub fn encode_history(last_sequence: u64) -> String {
    let mut bytes = vec![HISTORY_VERSION];
    bytes.extend(last_sequence.to_be_bytes());
    seal(bytes)
}

/// The last history sequence a GetHistory token recorded; INVALID_ARGUMENT if malformed.
pub fn decode_history(token: &str) -> Result<Option<u64>, Violations> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = unseal(token, 10, HISTORY_VERSION).ok_or_else(malformed)?;
    let sequence: [u8; 8] = bytes[1..9].try_into().map_err(|_| malformed())?;
    Ok(Some(u64::from_be_bytes(sequence)))
}

/// The last id a token recorded; INVALID_ARGUMENT if malformed or made for another filter.
pub fn decode(token: &str, filter: &TokenFilter) -> Result<Option<u32>, Violations> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = unseal(token, 8, VERSION).ok_or_else(malformed)?;
    if bytes[1..3] != filter_bytes(filter) {
        return Err(Violations::one(
            "page_token",
            "was made for another filter; send the same filter as the first page",
        ));
    }
    Ok(Some(u32::from_be_bytes([
        bytes[3], bytes[4], bytes[5], bytes[6],
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_tampering() {
        let filter = TokenFilter::new(Some(3), None).expect("valid");
        let token = encode(&filter, 0x3000_0042);
        assert_eq!(decode(&token, &filter), Ok(Some(0x3000_0042)));
        assert!(decode(&token, &TokenFilter::default()).is_err());
        let mut tampered = token.clone().into_bytes();
        tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
        assert!(decode(&String::from_utf8(tampered).expect("ascii"), &filter).is_err());
        assert!(decode("not-a-token", &filter).is_err());
        assert_eq!(decode("", &filter), Ok(None));
    }

    #[test]
    fn history_tokens_round_trip_and_are_not_list_tokens() {
        let token = encode_history(1234);
        assert_eq!(decode_history(&token), Ok(Some(1234)));
        assert_eq!(decode_history(""), Ok(None));
        let list = encode(&TokenFilter::default(), 1234);
        assert!(decode_history(&list).is_err());
        assert!(decode(&token, &TokenFilter::default()).is_err());
        let mut tampered = token.into_bytes();
        tampered[5] = if tampered[5] == b'0' { b'1' } else { b'0' };
        assert!(decode_history(&String::from_utf8(tampered).expect("ascii")).is_err());
        assert!(decode_history("zz").is_err());
    }

    #[test]
    fn page_sizes_follow_aip_158() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(5000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
