//! The model's shape: parameter names, shapes and where each lives in the flat fp32 buffers.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// One named parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Its name in the state dict, e.g. `layers.0.weight`.
    pub name: String,
    /// Its shape (empty for a 0-dim tensor).
    pub shape: Vec<usize>,
    /// Elements in it.
    pub numel: usize,
    /// Index of its first element in the flat buffers.
    pub offset: usize,
}

impl ParamInfo {
    /// The element range of this parameter in the flat buffers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel
    }
}

/// Every parameter of the model, in a canonical order (sorted by name), packed back to back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLayout {
    params: Vec<ParamInfo>,
    by_name: HashMap<String, usize>,
    total: usize,
}

impl ModelLayout {
    /// A layout from `(name, shape)` pairs in any order. Names must be unique.
    pub fn new(mut named_shapes: Vec<(String, Vec<usize>)>) -> Result<Self, String> {
        named_shapes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut params = Vec::with_capacity(named_shapes.len());
        let mut by_name = HashMap::with_capacity(named_shapes.len());
        let mut total = 0usize;
        for (name, shape) in named_shapes {
            let numel = shape
                .iter()
                .try_fold(1usize, |n, d| n.checked_mul(*d))
                .ok_or_else(|| format!("parameter {name} has too many elements"))?;
            if by_name.insert(name.clone(), params.len()).is_some() {
                return Err(format!("parameter {name} appears twice"));
            }
            params.push(ParamInfo {
                name,
                shape,
                numel,
                offset: total,
            });
            total = total
                .checked_add(numel)
                .ok_or("the model has too many elements")?;
        }
        Ok(Self {
            params,
            by_name,
            total,
        })
    }

    /// The parameters in canonical order.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Index of a parameter by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Total elements over all parameters (P).
    pub fn total_elements(&self) -> usize {
        self.total
    }

    /// Size of the fp32 master copy in MB, as `/status` and `/info` report it.
    pub fn size_mb(&self) -> f64 {
        (self.total as f64 * 4.0 / 1e6 * 100.0).round() / 100.0
    }

    /// A fingerprint of names and shapes: workers with the same model get the same hash.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for p in &self.params {
            hasher.update(p.name.as_bytes());
            hasher.update(format!(":{:?}\n", p.shape).as_bytes());
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_packed_in_name_order() {
        let layout = ModelLayout::new(vec![
            ("b".into(), vec![2, 3]),
            ("a".into(), vec![4]),
            ("c".into(), vec![]),
        ])
        .unwrap();
        let names: Vec<_> = layout.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(layout.params()[1].range(), 4..10);
        assert_eq!(
            layout.params()[2].numel,
            1,
            "a 0-dim tensor holds one element"
        );
        assert_eq!(layout.total_elements(), 11);
        assert_eq!(layout.index_of("c"), Some(2));
    }

    #[test]
    fn duplicate_names_are_refused() {
        assert!(ModelLayout::new(vec![("a".into(), vec![1]), ("a".into(), vec![2])]).is_err());
    }

    #[test]
    fn hash_depends_on_names_and_shapes_only() {
        let a = ModelLayout::new(vec![("x".into(), vec![2]), ("y".into(), vec![3])]).unwrap();
        let b = ModelLayout::new(vec![("y".into(), vec![3]), ("x".into(), vec![2])]).unwrap();
        let c = ModelLayout::new(vec![("x".into(), vec![3]), ("y".into(), vec![2])]).unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }
}
