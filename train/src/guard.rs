//! A last guard around foreign loaders (Burn's records, Hugging Face's `tokenizer.json`) that
//! panic on some damaged inputs where they should return an error: the panic becomes the same
//! one-line error as any other bad input. Ember checks what it can before calling them; this is
//! for what the checks do not foresee, and the fuzz tests find.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// Set while [`without_panic`] runs on this thread: its panics are errors, not messages.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs a foreign loader of `what` ("the record"), turning a panic inside it into the error
/// `WHAT cannot be loaded (MESSAGE)`. The panic message is not printed (the error carries it);
/// panics on other threads print as usual.
pub(crate) fn without_panic<T>(
    what: &str,
    load: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.get() {
                previous(info);
            }
        }));
    });
    let was = QUIET.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load));
    QUIET.set(was);
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        Err(format!("{what} cannot be loaded ({message})"))
    })
}
