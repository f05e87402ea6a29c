//! Pure domain: token values and their rules. No locks, no I/O, no protobuf types.

pub mod filter;
pub mod token;
pub mod violation;

pub use filter::TokenFilter;
pub use token::{
    FlagName, IdRequest, QPoint, Space, Token, TokenData, TokenDraft, TokenFlags, TokenId,
    TokenInput, TokenPatch, UpdatePath,
};
pub use violation::{FieldViolation, Violations};
