//! The allocator of the cartflow binary and of the benchmarks that stand for it: mimalloc. Install
//! it with `#[global_allocator] static A: cartflow_jobs::Allocator = cartflow_jobs::Allocator;`.
//!
//! glibc's malloc hands large freed blocks back to the OS at once and page-faults them in again:
//! the insight queries allocate and free big buffers, and the kernel's page clearing and faults
//! were ~9% of `daily_visitors`' profile. mimalloc keeps freed memory for a second (its
//! `purge_delay`) before returning it, so back-to-back queries reuse it and an idle process still
//! gives it back.

pub use mimalloc::MiMalloc as Allocator;
