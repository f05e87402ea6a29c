//! The protobuf codec of every generated service and client: prost's, plus a count of the
//! tokens a BatchCreateTokens or ImportTokens message holds taken *before* decoding it. An
//! empty token is 2 bytes on the wire but a few hundred decoded, so a 4 MiB message of them
//! would cost over a GiB; counted first, a message over its limit is refused at the cost of
//! its own bytes (API.md §8, "Limits against abuse").

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::pb;
use crate::model::Violations;

/// Most tokens one BatchCreateTokens may carry.
pub const MAX_BATCH: usize = 1000;
/// Most tokens one ImportTokens message may carry.
pub const MAX_IMPORT_MESSAGE: usize = 10_000;

/// `field 1` of a request, each entry decoded as a message of no fields: prost skips their
/// content and a `Vec` of a zero-sized type allocates nothing, so counting costs no memory.
#[derive(Clone, PartialEq, Message)]
struct Entries {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<Opaque>,
}

/// A message whose fields are all skipped.
#[derive(Clone, Copy, PartialEq, Message)]
struct Opaque {}

/// The `tokens` (field 1) rule of a request type.
#[derive(Clone, Copy, Debug)]
struct TokensLimit {
    max: usize,
    rule: fn(usize) -> String,
}

/// The rule that a BatchCreateTokens request breaks with `count` tokens.
pub fn batch_rule(count: usize) -> String {
    format!("{count} tokens is more than the {MAX_BATCH} a batch may hold")
}

/// The rule that an ImportTokens message breaks with `count` tokens.
pub fn import_rule(count: usize) -> String {
    format!(
        "{count} tokens is more than the {MAX_IMPORT_MESSAGE} one ImportTokens message may hold; send them in more messages"
    )
}

/// The token limit of request type `U`, if it has one.
fn tokens_limit<U: 'static>() -> Option<TokensLimit> {
    let of = TypeId::of::<U>();
    if of == TypeId::of::<pb::BatchCreateTokensRequest>() {
        Some(TokensLimit {
            max: MAX_BATCH,
            rule: batch_rule,
        })
    } else if of == TypeId::of::<pb::ImportTokensRequest>() {
        Some(TokensLimit {
            max: MAX_IMPORT_MESSAGE,
            rule: import_rule,
        })
    } else {
        None
    }
}

impl TokensLimit {
    /// INVALID_ARGUMENT naming `tokens` when the encoded message `bytes` holds too many. A
    /// message that does not even parse this far is left to the real decoder to refuse.
    fn check(self, bytes: &[u8]) -> Result<(), Status> {
        let Ok(counted) = Entries::decode(bytes) else {
            return Ok(());
        };
        let count = counted.entries.len();
        if count > self.max {
            return Err(Violations::one("tokens", (self.rule)(count)).into());
        }
        Ok(())
    }
}

/// prost's codec with the token limits checked before decoding.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder {
            inner: ProstCodec::<T, U>::default().decoder(),
            limit: tokens_limit::<U>(),
        }
    }
}

/// prost's decoder, after the token count of `U` (if it has a limit).
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
    limit: Option<TokensLimit>,
}

impl<U: Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if let Some(limit) = self.limit {
            // The buffer is one contiguous message: tonic hands the decoder whole frames.
            limit.check(prost::bytes::Buf::chunk(buf))?;
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded_import(tokens: usize) -> Vec<u8> {
        pb::ImportTokensRequest {
            tokens: vec![pb::Token::default(); tokens],
            ttl_seconds: 0,
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_entries_without_decoding_them() {
        let limit = tokens_limit::<pb::ImportTokensRequest>().expect("has a limit");
        assert!(limit.check(&encoded_import(MAX_IMPORT_MESSAGE)).is_ok());
        let refused = limit
            .check(&encoded_import(MAX_IMPORT_MESSAGE + 1))
            .expect_err("one too many");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("tokens"),
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("10001"), "{}", refused.message());
    }

    #[test]
    fn only_token_lists_are_limited() {
        assert!(tokens_limit::<pb::BatchCreateTokensRequest>().is_some_and(|l| l.max == MAX_BATCH));
        assert!(tokens_limit::<pb::CreateTokenRequest>().is_none());
        assert!(tokens_limit::<pb::ListTokensResponse>().is_none());
    }

    #[test]
    fn full_tokens_count_once_each() {
        let token = pb::Token {
            weight: 0.5,
            l1_physical: Some(pb::Point3 {
                x: 1.0,
                y: 2.0,
                z: 3.0,
            }),
            ..pb::Token::default()
        };
        let bytes = pb::BatchCreateTokensRequest {
            tokens: vec![token; 3],
            ttl_seconds: 7,
        }
        .encode_to_vec();
        let counted = Entries::decode(bytes.as_slice()).expect("parses");
        assert_eq!(counted.entries.len(), 3);
    }
}
