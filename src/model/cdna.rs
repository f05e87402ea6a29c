//! CDNA config, profiles, scale rules and the quarantine state machine (filled in by the CDNA
//! issue).
