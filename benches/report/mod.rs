//! Each benchmark's results, written into its own section of `docs/benchmarks.md`.
//!
//! A bench builds a [`Section`] (what it measures, the settings of the run, its tables) and
//! calls [`Section::write`] once at the end. That stamps the section with the run's date
//! (UTC), commit and machine, and replaces the text between the bench's markers
//! (`<!-- bench:NAME:begin -->` … `<!-- bench:NAME:end -->`, each a line of its own), so a bench
//! rewrites only its own section; a missing section is appended at the end of the file.
//!
//! `BENCH_NO_WRITE=1` leaves the file alone (the section is still printed), for exploratory
//! runs. Included by each bench as `mod report;`; the pure part, with its tests, is
//! `section.rs`.

// Each bench uses the part of this module it needs.
#![allow(dead_code)]

mod section;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use section::{replace_section, RunInfo, Section};

/// `docs/benchmarks.md` of this package.
pub fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md")
}

impl RunInfo {
    /// This run: now, the checked-out commit, this machine.
    pub fn collect() -> RunInfo {
        RunInfo {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            commit: commit(),
            machine: machine(),
        }
    }
}

impl Section {
    /// Prints the section and, unless `BENCH_NO_WRITE` is set (to anything but `0` or empty),
    /// writes it into `docs/benchmarks.md`. A failure to write is reported, not fatal: the
    /// measurements are on the terminal anyway.
    pub fn write(&self) {
        let text = self.render(&RunInfo::collect());
        println!("\n{text}");
        let path = doc_path();
        if std::env::var("BENCH_NO_WRITE").is_ok_and(|v| !v.is_empty() && v != "0") {
            println!("(BENCH_NO_WRITE is set: {} left as it was)", path.display());
            return;
        }
        match write_section(&path, &self.name, &text) {
            Ok(()) => println!(
                "{}: section `{}` rewritten (BENCH_NO_WRITE=1 to leave it alone)",
                path.display(),
                self.name
            ),
            Err(e) => eprintln!("{}: not written: {e}", path.display()),
        }
    }
}

/// Replaces `name`'s section of the file at `path` (created if missing) with `body`, through a
/// temporary file renamed over it, so that a reader never sees half a file.
fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.to_string()),
    };
    let new = replace_section(&doc, name, body)?;
    let tmp = path.with_extension(format!("md.{}.tmp", std::process::id()));
    std::fs::write(&tmp, new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.to_string()
    })
}

/// `git rev-parse --short HEAD`, plus `-dirty` when `git status --porcelain` lists anything
/// but `docs/benchmarks.md` itself (which the benches of one session rewrite in turn); `unknown`
/// outside a git checkout.
fn commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]).filter(|h| !h.is_empty()) else {
        return "unknown".to_owned();
    };
    match git(&[
        "status",
        "--porcelain",
        "--",
        ".",
        ":(exclude)docs/benchmarks.md",
    ]) {
        Some(changes) if changes.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}

/// `<CPU model>, <n> cores, Linux <release>`, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key.trim(), "model name" | "Hardware" | "cpu model")
                .then(|| value.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // Counted from /proc/cpuinfo: `available_parallelism` follows this process's affinity,
    // and a bench may have pinned itself to one core.
    let cores = match cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count()
    {
        0 => std::thread::available_parallelism().map_or(0, |n| n.get()),
        n => n,
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{model}, {cores} cores, Linux {kernel}")
}
