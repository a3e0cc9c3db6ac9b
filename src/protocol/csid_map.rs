//! Per-chunk-stream state keyed by csid: a vector sorted by csid. Encoders use a handful of
//! chunk streams (2 to 8), so a lookup is two or three comparisons, where hashing the csid
//! with the default (DoS-resistant) hasher cost more than the rest of a chunk header's work.
//! A peer that opens many chunk streams is held to the decoder's cap, and a lookup stays
//! logarithmic in it whatever csids it picks.

#[derive(Debug)]
pub(super) struct CsidMap<T> {
    entries: Vec<(u32, T)>,
}

impl<T> Default for CsidMap<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> CsidMap<T> {
    fn find(&self, csid: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&csid, |(c, _)| *c)
    }

    pub(super) fn get(&self, csid: u32) -> Option<&T> {
        self.find(csid).ok().map(|i| &self.entries[i].1)
    }

    pub(super) fn get_mut(&mut self, csid: u32) -> Option<&mut T> {
        self.find(csid).ok().map(|i| &mut self.entries[i].1)
    }

    /// The csid's entry, made with `make` when there is none.
    pub(super) fn get_or_insert_with(&mut self, csid: u32, make: impl FnOnce() -> T) -> &mut T {
        let i = match self.find(csid) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (csid, make()));
                i
            }
        };
        &mut self.entries[i].1
    }

    pub(super) fn insert(&mut self, csid: u32, value: T) {
        match self.find(csid) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (csid, value)),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_entry_per_csid_in_any_insertion_order() {
        let mut m = CsidMap::default();
        for c in [7u32, 3, 65_599, 2, 64, 3] {
            *m.get_or_insert_with(c, || 0) += 1;
        }
        m.insert(64, 10);
        m.insert(5, 20);
        assert_eq!(m.len(), 6);
        let got: Vec<(u32, u32)> = [2, 3, 5, 7, 64, 65_599, 4]
            .iter()
            .filter_map(|&c| m.get(c).map(|v| (c, *v)))
            .collect();
        assert_eq!(
            got,
            [(2, 1), (3, 2), (5, 20), (7, 1), (64, 10), (65_599, 1)]
        );
        *m.get_mut(7).unwrap() = 9;
        assert_eq!(m.get(7), Some(&9));
        assert!(m.get_mut(4).is_none());
        m.clear();
        assert_eq!(m.len(), 0);
    }
}
