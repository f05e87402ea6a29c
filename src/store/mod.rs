//! The state: tokens in a sharded map with an ordered id set, id allocation, and the one write
//! path that every change goes through. Knows nothing of gRPC.

pub mod cdna;
pub mod command;
pub mod durable;
pub mod engine;
pub mod error;
pub mod events;
pub mod grids;
pub mod import;
pub mod spatial;
pub mod tokens;
pub mod trim;
pub mod write_path;

pub use command::{Command, Committed, Effect};
pub use engine::{Engine, EngineOptions};
pub use error::StoreError;
pub use events::{ChangeFeed, Subscription, TokenEvent, TokenEventKind};
pub use grids::{Grids, UserGrid};
pub use import::ImportDraft;
pub use spatial::{SpaceTrees, SpatialIndex};
pub use tokens::{TokenPage, TokenTables};
pub use write_path::{Store, WriteHook};
