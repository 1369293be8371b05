//! pydicom's shipped test files: about 80 real DICOM files of many modalities, transfer
//! syntaxes and oddities, found through the installed pydicom.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// Every file of pydicom's `data/test_files` that looks like DICOM (by extension or name),
/// sorted by name so the selection is stable.
pub fn list() -> anyhow::Result<Vec<PathBuf>> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
        ])
        .output()
        .context("running python3 to find pydicom")?;
    if !output.status.success() {
        bail!("pydicom is missing: pip install pydicom ({})", String::from_utf8_lossy(&output.stderr).trim());
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .dcm files in {}", dir.display());
    }
    Ok(files)
}
