//! A small list for the effects of one critical section (like tokio's `WakeList`): they
//! are almost always none, one or two, so the first `N` are kept inline and collecting
//! them allocates nothing; more spill into a `Vec`.

pub(super) struct InlineList<T, const N: usize> {
    inline: [Option<T>; N],
    len: usize,
    spill: Vec<T>,
}

impl<T, const N: usize> InlineList<T, N> {
    pub(super) fn new() -> Self {
        InlineList {
            inline: [const { None }; N],
            len: 0,
            spill: Vec::new(),
        }
    }

    /// Appends `item`; iteration yields items in push order.
    pub(super) fn push(&mut self, item: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(item);
                self.len += 1;
            }
            None => self.spill.push(item),
        }
    }

    /// Take every item out, in push order, without moving the list itself.
    pub(super) fn drain(&mut self, mut f: impl FnMut(T)) {
        if self.len == 0 {
            return;
        }
        for slot in &mut self.inline[..self.len] {
            if let Some(item) = slot.take() {
                f(item);
            }
        }
        self.len = 0;
        for item in self.spill.drain(..) {
            f(item);
        }
    }
}

impl<T, const N: usize> IntoIterator for InlineList<T, N> {
    type Item = T;
    type IntoIter = std::iter::Chain<
        std::iter::Flatten<std::array::IntoIter<Option<T>, N>>,
        std::vec::IntoIter<T>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.inline.into_iter().flatten().chain(self.spill)
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use super::InlineList;

    #[test]
    fn keeps_push_order_across_the_spill() {
        let mut list: InlineList<u32, 2> = InlineList::new();
        assert_eq!(list_items(InlineList::<u32, 2>::new()), Vec::<u32>::new());
        for i in 0..5 {
            list.push(i);
        }
        assert_eq!(list_items(list), vec![0, 1, 2, 3, 4]);
    }

    fn list_items(list: InlineList<u32, 2>) -> Vec<u32> {
        list.into_iter().collect()
    }

    #[test]
    fn drain_empties_it_in_push_order() {
        let mut list: InlineList<u32, 2> = InlineList::new();
        for i in 0..4 {
            list.push(i);
        }
        let mut seen = Vec::new();
        list.drain(|i| seen.push(i));
        assert_eq!(seen, vec![0, 1, 2, 3]);
        list.push(7);
        assert_eq!(list_items(list), vec![7]);
    }
}
