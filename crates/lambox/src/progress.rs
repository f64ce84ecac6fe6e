//! Import progress: bars per layer on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lambox_image::import::Progress;
use lambox_image::Digest;

/// Progress shown on stderr.
#[derive(Debug)]
pub enum Reporter {
    Bars {
        multi: MultiProgress,
        bars: Mutex<Vec<Option<ProgressBar>>>,
    },
    Lines {
        names: Mutex<Vec<Option<(String, u64)>>>,
    },
    Quiet,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        if quiet {
            Reporter::Quiet
        } else if std::io::stderr().is_terminal() {
            Reporter::Bars {
                multi: MultiProgress::new(),
                bars: Mutex::new(Vec::new()),
            }
        } else {
            Reporter::Lines {
                names: Mutex::new(Vec::new()),
            }
        }
    }
}

fn slot<T>(v: &mut Vec<Option<T>>, i: usize) -> &mut Option<T> {
    if v.len() <= i {
        v.resize_with(i + 1, || None);
    }
    &mut v[i]
}

impl Progress for Reporter {
    fn layer_start(&self, index: usize, digest: &Digest, size: u64) {
        match self {
            Reporter::Bars { multi, bars } => {
                let bar = multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("layer {}", digest.short()));
                *slot(&mut bars.lock().unwrap_or_else(|p| p.into_inner()), index) = Some(bar);
            }
            Reporter::Lines { names } => {
                *slot(&mut names.lock().unwrap_or_else(|p| p.into_inner()), index) =
                    Some((digest.short(), size));
            }
            Reporter::Quiet => {}
        }
    }

    fn layer_bytes(&self, index: usize, bytes: u64) {
        if let Reporter::Bars { bars, .. } = self {
            if let Some(Some(b)) = bars.lock().unwrap_or_else(|p| p.into_inner()).get(index) {
                b.inc(bytes);
            }
        }
    }

    fn layer_done(&self, index: usize, reused: bool) {
        match self {
            Reporter::Bars { bars, .. } => {
                if let Some(Some(b)) = bars.lock().unwrap_or_else(|p| p.into_inner()).get(index) {
                    b.finish_with_message(if reused { "already stored" } else { "done" });
                }
            }
            Reporter::Lines { names } => {
                if let Some(Some((name, size))) =
                    names.lock().unwrap_or_else(|p| p.into_inner()).get(index)
                {
                    if reused {
                        eprintln!("layer {name}: already stored");
                    } else {
                        eprintln!("layer {name}: stored ({size} bytes)");
                    }
                }
            }
            Reporter::Quiet => {}
        }
    }
}
