//! Networking: a connection pool with retries.

use std::time::Duration;

/// How long to wait between two attempts to reconnect.
pub const RETRY_DELAY: Duration = Duration::from_millis(250);

/// A pool of open TCP connections to one host.
pub struct ConnectionPool {
    host: String,
    open: Vec<u32>,
}

impl ConnectionPool {
    /// Open a new pool for `host`.
    pub fn new(host: &str) -> Self {
        ConnectionPool { host: host.to_string(), open: Vec::new() }
    }

    /// Take a connection from the pool, reconnecting with exponential backoff on failure.
    pub fn acquire(&mut self) -> Option<u32> {
        for attempt in 0..5 {
            if let Some(c) = self.open.pop() {
                return Some(c);
            }
            std::thread::sleep(RETRY_DELAY * 2u32.pow(attempt));
        }
        None
    }
}

/// Errors a connection can raise.
#[derive(Debug)]
pub enum NetError {
    Timeout,
    Refused(String),
}

macro_rules! retry {
    ($e:expr) => {
        loop { if let Ok(v) = $e { break v; } }
    };
}
