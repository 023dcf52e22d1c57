//! What `orgops plan` reads: YAML files, directories of them, or a kustomize directory
//! built by `kubectl kustomize` (the same builder `kubectl apply -k` uses).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One YAML document and where it came from (`file#index`).
#[derive(Clone, Debug)]
pub struct Doc {
    pub source: String,
    pub value: Value,
}

/// A problem with one input, named by file (and document).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{source_name}: invalid YAML: {detail}")]
    Yaml { source_name: String, detail: String },
    #[error("-k {dir}: kubectl kustomize failed: {detail}")]
    Kustomize { dir: String, detail: String },
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Files under `path` (itself, or the YAML files of a directory tree, sorted).
fn files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let meta = std::fs::metadata(path).map_err(|source| InputError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| InputError::Read {
            path: path.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files(&entry, out)?;
        } else if is_yaml(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Splits a YAML stream into documents; empty documents are skipped.
pub fn parse(source: &str, text: &str) -> Result<Vec<Doc>, InputError> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source_name = format!("{source}#{}", i + 1);
        let value = Value::deserialize(de).map_err(|e| InputError::Yaml {
            source_name: source_name.clone(),
            detail: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        docs.push(Doc {
            source: source_name,
            value,
        });
    }
    Ok(docs)
}

/// Every document of `-f` paths; errors per file, documents of good files kept.
pub fn read_files(paths: &[PathBuf]) -> (Vec<Doc>, Vec<InputError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let mut list = Vec::new();
        if let Err(e) = files(path, &mut list) {
            errors.push(e);
            continue;
        }
        for file in list {
            let name = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => match parse(&name, &text) {
                    Ok(mut d) => docs.append(&mut d),
                    Err(e) => errors.push(e),
                },
                Err(source) => errors.push(InputError::Read { path: name, source }),
            }
        }
    }
    (docs, errors)
}

/// The documents `kubectl kustomize DIR` builds.
pub fn kustomize(dir: &Path, kubectl: &str) -> Result<Vec<Doc>, InputError> {
    let shown = dir.display().to_string();
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| InputError::Kustomize {
            dir: shown.clone(),
            detail: format!("cannot run {kubectl}: {e}"),
        })?;
    if !out.status.success() {
        return Err(InputError::Kustomize {
            dir: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    parse(
        &format!("{shown} (kustomize)"),
        &String::from_utf8_lossy(&out.stdout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_named_and_bad_yaml_names_its_document() {
        let docs = parse("a.yaml", "---\nkind: A\n---\n---\nkind: B\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].source, "a.yaml#3");
        let err = parse("b.yaml", "kind: A\n---\nkind: [\n").unwrap_err();
        assert!(
            err.to_string().starts_with("b.yaml#2: invalid YAML"),
            "{err}"
        );
    }
}
