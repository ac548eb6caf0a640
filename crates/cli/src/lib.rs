//! Process-wide set-up shared by the `tinygpt` binary and the benches: the allocator.
//!
//! Both use mimalloc as the global allocator (see `mimalloc` in the workspace Cargo.toml); the
//! binary wraps it in [`ReportingAllocator`].

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::fmt;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same index in mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep freed memory for reuse instead of handing it back to the OS.
///
/// A training step frees and reallocates the same large activation buffers every step. By
/// default mimalloc returns freed pages to the OS after a short delay, so each step faults them
/// back in and the kernel zeroes them again: 30% of a `gpt.ron` step on flex was
/// `clear_page_erms`, and the step went from 6.7 s to 4.0 s without it. The price is that the
/// process keeps its peak footprint (5.5 GB for gpt.ron, against 4.5 GB purging and 6.5 GB for
/// PyTorch) until it exits.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is a plain store inside mimalloc, valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// mimalloc, and a clear error instead of an abort when memory runs out.
///
/// Rust's response to a failed allocation is to print "memory allocation of N bytes failed" and
/// abort (exit 134, and a core dump where enabled); a stable program cannot catch it. This
/// allocator says instead what ran out of memory (which training step, see
/// [`tinygpt_train::activity`]), which checkpoint is safe and what to do, and exits with status 1.
/// It may not allocate while doing so: the message is formatted into a fixed buffer and written
/// straight to stderr.
pub struct ReportingAllocator;

// SAFETY: every method forwards to mimalloc's and returns its result unchanged; only on a null
// result does it take over, and then it never returns.
unsafe impl GlobalAlloc for ReportingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { MiMalloc.alloc(layout) };
        if ptr.is_null() {
            out_of_memory(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { MiMalloc.alloc_zeroed(layout) };
        if ptr.is_null() {
            out_of_memory(layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let ptr = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if ptr.is_null() {
            out_of_memory(new_size);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

/// Text formatted into a fixed buffer: whatever does not fit is cut off.
struct FixedText {
    bytes: [u8; 2048],
    len: usize,
}

impl fmt::Write for FixedText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The out-of-memory report for an allocation of `size` bytes.
fn out_of_memory_message(size: usize, text: &mut FixedText) {
    use fmt::Write;
    let _ = write!(text, "\nerror: out of memory ");
    let _ = tinygpt_train::activity::describe(text);
    let _ = writeln!(
        text,
        ".\nAn allocation of {:.2} GB failed. `tinygpt info CONFIG` estimates what a run needs; \
         lower the batch size or the model's size.",
        size as f64 / 1e9
    );
}

fn out_of_memory(size: usize) -> ! {
    let mut text = FixedText {
        bytes: [0; 2048],
        len: 0,
    };
    out_of_memory_message(size, &mut text);
    // SAFETY: writes `len` initialised bytes of a live buffer to stderr, then ends the process
    // at once: no destructor or exit handler runs that might allocate.
    unsafe {
        libc::write(2, text.bytes.as_ptr().cast(), text.len);
        libc::_exit(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_report_names_the_step_and_the_size() {
        tinygpt_train::activity::enter(tinygpt_train::activity::Phase::Training, 4);
        let mut text = super::FixedText {
            bytes: [0; 2048],
            len: 0,
        };
        super::out_of_memory_message(19_200_000_000, &mut text);
        let text = std::str::from_utf8(&text.bytes[..text.len]).unwrap();
        assert!(text.contains("out of memory in training step 5"), "{text}");
        assert!(text.contains("19.20 GB"), "{text}");
    }

    #[test]
    fn the_option_is_mimallocs_purge_delay() {
        // purge_delay is the only option whose default is a delay in milliseconds of 10 or
        // 1000 (depending on the build); its neighbours are booleans and counts.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(
            default == 10 || default == 1000,
            "option 15 reads {default}"
        );
        super::keep_freed_memory();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) },
            -1
        );
    }
}
