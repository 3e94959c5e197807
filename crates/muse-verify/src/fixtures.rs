//! Golden fixtures: `.npy` arrays from the independent Python oracle (`fixtures/<family>/gen.py`),
//! listed with shapes and sha256 in `fixtures/manifest.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array, Dimension};
use ndarray_npy::{ReadNpyExt, ReadableElement};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The parsed `fixtures/manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The folder holding `manifest.json`; fixture paths are relative to it.
    #[serde(skip)]
    pub root: PathBuf,
    /// Every fixture case.
    pub cases: Vec<FixtureCase>,
}

/// One fixture case.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureCase {
    /// Kernel family, e.g. `bk_core`.
    pub family: String,
    /// Case name, e.g. `hopping`.
    pub name: String,
    /// What the case exercises.
    #[serde(default)]
    pub description: String,
    /// Batch size B (BK-Core cases; 0 where the family does not use it).
    #[serde(default)]
    pub batch: usize,
    /// Sequence length N (BK-Core cases; 0 where the family does not use it).
    #[serde(default)]
    pub n: usize,
    /// The shift z as `[re, im]` (BK-Core cases).
    #[serde(default)]
    pub z: [f64; 2],
    /// Family-specific scalar parameters (curvature, mask, compat form, …).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Arrays by stem (`a`, `g_re`, `grad_a`, …).
    pub files: BTreeMap<String, FixtureFile>,
}

/// One array file of a fixture case.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureFile {
    /// Path relative to the manifest's folder.
    pub path: String,
    /// Array shape.
    pub shape: Vec<usize>,
    /// numpy dtype name.
    pub dtype: String,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

impl Manifest {
    /// Loads `<root>/manifest.json`.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let mut m: Manifest =
            serde_json::from_str(&text).map_err(|source| Error::Json { path, source })?;
        m.root = root.to_path_buf();
        Ok(m)
    }

    /// Finds the fixture folder: `$MUSE_FIXTURES`, else `fixtures/` in the current directory or
    /// one of its ancestors.
    pub fn discover() -> Result<Self> {
        if let Ok(dir) = std::env::var("MUSE_FIXTURES") {
            return Self::load(Path::new(&dir));
        }
        let cwd = std::env::current_dir().map_err(|source| Error::Io {
            path: ".".into(),
            source,
        })?;
        let root = cwd
            .ancestors()
            .map(|d| d.join("fixtures"))
            .find(|d| d.join("manifest.json").is_file())
            .ok_or_else(|| Error::Fixture {
                case: "*".into(),
                message: format!(
                    "no fixtures/manifest.json in {} or its parents; run from the repository or set MUSE_FIXTURES",
                    cwd.display()
                ),
            })?;
        Self::load(&root)
    }

    /// The cases of one family.
    pub fn family<'m>(&'m self, family: &'m str) -> impl Iterator<Item = &'m FixtureCase> + 'm {
        self.cases.iter().filter(move |c| c.family == family)
    }

    /// The case called `name`.
    pub fn case(&self, name: &str) -> Result<&FixtureCase> {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::Fixture {
                case: name.into(),
                message: "not in the manifest".into(),
            })
    }

    /// Loads float64 array `stem` of `case`, after checking its sha256 and shape against the
    /// manifest.
    pub fn array<D: Dimension>(&self, case: &FixtureCase, stem: &str) -> Result<Array<f64, D>> {
        self.array_of::<f64, D>(case, stem)
    }

    /// Loads array `stem` of `case` with element type `T` (the codes of the quantised families:
    /// `u8`, `i8`, `u16`, `i64`), after checking its sha256 and shape against the manifest.
    pub fn array_of<T: ReadableElement, D: Dimension>(
        &self,
        case: &FixtureCase,
        stem: &str,
    ) -> Result<Array<T, D>> {
        let fail = |message: String| Error::Fixture {
            case: case.name.clone(),
            message,
        };
        let entry = case
            .files
            .get(stem)
            .ok_or_else(|| fail(format!("has no array `{stem}`")))?;
        let path = self.root.join(&entry.path);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let digest = hex(&Sha256::digest(&bytes));
        if digest != entry.sha256 {
            return Err(fail(format!(
                "{}: sha256 {digest} differs from the manifest's {}",
                path.display(),
                entry.sha256
            )));
        }
        let arr = Array::<T, D>::read_npy(bytes.as_slice()).map_err(|source| Error::Npy {
            path: path.clone(),
            source,
        })?;
        if arr.shape() != entry.shape.as_slice() {
            return Err(fail(format!(
                "{}: shape {:?} differs from the manifest's {:?}",
                path.display(),
                arr.shape(),
                entry.shape
            )));
        }
        Ok(arr)
    }
}

impl FixtureCase {
    /// Whether the case has array `stem`.
    pub fn has(&self, stem: &str) -> bool {
        self.files.contains_key(stem)
    }

    /// Numeric parameter `key` of `params`.
    pub fn param_f64(&self, key: &str) -> Result<f64> {
        self.params
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| Error::Fixture {
                case: self.name.clone(),
                message: format!("has no numeric parameter `{key}`"),
            })
    }

    /// String parameter `key` of `params`.
    pub fn param_str(&self, key: &str) -> Result<&str> {
        self.params
            .get(key)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Error::Fixture {
                case: self.name.clone(),
                message: format!("has no string parameter `{key}`"),
            })
    }

    /// Boolean parameter `key` of `params` (false when absent).
    pub fn param_bool(&self, key: &str) -> bool {
        self.params
            .get(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
