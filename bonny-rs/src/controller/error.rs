//! The error an author's reconcile returns.

use std::{error::Error as StdError, fmt};

/// Why a reconcile failed. Any error type converts into it with `?`.
///
/// The runtime publishes a Warning event with [`reason`](Self::reason) and the message, and
/// retries the object with exponential backoff.
///
/// ```
/// use bonny::controller::ReconcileError;
/// let err = ReconcileError::invalid_spec("spec.size must be at most 100, got 500");
/// assert_eq!(err.reason(), "InvalidSpec");
/// assert!(err.to_string().contains("spec.size"));
/// ```
pub struct ReconcileError {
    reason: &'static str,
    source: Box<dyn StdError + Send + Sync>,
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

impl ReconcileError {
    /// A failure with an event reason (`PascalCase`, at most 128 characters) and a message,
    /// without an error type.
    ///
    /// ```
    /// use bonny::controller::ReconcileError;
    /// let err = ReconcileError::new("SourceMissing", "configmap default/source not found");
    /// assert_eq!(err.reason(), "SourceMissing");
    /// assert_eq!(err.to_string(), "configmap default/source not found");
    /// ```
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self::with_reason(reason, Message(message.into()))
    }

    /// A failure described by a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::with_reason("ReconcileFailed", Message(message.into()))
    }

    /// The object's spec cannot be acted on: say what is wrong and what value would work.
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        Self::with_reason("InvalidSpec", Message(message.into()))
    }

    /// A failure with an explicit event reason (`PascalCase`, at most 128 characters).
    pub fn with_reason(
        reason: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            reason,
            source: Box::new(source),
        }
    }

    /// The short `PascalCase` reason used for the Warning event and metrics.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// Whether the API server refused the request for lack of permission (403).
    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(
            self.source.downcast_ref::<kube::Error>(),
            Some(kube::Error::Api(status)) if status.code == 403
        )
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for ReconcileError {
    fn from(err: E) -> Self {
        Self::with_reason("ReconcileFailed", err)
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The API server's own words read better than kube's debug dump of its Status.
        if let Some(kube::Error::Api(status)) = self.source.downcast_ref::<kube::Error>() {
            // The runtime adds where a refused permission is granted (it knows the binary).
            return write!(f, "{}", status.message);
        }
        write!(f, "{}", self.source)?;
        let mut cause = self.source.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileError")
            .field("reason", &self.reason)
            .field("source", &self.source)
            .finish()
    }
}
