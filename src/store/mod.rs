//! The state: tokens in a sharded map with an ordered id set, id allocation, the one write
//! path that every change goes through (`write_path`) and the command log in front of it
//! (`log`, `writes`). Knows nothing of gRPC.

pub mod cdna;
pub mod command;
pub mod durable;
pub mod engine;
pub mod error;
pub mod expiry;
pub mod feed;
pub mod grids;
pub mod ids;
pub mod import;
pub mod log;
pub mod requests;
pub mod spatial;
pub mod tokens;
pub mod trim;
pub mod write_path;
pub mod writes;

pub use command::{Applied, Command, Committed, Effect, Outcome};
pub use engine::{Engine, EngineOptions};
pub use error::{StoreError, TokenAt};
pub use feed::{ChangeFeed, Interest, Region, Subscription, TokenEvent, TokenEventKind};
pub use grids::{Grids, UserGrid};
pub use import::ImportDraft;
pub use spatial::{SpaceTrees, SpatialIndex};
pub use tokens::{TokenPage, TokenTables};
pub use write_path::{Components, Follower, Store};
pub use writes::{Writes, Written};
