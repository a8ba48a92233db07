//! The scope vocabulary of `[scopes]` and its implication closure.
//!
//! Scopes are compiled once, at config load, into [`ScopeSet`] bitsets so the
//! request path checks "does this password hold every scope the route needs"
//! with two integer operations and no allocation. A password's granted set is
//! the closure of what it was created with under `implies` (write ⇒ read), so a
//! route never has to know about implications.
//!
//! Pure: no I/O, no configuration parsing (that is `config.rs`).

use std::collections::BTreeMap;
use std::fmt;

/// At most this many scopes may be declared; one bit each in a [`ScopeSet`].
pub const MAX_SCOPES: usize = 128;

/// A set of scopes from one [`Scopes`] vocabulary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u128);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);

    /// True when every scope of `required` is in `self`.
    pub fn contains_all(self, required: ScopeSet) -> bool {
        self.0 & required.0 == required.0
    }

    /// The scopes of `self` that `held` lacks.
    pub fn missing_from(self, held: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !held.0)
    }

    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn with(self, index: usize) -> ScopeSet {
        ScopeSet(self.0 | (1u128 << index))
    }

    fn has(self, index: usize) -> bool {
        self.0 & (1u128 << index) != 0
    }
}

/// The declared vocabulary, in name order, with each scope's implication closure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scopes {
    names: Vec<String>,
    /// `closure[i]` = scope `i` plus everything it implies, transitively.
    closure: Vec<ScopeSet>,
    /// `descriptions[i]`: scope `i`'s `description`, shown on the self-service page.
    descriptions: Vec<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope \"{name}\" (known scopes: {known})")]
    Unknown { name: String, known: String },
    #[error("scope \"{scope}\" implies unknown scope \"{implied}\"")]
    UnknownImplied { scope: String, implied: String },
    #[error("too many scopes: {count} declared, at most {MAX_SCOPES} are supported")]
    TooMany { count: usize },
    #[error("scope name \"{name}\" is invalid: use 1-64 characters from a-z A-Z 0-9 : . _ -")]
    BadName { name: String },
}

impl Scopes {
    /// Builds the vocabulary from `name → implied names`.
    pub fn new(declared: &BTreeMap<String, Vec<String>>) -> Result<Scopes, ScopeError> {
        if declared.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany {
                count: declared.len(),
            });
        }
        let names: Vec<String> = declared.keys().cloned().collect();
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            return Err(ScopeError::BadName { name: bad.clone() });
        }
        let index_of = |n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).ok();
        let mut direct = vec![ScopeSet::EMPTY; names.len()];
        for (i, (name, implied)) in declared.iter().enumerate() {
            direct[i] = direct[i].with(i);
            for imp in implied {
                let j = index_of(imp).ok_or_else(|| ScopeError::UnknownImplied {
                    scope: name.clone(),
                    implied: imp.clone(),
                })?;
                direct[i] = direct[i].with(j);
            }
        }
        // Transitive closure by iteration to a fixed point (at most 128 rounds).
        let mut closure = direct;
        loop {
            let mut changed = false;
            for i in 0..closure.len() {
                let mut acc = closure[i];
                for (j, set) in closure.iter().enumerate() {
                    if acc.has(j) {
                        acc = acc.union(*set);
                    }
                }
                if acc != closure[i] {
                    closure[i] = acc;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let descriptions = vec![None; names.len()];
        Ok(Scopes {
            names,
            closure,
            descriptions,
        })
    }

    /// The set of exactly these scopes (no implications): what a route requires.
    pub fn required(&self, names: &[String]) -> Result<ScopeSet, ScopeError> {
        names
            .iter()
            .try_fold(ScopeSet::EMPTY, |acc, n| Ok(acc.with(self.index(n)?)))
    }

    /// The set these scopes grant: each with everything it implies.
    pub fn granted(&self, names: &[String]) -> Result<ScopeSet, ScopeError> {
        names.iter().try_fold(ScopeSet::EMPTY, |acc, n| {
            Ok(acc.union(self.closure[self.index(n)?]))
        })
    }

    /// Names of the scopes in `set`, in vocabulary order.
    pub fn names(&self, set: ScopeSet) -> impl Iterator<Item = &str> + '_ {
        self.names
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.has(*i))
            .map(|(_, n)| n.as_str())
    }

    /// `names(set)` joined by a single space, as sent in the scopes header.
    pub fn join(&self, set: ScopeSet) -> String {
        let mut out = String::new();
        for name in self.names(set) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(name);
        }
        out
    }

    /// Attaches each scope's `description` (names not declared are ignored).
    pub fn with_descriptions(mut self, mut descriptions: BTreeMap<String, String>) -> Scopes {
        for (name, slot) in self.names.iter().zip(self.descriptions.iter_mut()) {
            *slot = descriptions.remove(name);
        }
        self
    }

    /// Each declared scope with its description and the other scopes it grants.
    pub fn catalogue(&self) -> impl Iterator<Item = (&str, Option<&str>, Vec<&str>)> + '_ {
        self.names.iter().enumerate().map(|(i, name)| {
            let implied: Vec<&str> = self.names(self.closure[i]).filter(|n| n != name).collect();
            (name.as_str(), self.descriptions[i].as_deref(), implied)
        })
    }

    pub fn all_names(&self) -> &[String] {
        &self.names
    }

    fn index(&self, name: &str) -> Result<usize, ScopeError> {
        self.names
            .binary_search_by(|x| x.as_str().cmp(name))
            .map_err(|_| ScopeError::Unknown {
                name: name.to_owned(),
                known: self.names.join(", "),
            })
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names.join(", "))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Scopes {
        let mut m = BTreeMap::new();
        m.insert("repository:read".to_owned(), vec![]);
        m.insert(
            "repository:write".to_owned(),
            vec!["repository:read".to_owned()],
        );
        m.insert(
            "repository:admin".to_owned(),
            vec!["repository:write".to_owned()],
        );
        m.insert("account".to_owned(), vec![]);
        Scopes::new(&m).unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn implication_is_transitive() {
        let v = vocab();
        let granted = v.granted(&s(&["repository:admin"])).unwrap();
        assert_eq!(
            v.join(granted),
            "repository:admin repository:read repository:write"
        );
    }

    #[test]
    fn read_does_not_imply_write() {
        let v = vocab();
        let granted = v.granted(&s(&["repository:read"])).unwrap();
        let need = v.required(&s(&["repository:write"])).unwrap();
        assert!(!granted.contains_all(need));
        assert_eq!(v.join(need.missing_from(granted)), "repository:write");
    }

    #[test]
    fn write_satisfies_read_route() {
        let v = vocab();
        let granted = v.granted(&s(&["repository:write"])).unwrap();
        let need = v.required(&s(&["repository:read"])).unwrap();
        assert!(granted.contains_all(need));
    }

    #[test]
    fn unknown_scope_lists_known_ones() {
        let err = vocab().required(&s(&["repo:read"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown scope \"repo:read\" (known scopes: account, repository:admin, repository:read, repository:write)"
        );
    }

    #[test]
    fn unknown_implied_scope_is_an_error() {
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), vec!["b".to_owned()]);
        assert!(matches!(
            Scopes::new(&m),
            Err(ScopeError::UnknownImplied { .. })
        ));
    }

    #[test]
    fn cycles_terminate() {
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), vec!["b".to_owned()]);
        m.insert("b".to_owned(), vec!["a".to_owned()]);
        let v = Scopes::new(&m).unwrap();
        assert_eq!(v.join(v.granted(&s(&["a"])).unwrap()), "a b");
    }

    #[test]
    fn bad_names_and_too_many() {
        let mut m = BTreeMap::new();
        m.insert("has space".to_owned(), vec![]);
        assert!(matches!(Scopes::new(&m), Err(ScopeError::BadName { .. })));
        let m: BTreeMap<_, _> = (0..129).map(|i| (format!("s{i}"), vec![])).collect();
        assert!(matches!(Scopes::new(&m), Err(ScopeError::TooMany { .. })));
    }
}
