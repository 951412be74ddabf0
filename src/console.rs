//! What `train` prints on standard output, written so that a reader going away does not end the
//! run. `train ... | head` closes the pipe once `head` has its lines; the next `println!` would
//! then panic on the broken pipe and lose every step since the last checkpoint. [`say!`] writes
//! like `println!`, and when standard output fails it points it at the null device (what follows
//! is dropped quietly) and raises the stop flag given to [`stop_when_closed`]: the run finishes
//! its step, saves a checkpoint and exits, as on Ctrl-C, with a note on standard error.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// `println!` that cannot panic: see the module's doc.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}

/// Set once standard output failed; nothing is written to it after that.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The run to stop when standard output fails: its stop flag and folder (for the note).
static RUN: Mutex<Option<(Arc<AtomicBool>, PathBuf)>> = Mutex::new(None);

/// Writes `args` and a newline to standard output, flushed (standard output is line-buffered
/// anyway). A failure silences standard output and stops the run registered with
/// [`stop_when_closed`].
pub fn line(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    drop(out);
    if let Err(e) = written {
        closed(&e);
    }
}

/// Stops the run whose `stop` flag this is (and names `run_dir` in the note) once standard output
/// fails; at once if it already has.
pub fn stop_when_closed(stop: Arc<AtomicBool>, run_dir: PathBuf) {
    if CLOSED.load(Ordering::Relaxed) {
        stop.store(true, Ordering::Relaxed);
    }
    *RUN.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, run_dir));
}

fn closed(e: &std::io::Error) {
    if CLOSED.swap(true, Ordering::Relaxed) {
        return;
    }
    silence_stdout();
    let run = RUN.lock().unwrap_or_else(|e| e.into_inner());
    let Some((stop, run_dir)) = run.as_ref() else {
        eprintln!("note: standard output closed ({e}); nothing more is printed there");
        return;
    };
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "note: standard output closed ({e}): the run stops after this step with a checkpoint; \
         continue with: train --resume {}",
        run_dir.display()
    );
}

/// Points standard output at the null device: later writes succeed and go nowhere. Rust's
/// `stdout` keeps writing to descriptor 1, which now is the null device.
pub fn silence_stdout() {
    // SAFETY: plain POSIX calls on a path and file descriptors this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if null >= 0 {
            libc::dup2(null, libc::STDOUT_FILENO);
            libc::close(null);
        }
    }
}
