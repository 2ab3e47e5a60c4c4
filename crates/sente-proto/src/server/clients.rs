//! The clients of one uid on one transport, by client id.

use crate::event::ClientId;

/// Up to this many clients are kept in a list; past it, in a hash map.
const SMALL: usize = 8;

/// The hash map of the registry: foldhash (randomly seeded, so keys chosen by clients cannot be
/// aimed at one bucket) is several times faster than SipHash for the short uid and client-id
/// keys that every push and event looks up.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A map from client id to `E`, sized for the common case: a named uid has one client or a
/// few (tabs, devices), and a hash table's smallest allocation holds four entries, while a list
/// holds exactly what it has. Past [`SMALL`] clients (the shared anonymous uid), a hash map.
#[derive(Debug)]
pub(super) enum ClientMap<E> {
    Small(Vec<(ClientId, E)>),
    Large(HashMap<ClientId, E>),
}

impl<E> Default for ClientMap<E> {
    fn default() -> Self {
        ClientMap::Small(Vec::new())
    }
}

impl<E> ClientMap<E> {
    pub(super) fn len(&self) -> usize {
        match self {
            ClientMap::Small(v) => v.len(),
            ClientMap::Large(m) => m.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn contains_key(&self, cid: &ClientId) -> bool {
        self.get(cid).is_some()
    }

    pub(super) fn get(&self, cid: &ClientId) -> Option<&E> {
        match self {
            ClientMap::Small(v) => v.iter().find(|(k, _)| k == cid).map(|(_, e)| e),
            ClientMap::Large(m) => m.get(cid),
        }
    }

    pub(super) fn get_mut(&mut self, cid: &ClientId) -> Option<&mut E> {
        match self {
            ClientMap::Small(v) => v.iter_mut().find(|(k, _)| k == cid).map(|(_, e)| e),
            ClientMap::Large(m) => m.get_mut(cid),
        }
    }

    /// Inserts or replaces; returns the replaced entry.
    pub(super) fn insert(&mut self, cid: ClientId, e: E) -> Option<E> {
        if let Some(old) = self.get_mut(&cid) {
            return Some(std::mem::replace(old, e));
        }
        match self {
            ClientMap::Small(v) if v.len() < SMALL => {
                // Grow by one: a list of one client holds one entry.
                v.reserve_exact(1);
                v.push((cid, e));
            }
            ClientMap::Small(v) => {
                let mut m: HashMap<ClientId, E> = std::mem::take(v).into_iter().collect();
                m.insert(cid, e);
                *self = ClientMap::Large(m);
            }
            ClientMap::Large(m) => {
                m.insert(cid, e);
            }
        }
        None
    }

    /// The entry of `cid`, inserted with `f` when missing.
    pub(super) fn get_or_insert_with(&mut self, cid: &ClientId, f: impl FnOnce() -> E) -> &mut E {
        if !self.contains_key(cid) {
            self.insert(cid.clone(), f());
        }
        self.get_mut(cid)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    pub(super) fn remove(&mut self, cid: &ClientId) -> Option<E> {
        match self {
            ClientMap::Small(v) => {
                let i = v.iter().position(|(k, _)| k == cid)?;
                Some(v.swap_remove(i).1)
            }
            ClientMap::Large(m) => m.remove(cid),
        }
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &E> {
        let (small, large) = match self {
            ClientMap::Small(v) => (Some(v.iter().map(|(_, e)| e)), None),
            ClientMap::Large(m) => (None, Some(m.values())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&ClientId, &E)> {
        let (small, large) = match self {
            ClientMap::Small(v) => (Some(v.iter().map(|(k, e)| (k, e))), None),
            ClientMap::Large(m) => (None, Some(m.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&ClientId, &mut E)> {
        let (small, large) = match self {
            ClientMap::Small(v) => (Some(v.iter_mut().map(|(k, e)| (&*k, e))), None),
            ClientMap::Large(m) => (None, Some(m.iter_mut())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: usize) -> ClientId {
        ClientId::new(format!("c{i}")).unwrap()
    }

    #[test]
    fn behaves_like_a_map_across_the_switch_to_a_hash_map() {
        let mut m = ClientMap::default();
        for i in 0..20 {
            assert_eq!(m.insert(cid(i), i), None);
            assert_eq!(m.len(), i + 1);
            assert_eq!(m.insert(cid(i), i * 10), Some(i));
            assert!(matches!(m, ClientMap::Small(_)) == (i < SMALL));
        }
        assert_eq!(m.get(&cid(3)), Some(&30));
        *m.get_or_insert_with(&cid(30), || 7) += 1;
        assert_eq!(m.get(&cid(30)), Some(&8));
        assert_eq!(m.remove(&cid(30)), Some(8));
        assert_eq!(m.remove(&cid(30)), None);
        let mut sum: usize = m.values().sum();
        assert_eq!(sum, (0..20).map(|i| i * 10).sum());
        for (_, v) in m.iter_mut() {
            *v += 1;
        }
        sum = m.values().sum();
        assert_eq!(sum, (0..20).map(|i| i * 10 + 1).sum());
        let mut small = ClientMap::default();
        small.insert(cid(1), 1);
        small.insert(cid(2), 2);
        assert_eq!(small.remove(&cid(1)), Some(1));
        assert!(small.contains_key(&cid(2)) && !small.contains_key(&cid(1)));
        assert_eq!(small.get_or_insert_with(&cid(2), || 9), &mut 2);
    }
}
