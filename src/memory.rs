//! Giving freed heap back to the operating system after a burst of traffic.
//!
//! glibc's allocator keeps memory freed by worker threads in per-thread arenas, so after a load
//! peak the resident size stays near the peak even though the process no longer uses it. Every
//! `TRIM_INTERVAL`, when no proxied request is in flight, `malloc_trim(0)` returns the free pages
//! of every arena. It is skipped while requests are in flight: under load the memory is reused
//! at once, and trimming would only make allocations wait on the arena locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Start the periodic trim; it ends when `stop` turns true.
pub fn spawn_heap_trimmer(
    in_flight: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TRIM_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; nothing to give back at start
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if in_flight.load(Ordering::Acquire) == 0 {
                // The walk takes every arena's lock in turn: keep it off the runtime's workers.
                let _ = tokio::task::spawn_blocking(release_free_heap).await;
            }
        }
    })
}

/// Return free heap pages to the OS (glibc only).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "FFI call to glibc's malloc_trim")]
pub fn release_free_heap() {
    // SAFETY: `malloc_trim` only walks the allocator's own free lists under its own locks; it
    // takes no pointers from us and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl, macOS) have no such call and do not keep pages the way glibc does.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_heap() {}
