//! One shared copy of each label value the usage data repeats.
//!
//! Usage reports repeat the same few strings over and over: the 100 accounts of an organization
//! use most of its 500 images, so their 12-digit IDs appear in every report, the resource types
//! are a handful (`ec2:Instance`, `ec2:LaunchTemplate`, ...), and the report ID is repeated on
//! every entry of its report. As owned `String`s, every series kept two heap strings of its own
//! (some 150 bytes per series with their allocations) and every entry read three. Interned,
//! a series holds two shared pointers, and the strings exist once per poller.
//!
//! Strings are only ever added while entries are read; `forget_unused` drops those that no
//! cached report (nor anything else) holds any more, once per poll, so that accounts and reports
//! that are gone do not stay in memory for the life of the process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A set of shared strings: `intern` returns the copy already held for an equal string, or
/// adds one.
#[derive(Debug, Default)]
pub struct Interner {
    strings: Mutex<HashSet<Arc<str>>>,
}

/// The interner, locked: for interning many strings (a page of entries) with one lock.
/// Not to be held across an `.await`.
pub struct Locked<'a> {
    strings: MutexGuard<'a, HashSet<Arc<str>>>,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the interner for a run of `Locked::intern` calls.
    pub fn lock(&self) -> Locked<'_> {
        // The set is never left half-changed by a panic (one insert at a time), so a poisoned
        // lock is still a usable set.
        Locked { strings: self.strings.lock().unwrap_or_else(PoisonError::into_inner) }
    }

    /// The shared copy of `s`.
    #[cfg(test)]
    pub fn intern(&self, s: &str) -> Arc<str> {
        self.lock().intern(s)
    }

    /// Drops the strings that nobody but the interner holds any more.
    pub fn forget_unused(&self) {
        self.lock().strings.retain(|s| Arc::strong_count(s) > 1);
    }

    /// How many strings are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().strings.len()
    }
}

impl Locked<'_> {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let interner = Interner::new();
        let a = interner.intern("111122223333");
        let b = interner.intern(&String::from("111122223333"));
        assert!(Arc::ptr_eq(&a, &b));
        let mut locked = interner.lock();
        let c = locked.intern("111122223333");
        let d = locked.intern("ec2:Instance");
        drop(locked);
        assert!(Arc::ptr_eq(&a, &c));
        assert_eq!(&*d, "ec2:Instance");
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn strings_nobody_holds_are_forgotten() {
        let interner = Interner::new();
        let kept = interner.intern("kept");
        drop(interner.intern("dropped"));
        interner.forget_unused();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(&kept, &interner.intern("kept")));
        drop(kept);
        interner.forget_unused();
        assert_eq!(interner.len(), 0);
    }
}
