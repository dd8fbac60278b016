//! Errors as users see them. A user error is its one line; an internal error (the store, a
//! broken invariant) is shown as `internal error <id>: see the berth server log`, and the server
//! log carries the same id beside the cause, so an operator finds the line a user reports.

use std::sync::atomic::{AtomicU32, Ordering};

/// The one line for a user about an internal error; the cause goes to the server log with an id.
pub fn internal(error: impl std::fmt::Display) -> String {
    let id = next_id();
    tracing::error!(error_id = %id, %error, "internal error");
    format!("internal error {id}: see the berth server log")
}

/// `internal`, with what berth was doing when it failed (for the log only).
pub fn internal_while(doing: &str, error: impl std::fmt::Display) -> String {
    let id = next_id();
    tracing::error!(error_id = %id, %error, doing, "internal error");
    format!("internal error {id}: see the berth server log")
}

/// Short, unique in one server's life, and not guessable across restarts (the start time mixes
/// in): `e1a2b3c4`.
fn next_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("e{:08x}", seed.wrapping_add(n.wrapping_mul(0x9e37_79b9)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn internal_errors_carry_an_id_and_no_cause() {
        let shown = super::internal("database is locked");
        assert!(shown.starts_with("internal error e"), "{shown}");
        assert!(
            !shown.contains("locked"),
            "the cause stays in the log: {shown}"
        );
        assert_ne!(shown, super::internal("database is locked"), "ids differ");
    }
}
