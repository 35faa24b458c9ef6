//! What a validator answers: allow or deny, with warnings either way.

/// A validator's answer: the request is allowed or denied, and the client is shown the
/// warnings either way (`kubectl` prints them as `Warning: ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Verdict {
    pub(crate) denial: Option<String>,
    pub(crate) warnings: Vec<String>,
}

impl Verdict {
    /// Let the request through.
    pub fn allow() -> Self {
        Self::default()
    }

    /// Refuse the request; `message` reaches the client (`kubectl` prints
    /// `admission webhook "..." denied the request: <message>`).
    pub fn deny(message: impl Into<String>) -> Self {
        Self {
            denial: Some(message.into()),
            warnings: Vec::new(),
        }
    }

    /// Add a warning for the client (keep it under 120 characters).
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.denial.is_none()
    }

    /// The denial message, if denied.
    pub fn denial(&self) -> Option<&str> {
        self.denial.as_deref()
    }

    /// The warnings.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}
