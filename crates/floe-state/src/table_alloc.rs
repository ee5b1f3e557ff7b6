//! Memory for the heap backend's key-group tables.
//!
//! Keyed state on the heap is one hash table per key group and state, and a
//! record touches one random slot of it. With millions of keys the tables
//! span hundreds of megabytes, so on 4 KiB pages nearly every state access
//! misses the TLB as well as the cache. Tables of [`HUGE_PAGE`] or more are
//! therefore allocated 2 MiB-aligned and marked `MADV_HUGEPAGE`: with
//! transparent huge pages in the kernel's default `madvise` mode, one TLB
//! entry then covers 512 times as much state (measured in BENCHMARKS.md).
//! Smaller tables, other kernels and other systems get plain allocations,
//! and so do all tables of a backend configured without huge pages.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// The size of a transparent huge page on x86-64 and arm64 (4 KiB base
/// pages); tables at least this large are huge-page backed.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// The allocator of the heap backend's key-group tables (see the module
/// documentation). Each table carries its backend's setting (one byte), so
/// jobs in one process can differ (`state.backend.heap.huge-pages`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateTableAlloc {
    /// Whether large tables are advised for huge pages.
    huge_pages: bool,
}
impl StateTableAlloc {
    /// An allocator that advises large tables for huge pages if
    /// `huge_pages`.
    pub(crate) fn new(huge_pages: bool) -> Self {
        StateTableAlloc { huge_pages }
    }

    /// Whether it advises large tables for huge pages.
    #[cfg(test)]
    pub(crate) fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// The layout actually requested from the global allocator: huge-page
    /// aligned when large, so the whole table can be huge pages (an
    /// unaligned range loses up to one huge page at each end).
    #[inline]
    fn backing(layout: Layout) -> Layout {
        if layout.size() >= HUGE_PAGE {
            // Cannot fail: the alignment is a power of two no smaller than
            // the original one, and the size was already valid for it.
            Layout::from_size_align(layout.size(), HUGE_PAGE.max(layout.align())).unwrap_or(layout)
        } else {
            layout
        }
    }
}

// SAFETY: every block comes from `Global` with `backing(layout)` and goes
// back to it with the same layout (`backing` is a pure function of the
// layout the caller must pass to both); `madvise` only changes how the
// kernel backs the pages, never their contents or validity.
unsafe impl Allocator for StateTableAlloc {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let backing = Self::backing(layout);
        let block = Global.allocate(backing)?;
        if backing.size() >= HUGE_PAGE && self.huge_pages {
            advise_huge_pages(block.cast::<u8>(), backing.size());
        }
        Ok(block)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: allocated by `allocate` above with this `backing` layout.
        unsafe { Global.deallocate(ptr, Self::backing(layout)) }
    }
}

/// Asks the kernel to back `[ptr, ptr + len)` with transparent huge pages.
/// Best effort: a kernel without them refuses, and the table works the same.
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: NonNull<u8>, len: usize) {
    // madvise wants a page-aligned start; the block is huge-page aligned.
    // SAFETY: the range is one live allocation owned by the caller;
    // MADV_HUGEPAGE does not change its contents.
    let rc = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::trace!(
            "madvise(MADV_HUGEPAGE) refused for a {len}-byte state table: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: NonNull<u8>, _len: usize) {}

/// One key group's entries of one state on the heap: a hash table in
/// huge-page backed memory once it is large, hashed with FxHash (keys
/// arrive already spread over key groups by murmur3, and FxHash is the
/// cheapest hash that keeps probing short). Shared by the heap store and
/// the query views it publishes.
pub(crate) type GroupMap<K, S> =
    hashbrown::HashMap<K, S, rustc_hash::FxBuildHasher, StateTableAlloc>;

/// An empty group map allocating with `alloc`.
pub(crate) fn group_map<K, S>(alloc: StateTableAlloc) -> GroupMap<K, S> {
    GroupMap::with_hasher_in(rustc_hash::FxBuildHasher, alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_are_huge_page_aligned_and_small_ones_untouched() {
        let small = Layout::from_size_align(4096, 8).unwrap();
        assert_eq!(StateTableAlloc::backing(small), small);
        let large = Layout::from_size_align(HUGE_PAGE * 3 + 64, 16).unwrap();
        let backing = StateTableAlloc::backing(large);
        assert_eq!((backing.size(), backing.align()), (large.size(), HUGE_PAGE));

        let alloc = StateTableAlloc::new(true);
        let block = alloc.allocate(large).unwrap();
        let ptr = block.cast::<u8>();
        assert_eq!(ptr.as_ptr() as usize % HUGE_PAGE, 0);
        // The memory is ordinary, writable memory.
        unsafe {
            ptr.as_ptr().write_bytes(0xab, large.size());
            assert_eq!(*ptr.as_ptr().add(large.size() - 1), 0xab);
            alloc.deallocate(ptr, large);
        }
    }

    /// Whether the mapping holding `addr` is advised for huge pages: the
    /// `hg` flag in its `VmFlags` line of /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn advised(addr: usize) -> bool {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_block = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                in_block = lo <= addr && addr < hi;
                continue;
            }
            if in_block && line.starts_with("VmFlags:") {
                return line.split_whitespace().any(|f| f == "hg");
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    /// Large tables are advised, and `state.backend.heap.huge-pages: false`
    /// stops that for its backend's tables only.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_tables_are_advised_for_huge_pages_unless_switched_off() {
        // A kernel built without transparent huge pages has nothing to
        // advise.
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            return;
        }
        let large = Layout::from_size_align(HUGE_PAGE * 4, 8).unwrap();
        let (with, without) = (StateTableAlloc::new(true), StateTableAlloc::new(false));
        let on = with.allocate(large).unwrap().cast::<u8>();
        let off = without.allocate(large).unwrap().cast::<u8>();
        // One allocated after the other, the first still advised.
        let on_again = with.allocate(large).unwrap().cast::<u8>();
        let (on_advised, off_advised, on_again_advised) = (
            advised(on.as_ptr() as usize),
            advised(off.as_ptr() as usize),
            advised(on_again.as_ptr() as usize),
        );
        unsafe {
            with.deallocate(on, large);
            without.deallocate(off, large);
            with.deallocate(on_again, large);
        }
        assert!(on_advised, "a large table is advised for huge pages");
        assert!(!off_advised, "switched off, it is not");
        assert!(
            on_again_advised,
            "another allocator's setting changes nothing"
        );
    }
}
