//! Terminal side of the observers: `--list` lines, warnings, `--progress`.

use super::common::size;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};
use strata::archive::create::{Observer, Progress};

pub struct Terminal {
    list: bool,
    /// Statuses to print with --list (borg prints unchanged files only with
    /// --filter; we print them all but `U` unless asked).
    bar: Option<ProgressBar>,
    last: Instant,
    pub warnings: u64,
    verb: &'static str,
    /// The bar counts bytes toward a known total.
    total: bool,
}

impl Terminal {
    pub fn new(list: bool, progress: bool, verb: &'static str) -> Self {
        let bar = progress.then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Self {
            list,
            bar,
            last: Instant::now(),
            warnings: 0,
            verb,
            total: false,
        }
    }

    /// A bar with a known total of bytes (extract: the archive's size).
    pub fn with_total(list: bool, progress: bool, verb: &'static str, total: u64) -> Self {
        let mut t = Self::new(list, false, verb);
        if progress {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            t.bar = Some(b);
            t.total = true;
        }
        t
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for Terminal {
    fn entry(&mut self, status: char, path: &str) {
        if self.list {
            self.println(&format!("{status} {path}"));
        }
    }

    fn warning(&mut self, message: &str) {
        self.warnings += 1;
        self.println(&format!("strata: warning: {message}"));
    }

    fn progress(&mut self, p: &Progress) {
        let Some(bar) = &self.bar else { return };
        if self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        if self.total {
            bar.set_position(p.original);
            bar.set_message(format!("{} files", p.files));
            return;
        }
        let mut path = p.path.clone();
        if path.len() > 50 {
            let cut = path.len() - 47;
            let cut = (cut..path.len())
                .find(|&i| path.is_char_boundary(i))
                .unwrap_or(cut);
            path = format!("...{}", &path[cut..]);
        }
        bar.set_message(format!(
            "{} {} files, {} {}",
            self.verb,
            p.files,
            size(p.original),
            path
        ));
    }
}
