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
        ProgressStyle::with_template("{msg:40!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
    {
        pb.set_style(style);
    }
    pb.set_message(message);
    Some(pb)
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
