//! Process-wide set-up shared by the `tinygpt` binary and the benches: the allocator.
//!
//! Both use mimalloc as the global allocator (see `mimalloc` in the workspace Cargo.toml).

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

#[cfg(test)]
mod tests {
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
