//! The error collector: parsing goes on after a wrong value, and every mistake is reported in
//! one compile.

use syn::Error;

/// Errors gathered while parsing, combined into one `syn::Error` at the end.
#[derive(Default)]
pub(super) struct Errors(Option<Error>);

impl Errors {
    /// Record `error`.
    pub(super) fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The value, or `None` after recording the error.
    pub(super) fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `Err` with everything recorded so far, if anything was.
    pub(super) fn finish(&mut self) -> syn::Result<()> {
        self.0.take().map_or(Ok(()), Err)
    }
}
