//! A tiny priority queue, written for the chunker tests.
//!
//! Non-ASCII on purpose: «tas binaire», ヒープ.

#![allow(dead_code)]

use core::mem::{swap, ManuallyDrop};
use std::fmt;

/// Largest number of items a [`Heap`] keeps.
pub const MAX_ITEMS: usize = 1 << 16;

static GREETING: &str = "héllo";

/// Items are compared with this.
pub type Priority = u32;

/// A max-heap.
///
/// Pushing is *O*(log n).
#[derive(Debug, Clone)]
pub struct Heap<T: Ord> {
    data: Vec<T>,
}

/** How an item left the heap. */
pub enum Removal {
    Popped,
    Drained(usize),
}

#[repr(C)]
pub union Bits {
    int: u32,
    float: f32,
}

/// Something that can be heaped.
pub trait Heapable: Ord {
    /// Weight of the item.
    fn weight(&self) -> Priority;

    /// Heavier than the other?
    fn heavier(&self, other: &Self) -> bool {
        self.weight() > other.weight()
    }

    const ZERO: Priority;
    type Key;
}

impl<T> Heap<T>
where
    T: Ord + Clone,
{
    /// Creates an empty heap.
    pub fn new() -> Self {
        Heap { data: Vec::new() }
    }

    /// Pushes an item.
    pub fn push(&mut self, item: T) {
        let old_len = self.data.len();
        self.data.push(item);
        // SAFETY: old_len < len.
        unsafe { self.sift_up(0, old_len) };
    }

    unsafe fn sift_up(&mut self, start: usize, pos: usize) -> usize {
        fn parent_of(pos: usize) -> usize {
            (pos - 1) / 2
        }
        let mut pos = pos;
        while pos > start {
            let parent = parent_of(pos);
            if self.data[pos] <= self.data[parent] {
                break;
            }
            self.data.swap(pos, parent);
            pos = parent;
        }
        pos
    }

    pub(crate) const CAPACITY: usize = MAX_ITEMS;
}

#[doc = "Prints the heap."]
impl<T: Ord + fmt::Debug> fmt::Display for Heap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.data)
    }
}

/// Makes a heap from a list of items.
#[macro_export]
macro_rules! heap {
    ($($x:expr),* $(,)?) => {{
        let mut h = $crate::Heap::new();
        $( h.push($x); )*
        h
    }};
}

thread_local! {
    static COUNTER: core::cell::Cell<u32> = core::cell::Cell::new(0);
}

pub mod iter {
    //! Iterators over a heap.

    use super::Heap;

    /// Draining iterator.
    pub struct Drain<'a, T: Ord> {
        heap: &'a mut Heap<T>,
    }

    pub mod sorted {
        pub fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
            items.sort();
            items
        }
    }
}

extern "C" {
    fn abort() -> !;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_then_pop() {
        let mut heap = Heap::new();
        heap.push(3);
        assert_eq!(heap.data.len(), 1);
    }
}
