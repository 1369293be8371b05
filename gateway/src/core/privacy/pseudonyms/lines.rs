//! The export format of a pseudonym map (`dicomweb-gateway state export` / `state import`):
//! JSON lines. The first line names the format and its version,
//! `{"format":"dicomweb-gateway pseudonym map","version":1}`; every other line is one entry,
//! `{"project":"…","pseudonym":"…","kind":"study|series|instance|patient","value":"…","issuer":…}`
//! (`issuer` a string for a patient, else null). The file holds the sites' values: it is as
//! sensitive as the map itself. Importing is idempotent: an entry already in the map is left as
//! it is, one that stands for a different original is an error (reported by line number, never
//! by content).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{Kind, Original, PseudonymStore};

pub const FORMAT: &str = "dicomweb-gateway pseudonym map";
pub const VERSION: u32 = 1;

/// Entries recorded at once while importing.
const IMPORT_BATCH: usize = 1000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    project: &'a str,
    pseudonym: &'a str,
    kind: &'a str,
    value: &'a str,
    issuer: Option<&'a str>,
}

/// Writes every entry of `store`; returns how many.
pub fn export(store: &dyn PseudonymStore, out: &mut dyn Write) -> anyhow::Result<u64> {
    serde_json::to_writer(&mut *out, &Header { format: FORMAT.into(), version: VERSION })?;
    out.write_all(b"\n")?;
    let mut count = 0u64;
    store.each(&mut |project, pseudonym, original| {
        let line = Line {
            project,
            pseudonym,
            kind: original.kind.as_str(),
            value: &original.value,
            issuer: original.issuer.as_deref(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        count += 1;
        Ok(())
    })?;
    out.flush()?;
    Ok(count)
}

/// Records every entry of an export in `store`; returns how many lines were read.
pub fn import(store: &dyn PseudonymStore, input: &mut dyn BufRead) -> anyhow::Result<u64> {
    let mut lines = input.lines();
    let header = lines.next().ok_or_else(|| anyhow::anyhow!("empty input: not an export of a pseudonym map"))??;
    match serde_json::from_str::<Header>(&header) {
        Ok(h) if h.format == FORMAT && h.version == VERSION => {}
        Ok(h) if h.format == FORMAT => {
            anyhow::bail!("export format version {} is not known (this gateway reads {VERSION})", h.version)
        }
        _ => anyhow::bail!("line 1 is not the header of a pseudonym map export ({FORMAT:?})"),
    }
    let mut batch: Vec<(String, String, Original)> = Vec::new();
    let mut count = 0u64;
    for (number, line) in lines.enumerate() {
        let number = number + 2;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Line<'_> = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("line {number}: not an entry (column {})", e.column()))?;
        let kind = Kind::parse(entry.kind).ok_or_else(|| anyhow::anyhow!("line {number}: unknown kind"))?;
        if entry.project.is_empty() || entry.pseudonym.is_empty() {
            anyhow::bail!("line {number}: empty project or pseudonym");
        }
        batch.push((
            entry.project.to_owned(),
            entry.pseudonym.to_owned(),
            Original { kind, value: entry.value.to_owned(), issuer: entry.issuer.map(str::to_owned) },
        ));
        count += 1;
        if batch.len() >= IMPORT_BATCH {
            record(store, std::mem::take(&mut batch)).map_err(|e| anyhow::anyhow!("before line {number}: {e:#}"))?;
        }
    }
    record(store, batch)?;
    Ok(count)
}

/// Records a batch, one call per project.
fn record(store: &dyn PseudonymStore, mut batch: Vec<(String, String, Original)>) -> anyhow::Result<()> {
    batch.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::new();
    let mut project: Option<String> = None;
    for (p, pseudonym, original) in batch {
        if project.as_deref() != Some(p.as_str()) {
            if let Some(done) = project.take() {
                store.record(&done, std::mem::take(&mut entries))?;
            }
            project = Some(p);
        }
        entries.push((pseudonym, original));
    }
    if let Some(done) = project {
        store.record(&done, entries)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::privacy::pseudonyms::Embedded;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pseudonym-lines-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn an_export_imports_into_another_store_unchanged_and_twice_is_harmless() {
        let (from_dir, to_dir) = (dir("from"), dir("to"));
        let from = Embedded::open(&from_dir).expect("open");
        let study = Original { kind: Kind::Study, value: "1.2.3".into(), issuer: None };
        let patient = Original { kind: Kind::Patient, value: "PAT-1".into(), issuer: Some("site-a".into()) };
        from.record("p1", vec![("2.25.1".into(), study.clone()), ("ABCDEF".into(), patient.clone())]).expect("rec");
        from.record("p2", vec![("2.25.1".into(), study.clone())]).expect("rec");
        let mut exported = Vec::new();
        assert_eq!(export(&from, &mut exported).expect("export"), 3);
        let text = String::from_utf8(exported.clone()).expect("utf-8");
        assert!(text.starts_with("{\"format\":\"dicomweb-gateway pseudonym map\",\"version\":1}\n"), "{text}");
        assert!(text
            .contains(r#"{"project":"p1","pseudonym":"ABCDEF","kind":"patient","value":"PAT-1","issuer":"site-a"}"#));

        let to = Embedded::open(&to_dir).expect("open");
        assert_eq!(import(&to, &mut exported.as_slice()).expect("import"), 3);
        assert_eq!(import(&to, &mut exported.as_slice()).expect("again"), 3);
        assert_eq!(to.resolve("p1", "ABCDEF").expect("read"), Some(patient));
        assert_eq!(to.resolve("p2", "2.25.1").expect("read"), Some(study));
        let mut again = Vec::new();
        export(&to, &mut again).expect("export");
        assert_eq!(again, exported, "the same lines, in the same order");
        drop((from, to));
        let _ = std::fs::remove_dir_all(from_dir);
        let _ = std::fs::remove_dir_all(to_dir);
    }

    #[test]
    fn bad_input_names_the_line_not_its_content() {
        let dir = dir("bad");
        let store = Embedded::open(&dir).expect("open");
        let header = format!("{{\"format\":\"{FORMAT}\",\"version\":1}}\n");
        let wrong = |text: &str| import(&store, &mut text.as_bytes()).expect_err("refused").to_string();
        assert!(wrong("").contains("empty input"));
        assert!(wrong("{\"project\":\"p\"}\n").contains("line 1 is not the header"));
        assert!(wrong("{\"format\":\"dicomweb-gateway pseudonym map\",\"version\":9}\n").contains("version 9"));
        let secret = format!("{header}{{\"project\":\"p\",\"pseudonym\":\"2.25.9\",\"kind\":\"scan\",\"value\":\"PAT-SECRET\",\"issuer\":null}}\n");
        let e = wrong(&secret);
        assert!(e.contains("line 2: unknown kind") && !e.contains("PAT-SECRET"), "{e}");
        let e = wrong(&format!("{header}\n{{\"project\":\"p\",\"value\":\"PAT-SECRET\"\n"));
        assert!(e.starts_with("line 3: not an entry") && !e.contains("PAT-SECRET"), "{e}");
        assert_eq!(store.resolve("p", "2.25.9").expect("read"), None, "nothing recorded from a refused file");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
