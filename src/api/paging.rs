//! Opaque page tokens and page sizes (AIP-158): a token records the filter it was made for and
//! the last id returned, so the next page starts after that id.

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
    let check = bytes.iter().fold(0x5Au8, |acc, b| acc.rotate_left(3) ^ b);
    bytes.push(check);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last id a token recorded; INVALID_ARGUMENT if malformed or made for another filter.
pub fn decode(token: &str, filter: &TokenFilter) -> Result<Option<u32>, Violations> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        Violations::one(
            "page_token",
            "is malformed; pass back a next_page_token unchanged",
        )
    };
    if token.len() != 16 || !token.is_ascii() {
        return Err(malformed());
    }
    let bytes: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&token[i * 2..i * 2 + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| malformed())?;
    let check = bytes[..7]
        .iter()
        .fold(0x5Au8, |acc, b| acc.rotate_left(3) ^ b);
    if bytes[0] != VERSION || bytes[7] != check {
        return Err(malformed());
    }
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
    fn page_sizes_follow_aip_158() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(5000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
