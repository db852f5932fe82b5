//! Progress bars on stderr, drawn only when it is a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read};

/// A byte-counting bar for one blob, or none when progress is off or stderr is not a terminal.
pub fn bar(enabled: bool, len: Option<u64>, message: String) -> Option<ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg:48!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
    {
        pb.set_style(style);
    }
    pb.set_message(message);
    Some(pb)
}

/// Most characters of a bar's label (the template's message width).
const LABEL_WIDTH: usize = 48;

/// A bar's label: the image's name ([`PullOptions::progress_label`](super::PullOptions), else the target as
/// named) and what is read of it (`sha256:0123456789ab`, `archive`). A long name keeps
/// its end (the repository and tag) and loses its start.
pub fn label(opts: &super::PullOptions, target: &str, part: &str) -> String {
    let part: String = part.chars().take(19).collect();
    let name = opts.progress_label.as_deref().unwrap_or(target);
    let room = LABEL_WIDTH.saturating_sub(part.chars().count() + 1);
    let count = name.chars().count();
    let name = if count > room {
        let tail: String = name.chars().skip(count - room + 1).collect();
        format!("…{tail}")
    } else {
        name.to_string()
    };
    format!("{name} {part}")
}

/// Counts bytes read into a progress bar.
pub struct ProgressReader<R> {
    pub inner: R,
    pub bar: Option<ProgressBar>,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

impl<R> Drop for ProgressReader<R> {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_the_end_of_long_names() {
        let opts = crate::source::PullOptions::default();
        assert_eq!(
            label(&opts, "r.example/app:v1", "sha256:0123456789abcdef"),
            "r.example/app:v1 sha256:0123456789ab"
        );
        let long = format!("registry.example/{}app:v1", "team/".repeat(10));
        let l = label(&opts, &long, "archive");
        assert_eq!(l.chars().count(), LABEL_WIDTH);
        assert!(
            l.starts_with('…') && l.ends_with("team/app:v1 archive"),
            "{l}"
        );
        let named = crate::source::PullOptions {
            progress_label: Some("example image".into()),
            ..Default::default()
        };
        assert_eq!(
            label(&named, "docker-archive:/tmp/x.tar", "archive"),
            "example image archive"
        );
    }
}
