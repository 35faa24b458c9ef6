//! Log output: plain or JSON, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter,
    fmt::{self, MakeWriter},
    prelude::*,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Plain,
    /// One JSON object per line, with the current span.
    Json,
}

/// Install a global `tracing` subscriber writing `format`, filtered by `RUST_LOG` (default
/// `info`). Does nothing if one is already set. Operators call
/// `bonny::operator::init_logging`, which takes the format from
/// `BONNY_LOG_FORMAT`.
///
/// Plain text is coloured only when stdout is a terminal (and `NO_COLOR` is unset), so logs
/// written to a file or collected from a container carry no escape codes.
pub fn init_logging_with(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if format == LogFormat::Json {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        let terminal = std::io::stdout().is_terminal();
        registry
            .with(plain_layer(std::io::stdout, terminal))
            .try_init()
    };
}

/// The plain format writing to `writer`; colours stay off unless `terminal`. On a terminal the
/// subscriber's default applies, which honours `NO_COLOR`.
fn plain_layer<S, W>(
    writer: W,
    terminal: bool,
) -> fmt::Layer<S, fmt::format::DefaultFields, fmt::format::Format, W>
where
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    let layer = fmt::layer().with_writer(writer);
    if terminal {
        layer
    } else {
        layer.with_ansi(false)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::Registry;

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What one warning with a field looks like through the plain layer.
    fn logged(terminal: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = Registry::default().with(plain_layer(move || writer.clone(), terminal));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(object = "default/w1", "reconcile failed");
        });
        let bytes = buffer.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn no_escape_codes_when_not_a_terminal() {
        let line = logged(false);
        assert!(line.contains("WARN"), "{line:?}");
        assert!(
            line.contains("reconcile failed object=\"default/w1\""),
            "{line:?}"
        );
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }

    #[test]
    fn colours_on_a_terminal_unless_no_color() {
        let line = logged(true);
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        assert_eq!(line.contains('\u{1b}'), !no_color, "{line:?}");
    }
}
