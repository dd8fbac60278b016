//! Crash injection for the crash-safety tests: with `BERTH_CRASH_AT=STAGE` in its environment,
//! the control plane kills itself (`SIGKILL`, as `kill -9` does: no clean-up of any kind) when
//! it reaches `STAGE`. Unset, which it always is outside those tests, each point is one
//! environment look-up.
//!
//! Stages: `build` (the build is under way), `registry` (before the image push), `release`
//! (the release is recorded, before its release phase), `deploy` (the new instances answer,
//! before the switch), `switched` (the data plane serves the new release, before it is
//! recorded), `scale` (the new web instances serve, the formation is not recorded, the extra
//! ones not stopped), `rollback` (before its release is made), `promote` (the data plane serves
//! the canary as the current release, which is not recorded yet).

/// Kills this process when `BERTH_CRASH_AT` names `stage`.
pub fn point(stage: &str) {
    if std::env::var("BERTH_CRASH_AT").is_ok_and(|at| at == stage) {
        tracing::error!(stage, "BERTH_CRASH_AT: killing this process here");
        // SAFETY: a signal to ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
