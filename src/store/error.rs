//! Typed errors of the store: each variant names a condition and carries where it happened
//! (which token of a request, which id, grid or revision). Only `api::error` turns them into
//! gRPC codes and request paths (`token.`, `tokens[i].`, `grid_id`, …).

use crate::model::cdna::ProfileId;
use crate::model::grid::GridId;
use crate::model::token::MAX_LOCAL_ID;
use crate::model::{IdPair, Space, TokenId, Violations};

/// Which token of its request an error concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAt {
    /// The request's one token (CreateToken, UpdateToken).
    Single,
    /// Entry `i` of a batch (BatchCreateTokens).
    Batch(usize),
}

/// What a quarantine that is running prevents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuarantineBlocks {
    /// Starting another.
    Start,
    /// Resetting the config.
    Reset,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Request fields break their rules; the paths are from the request root (the API builds
    /// these from the model's validation).
    #[error("{0}")]
    Invalid(Violations),
    /// Changed CDNA config fields break a rule that depends on the live config; paths are
    /// within the config.
    #[error("{0}")]
    ConfigRules(Violations),
    /// Token weights outside the live CDNA token-weight limits: each token and the rule.
    #[error("token weights are outside the CDNA token-weight limits")]
    WeightOutsideLimits(Vec<(TokenAt, String)>),
    /// A token with an explicit id that is live, or named twice in one request.
    #[error("token {id} already exists")]
    TokenExists {
        /// The token of the request.
        at: TokenAt,
        /// The id.
        id: TokenId,
        /// Named earlier in the same request rather than live.
        earlier_in_request: bool,
    },
    /// Every local id of a pair has been used.
    #[error("local ids of domain {} entity_type {} are used up ({MAX_LOCAL_ID} is the highest)", pair.domain(), pair.entity_type())]
    IdsUsedUp {
        /// The token of the request that needed one.
        at: TokenAt,
        /// The pair.
        pair: IdPair,
    },
    /// The token a write targets does not exist.
    #[error("token {0} does not exist")]
    TokenNotFound(TokenId),
    /// The token a grid membership names does not exist.
    #[error("token {0} does not exist")]
    MemberNotFound(TokenId),
    /// The token is not a member of the grid.
    #[error("token {token} is not a member of grid {grid}")]
    NotAMember {
        /// The grid.
        grid: GridId,
        /// The token.
        token: TokenId,
    },
    /// No user grid has this id.
    #[error("grid {0} does not exist")]
    GridNotFound(GridId),
    /// Grid 0 cannot be deleted or have its members changed.
    #[error("grid 0 is the default grid; it holds every token and cannot {0}")]
    DefaultGridFixed(&'static str),
    /// The number of user grids is at its limit.
    #[error("at most {0} user grids may exist; delete one first")]
    UserGridsFull(usize),
    /// Every grid id has been used (ids are never reused).
    #[error("grid ids are used up (ids are never reused)")]
    GridIdsUsedUp,
    /// Grid memberships are at their cap.
    #[error("grid memberships are capped at {0} (--max-grid-memberships); remove some first")]
    MembershipsCapped(u64),
    /// The query token has no point in the space it queries.
    #[error("token {token} is undefined in {} (it has no {} point), so it has no neighbours there", space.field_name(), space.field_name())]
    UndefinedInSpace {
        /// The token.
        token: TokenId,
        /// The space.
        space: Space,
    },
    /// The CDNA config is not at the revision the request expected.
    #[error("expected_revision {expected} is stale: the config is at revision {current}; read it again and retry")]
    StaleRevision {
        /// What the request expected.
        expected: u64,
        /// The live revision.
        current: u64,
    },
    /// The profile is not a preset.
    #[error("profile {0} is not a preset")]
    NotAPreset(ProfileId),
    /// A running quarantine prevents the change.
    #[error("{}", quarantine_running(*.blocks, *.seconds_left))]
    QuarantineRunning {
        /// What it prevents.
        blocks: QuarantineBlocks,
        /// Seconds until it expires.
        seconds_left: u32,
    },
    /// No quarantine is running.
    #[error("no quarantine is active; start one with StartQuarantine")]
    NoQuarantine,
    /// The quarantine's deadline has not passed (an early expiry command).
    #[error("the quarantine has not reached its deadline")]
    QuarantineNotDue,
    /// A change-feed subscriber fell further behind than the limit.
    #[error("subscriber lagged more than {0} events behind the commits (--watch-lag-limit); read faster, or call WatchTokens again with from_sequence set to the last sequence received")]
    FeedLagged(usize),
    /// A watcher asked to resume from events no longer retained.
    #[error("from_sequence {requested} is older than the retained events: the oldest sequence to resume from is {oldest} (--watch-retention)")]
    FeedTrimmed {
        /// The sequence asked for.
        requested: u64,
        /// The oldest one that may be resumed from.
        oldest: u64,
    },
    /// The change feed has closed.
    #[error("the change feed has closed")]
    FeedClosed,
    /// A request id already named a write of another method.
    #[error("was sent with a {method} call in the last 10 minutes; a request id names one write")]
    RequestIdReused {
        /// The method of the first write.
        method: String,
    },
    /// The store cannot take writes or answer now (storage failed, shutting down, …).
    #[error("{0}")]
    Unavailable(String),
    /// The replicated command log is at its size limit and refuses new entries.
    #[error("{0}")]
    LogFull(String),
}

fn quarantine_running(blocks: QuarantineBlocks, seconds_left: u32) -> String {
    match blocks {
        QuarantineBlocks::Start => {
            format!("a quarantine is already active ({seconds_left} s left); stop it first")
        }
        QuarantineBlocks::Reset => {
            format!("a quarantine is active ({seconds_left} s left); stop it before ResetConfig")
        }
    }
}

impl From<Violations> for StoreError {
    fn from(violations: Violations) -> Self {
        StoreError::Invalid(violations)
    }
}
