//! Handing freed memory back to the system. glibc's allocator keeps freed pages of its heap
//! for later allocations, so after a bulk build (recovery, the compaction after an import)
//! the process stays as large as its peak; `malloc_trim` returns the free pages.

/// Returns the allocator's free pages to the system (glibc only; a no-op elsewhere).
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it touches no live
    // allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
