//! What a test says beyond pass or fail: the cases that did not run (their backends were not
//! found) and measured figures. libtest captures `eprintln!` of a passing test, but not writes
//! to the stderr handle, so these lines reach the terminal.
//!
//! A case that did not run still passes (outside CI), so libtest's own count hides it. Each
//! one prints `SKIPPED <test>: <why>` at once and is kept in a list; when the test binary
//! exits (after libtest's `test result:` line, from a C `atexit` handler: libtest has no
//! hook of its own) a last line says how many cases did not run, and the list is written to
//! `$CARGO_TARGET_TMPDIR/api-not-run.txt` (`target/tmp/`), which a run where every case ran
//! removes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

/// The cases that did not run: `<test>: <why>`.
static NOT_RUN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The name of the running test (libtest names each test's thread after it).
fn current_test() -> String {
    std::thread::current().name().unwrap_or("a test").to_owned()
}

/// Records that the running case did not run and why, and says so on the terminal. In CI
/// (`CI=true`), where every backend is set up, a missing one fails the case instead.
pub fn skipped(why: &str) {
    let test = current_test();
    if in_ci() {
        panic!("{test}: {why}; CI runs every suite against every backend");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    NOT_RUN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{test}: {why}"));
    summarize_at_exit();
}

/// Prints a measured figure of the running test on the terminal (shown even when the test
/// passes), as `FIGURE <test>: <what>`.
pub fn figure(what: &str) {
    let _ = writeln!(std::io::stderr(), "FIGURE {}: {what}", current_test());
}

/// Whether the tests run in CI (`CI=true`), where no case may be skipped.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Where the list of the cases that did not run is written.
fn not_run_file() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("api-not-run.txt")
}

extern "C" {
    /// The C library's `atexit`: `f` runs when the process exits normally (after `main`
    /// returns, or from `std::process::exit`, which libtest calls when a test failed).
    fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
}

/// Makes the process end with the summary of [`summary`] (registered once).
pub(super) fn summarize_at_exit() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `summary` is an `extern "C" fn()` that never unwinds (nothing in it
        // panics) and touches only statics that outlive `main`.
        unsafe {
            atexit(summary);
        }
    });
}

/// At exit: how many cases did not run, and their list in [`not_run_file`] (removed when
/// every case ran).
extern "C" fn summary() {
    let Ok(not_run) = NOT_RUN.try_lock() else {
        return;
    };
    let path = not_run_file();
    if not_run.is_empty() {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let _ = std::fs::write(&path, not_run.join("\n") + "\n");
    let _ = writeln!(
        std::io::stderr(),
        "NOT RUN: {} test case(s) passed without running, their backends not found (listed \
         in {}; see tests/api/support/mod.rs)",
        not_run.len(),
        path.display()
    );
}
