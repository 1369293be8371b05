//! The report: a readable table (one row per check, then a summary line naming how many checks
//! ran), JSON, and JUnit XML for CI.

use crate::{Check, Outcome};

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::NotApplicable => "N/A",
    }
}

fn count(checks: &[Check], outcome: Outcome) -> usize {
    checks.iter().filter(|c| c.outcome == outcome).count()
}

/// `N checks: P passed, F failed, A not applicable`
pub fn summary(checks: &[Check]) -> String {
    format!(
        "{} checks: {} passed, {} failed, {} not applicable",
        checks.len(),
        count(checks, Outcome::Pass),
        count(checks, Outcome::Fail),
        count(checks, Outcome::NotApplicable)
    )
}

pub fn table(checks: &[Check]) -> String {
    let rows: Vec<[String; 4]> = checks
        .iter()
        .map(|c| [label(c.outcome).to_owned(), c.name.clone(), c.reference.clone(), c.evidence.clone()])
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
    out.push_str(&summary(checks));
    out.push('\n');
    out
}

/// `{"tool": ..., "target": ..., "summary": {...}, "checks": [{name, reference, outcome, evidence}]}`
pub fn json(command: &str, target: &str, checks: &[Check]) -> String {
    let entries: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "reference": c.reference,
                "outcome": match c.outcome {
                    Outcome::Pass => "pass",
                    Outcome::Fail => "fail",
                    Outcome::NotApplicable => "not-applicable",
                },
                "evidence": c.evidence,
            })
        })
        .collect();
    let report = serde_json::json!({
        "tool": "dicomweb-conformance",
        "command": command,
        "target": target,
        "summary": {
            "checks": checks.len(),
            "passed": count(checks, Outcome::Pass),
            "failed": count(checks, Outcome::Fail),
            "not_applicable": count(checks, Outcome::NotApplicable),
        },
        "checks": entries,
    });
    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One test suite, a test case per check: a failure element for a failed check, skipped for
/// one that does not apply; the standard's section is the class name.
pub fn junit(command: &str, checks: &[Check]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"dicomweb-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
        checks.len(),
        count(checks, Outcome::Fail),
        count(checks, Outcome::NotApplicable)
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">\n",
        xml_escape(command),
        checks.len(),
        count(checks, Outcome::Fail),
        count(checks, Outcome::NotApplicable)
    ));
    for check in checks {
        let head = format!(
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(&check.reference),
            xml_escape(&check.name)
        );
        let evidence = xml_escape(&check.evidence);
        match check.outcome {
            Outcome::Pass => {
                out.push_str(&format!("{head}>\n      <system-out>{evidence}</system-out>\n    </testcase>\n"))
            }
            Outcome::Fail => out.push_str(&format!(
                "{head}>\n      <failure message=\"{evidence}\" type=\"{}\">{evidence}</failure>\n    </testcase>\n",
                xml_escape(&check.reference)
            )),
            Outcome::NotApplicable => {
                out.push_str(&format!("{head}>\n      <skipped message=\"{evidence}\"/>\n    </testcase>\n"))
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Check> {
        vec![
            Check::new("a <b>", "PS3.18 §1", Outcome::Pass, "ok & \"fine\""),
            Check::new("c", "PS3.18 §2", Outcome::Fail, "bad \u{1} byte"),
            Check::new("d", "PS3.18 §3", Outcome::NotApplicable, "no data"),
        ]
    }

    #[test]
    fn table_ends_with_the_count_of_checks() {
        let table = table(&sample());
        assert!(table.starts_with("RESULT"));
        assert!(table.ends_with("3 checks: 1 passed, 1 failed, 1 not applicable\n"), "{table}");
    }

    #[test]
    fn json_and_junit_carry_every_check_escaped() {
        let json: serde_json::Value = serde_json::from_str(&json("web", "http://x", &sample())).expect("valid JSON");
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["checks"][2]["outcome"], "not-applicable");
        let xml = junit("web", &sample());
        assert!(xml.contains("tests=\"3\" failures=\"1\""));
        assert!(xml.contains("name=\"a &lt;b&gt;\""));
        assert!(xml.contains("ok &amp; &quot;fine&quot;"));
        assert!(xml.contains("bad \\x01 byte"));
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert_eq!(xml.matches("<skipped ").count(), 1);
    }
}
