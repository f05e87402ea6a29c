//! Field violations: which input field broke which rule, with paths relative to some root.

use std::fmt;

/// One input field that broke a rule, e.g. `l2_sensory.x`: `4.5 is outside [-3.2767, 3.2767]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldViolation {
    /// Path of the field in proto field names, relative to the value that was checked.
    pub field: String,
    /// The rule and the offending value.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Every violation found in one request; never empty when returned as an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Records one violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// True when nothing was violated.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves every violation under `prefix` (e.g. `token.` or `tokens[3].`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        for violation in &mut self.0 {
            violation.field.insert_str(0, prefix);
        }
        self
    }

    /// Appends the violations of `other`.
    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// The value of `result`, or `None` after recording its violations: lets a handler check
    /// every part of a request and report all violations at once.
    pub fn take<T>(&mut self, result: Result<T, Violations>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violations) => {
                self.extend(violations);
                None
            }
        }
    }

    /// A single violation of `field`.
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Violations {
        Violations(vec![FieldViolation::new(field, description)])
    }

    /// `Ok(value)` when empty, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Violations> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<FieldViolation> for Violations {
    fn from(violation: FieldViolation) -> Self {
        Self(vec![violation])
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, violation) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}
