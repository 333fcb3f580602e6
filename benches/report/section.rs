//! The pure half of the benchmark report: rendering a scenario's section of
//! `docs/benchmarks.md` and replacing it between its markers. Standard library only, so its
//! tests run without Cargo (bench targets are `harness = false`, so `#[test]`s in them never
//! run):
//!
//! ```sh
//! rustc --edition 2021 --test benches/report/section.rs -o target/report-section-tests \
//!   && target/report-section-tests
//! ```

/// The line that opens `name`'s section.
pub fn begin_marker(name: &str) -> String {
    format!("<!-- bench:{name}:begin -->")
}

/// The line that closes `name`'s section.
pub fn end_marker(name: &str) -> String {
    format!("<!-- bench:{name}:end -->")
}

/// `doc` with everything between `name`'s begin and end markers replaced by `body` (followed
/// by one blank line); other sections and the text around them are kept byte for byte.
///
/// A marker counts only as a line of its own (surrounding spaces ignored), so a marker quoted
/// inside a sentence is left alone. When `doc` holds neither marker, the section is appended
/// at the end. A begin marker without its end, an end before its begin, or a marker that
/// appears twice is an error: nothing is guessed, and the file is not rewritten.
pub fn replace_section(doc: &str, name: &str, body: &str) -> Result<String, String> {
    let (begin, end) = (begin_marker(name), end_marker(name));
    // (byte offset where the line starts, byte offset just past its newline) per marker line.
    let mut begins = Vec::new();
    let mut ends = Vec::new();
    let mut at = 0;
    for line in doc.split_inclusive('\n') {
        let span = (at, at + line.len());
        if line.trim() == begin {
            begins.push(span);
        } else if line.trim() == end {
            ends.push(span);
        }
        at = span.1;
    }
    // A blank line before the end marker ends the last table or list of the body.
    let body = match body.trim_end_matches('\n') {
        "" => String::new(),
        text => format!("{text}\n\n"),
    };
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => {
            let mut out = doc.trim_end_matches('\n').to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&format!("{begin}\n{body}{end}\n"));
            Ok(out)
        }
        ([(_, body_start)], [(body_end, _)]) if body_start <= body_end => {
            let mut out = String::with_capacity(doc.len() + body.len());
            // The begin marker's line ends with its newline: an end marker follows it.
            out.push_str(&doc[..*body_start]);
            out.push_str(&body);
            out.push_str(&doc[*body_end..]);
            Ok(out)
        }
        _ => Err(format!(
            "docs/benchmarks.md: the markers of `{name}` are not one `{begin}` followed by one \
             `{end}` ({} begin, {} end); fix the file by hand",
            begins.len(),
            ends.len()
        )),
    }
}

/// A Markdown table; `|` in a cell is escaped, newlines become spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::new();
    out.push_str(&format!(
        "| {} |\n",
        headers
            .iter()
            .map(|h| cell(h))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    out.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
    for row in rows {
        out.push_str(&format!(
            "| {} |\n",
            row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// Where and when a run happened: the head of every section.
pub struct RunInfo {
    /// `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
    pub commit: String,
    /// CPU model, core count, kernel.
    pub machine: String,
}

/// One scenario's section: a heading, what the bench measures, the run's facts, then tables
/// and notes in the order they were added.
pub struct Section {
    /// The marker name, which is also the bench's name: `cargo bench --bench <name>`.
    pub name: String,
    pub title: String,
    /// One paragraph: what is measured, against what, and the targets.
    pub about: String,
    /// How many times each figure was measured and how it was reduced.
    pub rounds: String,
    /// The settings of the run (environment variables, backends, sizes).
    pub settings: Vec<String>,
    /// Tables and notes, already Markdown.
    pub blocks: Vec<String>,
}

impl Section {
    pub fn new(name: &str, title: &str, about: &str) -> Self {
        Section {
            name: name.to_owned(),
            title: title.to_owned(),
            about: about.to_owned(),
            rounds: "1".to_owned(),
            settings: Vec::new(),
            blocks: Vec::new(),
        }
    }

    pub fn rounds(&mut self, rounds: impl Into<String>) -> &mut Self {
        self.rounds = rounds.into();
        self
    }

    pub fn setting(&mut self, setting: impl Into<String>) -> &mut Self {
        self.settings.push(setting.into());
        self
    }

    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) -> &mut Self {
        self.blocks.push(table(headers, rows));
        self
    }

    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(text.into());
        self
    }

    /// The Markdown between the markers.
    pub fn render(&self, run: &RunInfo) -> String {
        let mut out = format!("## {}\n\n{}\n\n", self.title, self.about);
        out.push_str(&format!(
            "- run: {}, commit `{}`, `cargo bench --bench {}`\n",
            run.date, run.commit, self.name
        ));
        out.push_str(&format!("- machine: {}\n", run.machine));
        out.push_str(&format!("- rounds: {}\n", self.rounds));
        if !self.settings.is_empty() {
            out.push_str(&format!("- settings: {}\n", self.settings.join("; ")));
        }
        for block in &self.blocks {
            out.push('\n');
            out.push_str(block.trim_end_matches('\n'));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    // `cargo check --benches` compiles this module without the test harness, which drops the
    // `#[test]` functions and leaves the import unused.
    #[allow(unused_imports)]
    use super::*;

    const DOC: &str =
        "# Benchmarks\n\nHeader naming `<!-- bench:load:begin -->` in a sentence.\n\n\
        <!-- bench:load:begin -->\nold load\n<!-- bench:load:end -->\n\n\
        <!-- bench:flood:begin -->\nold flood\nmore\n<!-- bench:flood:end -->\n\nFooter.\n";

    #[test]
    fn replaces_only_its_own_section() {
        let out = replace_section(DOC, "load", "new load\n").unwrap();
        assert_eq!(out, DOC.replace("old load\n", "new load\n\n"));
        let out = replace_section(&out, "flood", "new flood").unwrap();
        assert!(out.contains("<!-- bench:flood:begin -->\nnew flood\n\n<!-- bench:flood:end -->"));
        assert!(out.contains("new load"));
        assert!(out.ends_with("\n\nFooter.\n"));
        assert!(out.contains("Header naming `<!-- bench:load:begin -->` in a sentence."));
    }

    #[test]
    fn is_idempotent() {
        let once = replace_section(DOC, "load", "x\n\n").unwrap();
        assert_eq!(replace_section(&once, "load", "x").unwrap(), once);
    }

    #[test]
    fn appends_a_missing_section() {
        let out = replace_section(DOC, "ws_idle", "idle").unwrap();
        assert!(out.starts_with(DOC.trim_end()));
        assert!(out.ends_with(
            "Footer.\n\n<!-- bench:ws_idle:begin -->\nidle\n\n<!-- bench:ws_idle:end -->\n"
        ));
        assert_eq!(
            replace_section("", "load", "x").unwrap(),
            "<!-- bench:load:begin -->\nx\n\n<!-- bench:load:end -->\n"
        );
    }

    #[test]
    fn empty_section_and_indented_markers() {
        let doc = "a\n  <!-- bench:load:begin -->  \n<!-- bench:load:end -->\nb\n";
        assert_eq!(
            replace_section(doc, "load", "x").unwrap(),
            "a\n  <!-- bench:load:begin -->  \nx\n\n<!-- bench:load:end -->\nb\n"
        );
    }

    #[test]
    fn an_empty_body_empties_the_section() {
        let out = replace_section(DOC, "load", "\n").unwrap();
        assert!(out.contains("<!-- bench:load:begin -->\n<!-- bench:load:end -->\n"));
    }

    #[test]
    fn refuses_broken_markers() {
        for doc in [
            "<!-- bench:load:begin -->\nx\n",
            "x\n<!-- bench:load:end -->\n",
            "<!-- bench:load:end -->\n<!-- bench:load:begin -->\n",
            "<!-- bench:load:begin -->\n<!-- bench:load:end -->\n\
             <!-- bench:load:begin -->\n<!-- bench:load:end -->\n",
        ] {
            assert!(replace_section(doc, "load", "x").is_err(), "{doc}");
        }
    }

    #[test]
    fn a_name_that_is_a_prefix_of_another_is_not_confused() {
        let doc = "<!-- bench:load2:begin -->\nkeep\n<!-- bench:load2:end -->\n";
        let out = replace_section(doc, "load", "x").unwrap();
        assert!(out.starts_with(doc));
        assert!(out.contains("keep"));
    }

    #[test]
    fn tables_escape_pipes() {
        let t = table(&["a", "b"], &[vec!["x|y".into(), "z".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| x\\|y | z |\n");
    }

    #[test]
    fn renders_the_run_head() {
        let mut s = Section::new("load", "Title", "About.");
        s.rounds("3").setting("BENCH_SECS=10");
        s.table(&["k"], &[vec!["v".into()]]);
        let run = RunInfo {
            date: "2025-01-01 00:00 UTC".into(),
            commit: "abc1234-dirty".into(),
            machine: "CPU, 2 cores, Linux 6.1".into(),
        };
        let text = s.render(&run);
        assert!(text.starts_with(
            "## Title\n\nAbout.\n\n- run: 2025-01-01 00:00 UTC, commit `abc1234-dirty`"
        ));
        assert!(text.contains("- rounds: 3\n- settings: BENCH_SECS=10\n\n| k |"));
    }
}
