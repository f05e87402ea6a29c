//! Pure domain: token values, grid and CDNA rules. No locks, no I/O, no protobuf types.

pub mod cdna;
pub mod filter;
pub mod grid;
pub mod token;
pub mod violation;

pub use filter::TokenFilter;
pub use token::{
    FlagName, IdPair, IdRequest, QPoint, Space, Token, TokenData, TokenDraft, TokenFlags, TokenId,
    TokenInput, TokenPatch, UpdatePath,
};
pub use violation::{FieldViolation, Violations};
