//! Every log line of every node in a test binary, captured in memory (nodes run in the
//! test's process). Each test binary is its own process, so each sets its own level.

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Captured;

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line at `filter` (an `EnvFilter` directive such as `debug` or
/// `trace`) from here on. The first call in a test binary sets the filter.
pub fn capture(filter: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(|| Captured)
            .with_ansi(false)
            .try_init();
    });
}

/// Everything captured so far.
pub fn text() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
