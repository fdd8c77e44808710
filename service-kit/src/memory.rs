//! How the process's allocator treats large buffers. Webhook bodies reach 25 MiB; glibc's
//! malloc serves such blocks with `mmap` only below a *dynamic* threshold that it raises to the
//! size of every mmapped block freed (up to 32 MiB), after which 25 MiB bodies come from the
//! per-thread arenas and stay resident once freed. Measured with `attack` (64 concurrent
//! 25 MiB uploads, release binaries): gateway + service peak RSS 337 MiB with the dynamic
//! threshold, 162 MiB with it fixed at 1 MiB.

/// Fixes glibc's mmap threshold at 1 MiB, so every large buffer is returned to the system
/// when freed. A no-op on other allocators and platforms.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of the allocator, under its own lock; no
        // pointer is passed.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024) };
        if ok != 1 {
            tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused: large buffers may stay resident");
        }
    }
}
