//! An output that parallel tasks write each in its own part, where the parts are not the
//! contiguous chunks `par_chunks_mut` hands out: blocks of a matrix (the products' blocks on
//! BLAS, the embedding gradient's column stripes).

use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// `values`, shared by tasks that write disjoint parts of it.
pub(crate) struct DisjointOutput<'a, E> {
    first: *mut MaybeUninit<E>,
    len: usize,
    _values: PhantomData<&'a mut [MaybeUninit<E>]>,
}

// SAFETY: the tasks that share it write disjoint parts (the contract of `part` and of every use
// of `first`), so no element is touched by two threads; the borrow keeps the values alive.
unsafe impl<E: Send> Send for DisjointOutput<'_, E> {}
unsafe impl<E: Send> Sync for DisjointOutput<'_, E> {}

impl<'a, E> DisjointOutput<'a, E> {
    pub(crate) fn new(values: &'a mut [MaybeUninit<E>]) -> Self {
        Self {
            first: values.as_mut_ptr(),
            len: values.len(),
            _values: PhantomData,
        }
    }

    /// The first element, for a call that writes one part through a pointer (cblas).
    pub(crate) fn first(&self) -> *mut MaybeUninit<E> {
        self.first
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// No other task touches these elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, start: usize, len: usize) -> &mut [MaybeUninit<E>] {
        assert!(start + len <= self.len, "a part past the output");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.first.add(start), len) }
    }
}
