//! A counting global allocator for the library's unit tests: how many bytes the current thread
//! holds, so that a test can measure what a structure costs (the watch cache's bytes per resource,
//! `reconciler::cache`) deterministically, without a profiler. Per thread, because tests run in
//! parallel. It counts the bytes asked for, not the allocator's rounding or its free lists, so a
//! process's resident memory is somewhat higher.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

#[global_allocator]
static COUNTING: Counting = Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (negative when it frees what another
    /// thread allocated).
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: the thread-local is gone while a thread's other thread-locals are dropped.
    let _ = HELD.try_with(|held| held.set(held.get() + delta));
}

// SAFETY: every call is passed to `System` unchanged; only a thread-local counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The bytes this thread holds now.
pub(crate) fn held() -> isize {
    HELD.with(Cell::get)
}
