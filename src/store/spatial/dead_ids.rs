//! Ids of tokens gone from a space outright, as a bit set of shared pages.
//!
//! Why: a token deleted or expired left eight exact-key tombstones (one per space), each a
//! hash of 20 bytes inserted into a growing set, and every rebuild after a mass delete looked
//! each entry up again: in the 1M expiry those inserts and lookups were about 40 % of the
//! server's CPU. A gone id is one bit here, and a lookup one binary search among the pages
//! and a bit test. A bit kills every copy of its id stored in the space's trees and batches
//! (the forest keeps copies of such ids created again out of them: `Forest::reborn`).
//!
//! Queries and builds hold the set they started with, so pages are shared: a write copies a
//! page (4 KiB) only while someone else holds it, and the page list only while it is shared.
//!
//! Ids allocated by the server are dense in their (domain, entity_type) pair, so a page holds
//! thousands of them; explicit ids may be scattered over the whole u32 range, one per page.
//! So a new page is only made while the pages average at least `MIN_IDS_PER_PAGE` ids (16
//! bytes an id at worst); otherwise the caller keeps an exact tombstone instead.

use std::sync::Arc;

/// Ids per page (bits of a page).
const PAGE_IDS: u32 = 1 << 15;
/// Words of a page.
const PAGE_WORDS: usize = PAGE_IDS as usize / 64;
/// Pages made whatever they hold.
const FREE_PAGES: usize = 16;
/// Ids the pages must average for another to be made beyond `FREE_PAGES`.
const MIN_IDS_PER_PAGE: usize = 256;

/// One page of bits, for the ids `number * PAGE_IDS ..`.
type Page = [u64; PAGE_WORDS];

/// The page number, word and bit of `id`.
#[inline]
fn place(id: u32) -> (u32, usize, u64) {
    (id / PAGE_IDS, (id % PAGE_IDS) as usize / 64, 1 << (id % 64))
}

/// A set of ids; cheap to clone (the pages are shared).
#[derive(Clone, Default)]
pub struct DeadIds {
    /// Pages that hold at least one id, by page number.
    pages: Arc<Vec<(u32, Arc<Page>)>>,
    len: usize,
}

impl DeadIds {
    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where page `number` is in the list, or where it would go.
    fn find(&self, number: u32) -> Result<usize, usize> {
        self.pages.binary_search_by_key(&number, |(n, _)| *n)
    }

    /// Whether it holds `id`.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        if self.len == 0 {
            return false;
        }
        let (number, word, bit) = place(id);
        match self.find(number) {
            Ok(at) => self.pages[at].1[word] & bit != 0,
            Err(_) => false,
        }
    }

    /// Whether adding `id` would keep the memory bound (module docs): `id`'s page exists, or
    /// the pages are few or full enough for one more (tests ask; `insert_if_room` decides).
    #[cfg(test)]
    pub fn has_room_for(&self, id: u32) -> bool {
        self.room_for_a_page() || self.find(place(id).0).is_ok()
    }

    /// Whether the pages are few or full enough for one more.
    fn room_for_a_page(&self) -> bool {
        let pages = self.pages.len();
        pages < FREE_PAGES || pages * MIN_IDS_PER_PAGE <= self.len
    }

    /// Adds `id` whatever the bound; whether it was new.
    #[cfg(test)]
    pub fn insert(&mut self, id: u32) -> bool {
        self.add(id, false).expect("room is not asked for")
    }

    /// Adds `id` if that keeps the memory bound: whether it was new, `None` when there was
    /// no room for the page it needs.
    pub fn insert_if_room(&mut self, id: u32) -> Option<bool> {
        self.add(id, true)
    }

    /// Adds `id`, unless `bounded` and a page it needs would break the memory bound (`None`).
    fn add(&mut self, id: u32, bounded: bool) -> Option<bool> {
        let (number, word, bit) = place(id);
        let at = match self.find(number) {
            Ok(at) => {
                if self.pages[at].1[word] & bit != 0 {
                    return Some(false);
                }
                at
            }
            Err(_) if bounded && !self.room_for_a_page() => return None,
            Err(at) => {
                Arc::make_mut(&mut self.pages).insert(at, (number, Arc::new([0; PAGE_WORDS])));
                at
            }
        };
        let page = &mut Arc::make_mut(&mut self.pages)[at].1;
        Arc::make_mut(page)[word] |= bit;
        self.len += 1;
        Some(true)
    }

    /// Removes every id `other` holds (an earlier copy of this set): a page still shared with
    /// it goes whole, with no bit to look at; one written since loses `other`'s bits.
    pub fn remove_all_of(&mut self, other: &DeadIds) {
        if other.is_empty() || self.is_empty() {
            return;
        }
        let pages = Arc::make_mut(&mut self.pages);
        let mut removed = 0;
        for (number, theirs) in other.pages.iter() {
            let Ok(at) = pages.binary_search_by_key(number, |(n, _)| *n) else {
                continue;
            };
            let ours = &mut pages[at].1;
            if Arc::ptr_eq(ours, theirs) {
                removed += count(ours);
                *ours = Arc::new([0; PAGE_WORDS]);
                continue;
            }
            let ours = Arc::make_mut(ours);
            for (mine, gone) in ours.iter_mut().zip(theirs.iter()) {
                removed += (*mine & gone).count_ones() as usize;
                *mine &= !gone;
            }
        }
        pages.retain(|(_, page)| count(page) > 0);
        self.len -= removed;
    }
}

/// Ids a page holds.
fn count(page: &Page) -> usize {
    page.iter().map(|w| w.count_ones() as usize).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_far_apart_and_close_together_are_held_and_shared_copies_never_change() {
        let mut ids = DeadIds::default();
        let wanted = [0, 1, 63, 64, PAGE_IDS - 1, PAGE_IDS, 5 << 24, u32::MAX];
        for id in wanted {
            assert!(ids.insert(id));
        }
        assert!(!ids.insert(64), "already held");
        let held = ids.clone();
        assert!(ids.insert(7));
        assert_eq!((ids.len, held.len), (9, 8));
        assert!(wanted
            .iter()
            .all(|&id| ids.contains(id) && held.contains(id)));
        assert!(ids.contains(7) && !held.contains(7));
        assert!(![2, 65, PAGE_IDS + 1, (5 << 24) + 1, u32::MAX - 1]
            .iter()
            .any(|&id| ids.contains(id)));
    }

    #[test]
    fn scattered_ids_get_no_page_each_beyond_the_free_ones() {
        let mut ids = DeadIds::default();
        let scattered = |i: u32| i * PAGE_IDS * 3;
        for i in 0..FREE_PAGES as u32 {
            assert!(ids.has_room_for(scattered(i)));
            ids.insert(scattered(i));
        }
        assert!(!ids.has_room_for(scattered(100)), "a page for one id");
        assert!(ids.has_room_for(scattered(5) + 1), "its page exists");
        // Dense ids in the existing pages make room for more pages.
        for id in 0..(FREE_PAGES * MIN_IDS_PER_PAGE) as u32 {
            ids.insert(id);
        }
        assert!(ids.has_room_for(scattered(100)));
    }

    #[test]
    fn removing_an_earlier_copy_keeps_what_came_after_it() {
        let mut ids = DeadIds::default();
        for id in 0..1_000 {
            ids.insert(id * 97);
        }
        let copy = ids.clone();
        // Since the copy: a page it shares gains an id, and a page of its own comes.
        ids.insert(3);
        ids.insert(10 * PAGE_IDS + 5);
        ids.remove_all_of(&copy);
        assert_eq!(ids.len, 2);
        assert!(ids.contains(3) && ids.contains(10 * PAGE_IDS + 5));
        assert!(!(0..1_000).any(|id| ids.contains(id * 97)));
        assert_eq!(ids.pages.len(), 2, "emptied pages are dropped");
        assert_eq!(copy.len, 1_000);
        assert!(copy.contains(97) && !copy.contains(3));
    }
}
