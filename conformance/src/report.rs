//! The readable report: one row per check, then a summary line.

use crate::{Check, Outcome};

pub fn table(checks: &[Check]) -> String {
    let rows: Vec<[String; 4]> = checks
        .iter()
        .map(|c| {
            let outcome = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::NotApplicable => "N/A",
            };
            [outcome.to_owned(), c.name.clone(), c.reference.to_owned(), c.evidence.clone()]
        })
        .collect();
    let header = ["RESULT", "CHECK", "STANDARD", "EVIDENCE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row).take(3) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let count = |o: Outcome| checks.iter().filter(|c| c.outcome == o).count();
    out.push_str(&format!(
        "{} passed, {} failed, {} not applicable\n",
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::NotApplicable)
    ));
    out
}
