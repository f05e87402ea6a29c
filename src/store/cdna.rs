//! The live CDNA config, its history and the quarantine (filled in by the CDNA issue).

/// A change of the CDNA config, applied through the write path.
#[derive(Clone, Debug, PartialEq)]
pub enum CdnaCommand {}

/// What a CDNA command changed.
#[derive(Clone, Debug, PartialEq)]
pub enum CdnaEffect {}
