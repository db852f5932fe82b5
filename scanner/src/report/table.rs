//! The human-readable table.

use std::fmt::Write;

use super::ScanReport;
use crate::finding::Severity;

fn cell(s: &str, width: usize) -> String {
    let mut out: String = s.chars().take(width).collect();
    if s.chars().count() > width && width > 1 {
        out.pop();
        out.push('…');
    }
    out
}

/// Renders the report as a plain-text table, most severe first.
pub fn render(report: &ScanReport) -> String {
    render_with(report, false)
}

/// Renders the report as a table, most severe first; with `colour`, each severity is
/// coloured (ANSI SGR) the way Trivy's table colours them.
pub fn render_with(report: &ScanReport, colour: bool) -> String {
    let sev = |s: Severity, width: usize| severity_cell(s, width, colour);
    let mut out = String::new();
    let os = report
        .os
        .as_ref()
        .map(|o| format!(" ({} {})", o.family, o.version))
        .unwrap_or_default();
    let s = &report.summary;
    let _ = writeln!(out, "{}{}", report.target, os);
    let _ = writeln!(
        out,
        "Total: {} (CRITICAL: {}, HIGH: {}, MEDIUM: {}, LOW: {}, UNKNOWN: {})",
        s.total(),
        s.critical,
        s.high,
        s.medium,
        s.low,
        s.unknown
    );
    if !report.vulnerabilities.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<28} {:<24} {:<20} {:<8} {:>5} {:<9} {:<24} TITLE",
            "PACKAGE", "VERSION", "ID", "SEVERITY", "SCORE", "SOURCE", "FIXED"
        );
        for f in &report.vulnerabilities {
            let score = f
                .score
                .map_or_else(|| "-".to_string(), |s| format!("{s:.1}"));
            let _ = writeln!(
                out,
                "{:<28} {:<24} {:<20} {} {:>5} {:<9} {:<24} {}",
                cell(&f.package.name, 28),
                cell(&f.package.version, 24),
                cell(&f.id, 20),
                sev(f.severity, 8),
                score,
                cell(f.severity_source.as_deref().unwrap_or("-"), 9),
                cell(f.fixed_version.as_deref().unwrap_or("-"), 24),
                cell(&super::display_title(f), 60)
            );
        }
    }
    if !report.malicious_packages.is_empty() {
        let _ = writeln!(
            out,
            "\nMalicious packages: {}",
            report.malicious_packages.len()
        );
        for f in &report.malicious_packages {
            let _ = writeln!(
                out,
                "{:<28} {:<24} {:<20} {}",
                cell(&f.package.name, 28),
                cell(&f.package.version, 24),
                f.id,
                f.title
            );
        }
    }
    let sections = [
        ("Baseline risks", &report.baseline_risks),
        ("Secrets", &report.secrets),
        ("Malicious samples", &report.malicious_samples),
    ];
    for (name, section) in sections {
        let Some(section) = section else { continue };
        let s = &section.summary;
        let _ = writeln!(
            out,
            "\n{name}: {} (CRITICAL: {}, HIGH: {}, MEDIUM: {}, LOW: {}, UNKNOWN: {})",
            section.findings.len(),
            s.critical,
            s.high,
            s.medium,
            s.low,
            s.unknown
        );
        if section.findings.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<30} {:<9} {:<40} {:<40} EVIDENCE",
            "ID", "SEVERITY", "TITLE", "WHERE"
        );
        for f in &section.findings {
            let place = match (&f.path, &f.config_key) {
                (Some(p), _) => match f.line {
                    Some(l) => format!("/{p}:{l}"),
                    None => format!("/{p}"),
                },
                (None, Some(k)) => k.clone(),
                (None, None) => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<30} {} {:<40} {:<40} {}",
                cell(&f.id, 30),
                sev(f.severity, 9),
                cell(&f.title, 40),
                cell(&place, 40),
                cell(&f.evidence, 80)
            );
        }
    }
    for w in &report.warnings {
        let _ = writeln!(out, "\nWarning: {w}");
    }
    if !report.ignored.is_empty() {
        let _ = writeln!(out, "\nIgnored: {}", report.ignored.join(", "));
    }
    out
}

/// The severity padded to `width`, wrapped in its colour when `colour` is set.
fn severity_cell(s: Severity, width: usize, colour: bool) -> String {
    let padded = format!("{:<width$}", sev_label(s));
    if !colour {
        return padded;
    }
    let code = match s {
        Severity::Critical => "1;31",
        Severity::High => "31",
        Severity::Medium => "33",
        Severity::Low => "34",
        Severity::Unknown => "90",
    };
    // Only the label is coloured; the padding stays outside so columns line up.
    let label = sev_label(s);
    format!("\x1b[{code}m{label}\x1b[0m{}", &padded[label.len()..])
}

fn sev_label(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::High => "HIGH",
        Severity::Medium => "MEDIUM",
        Severity::Low => "LOW",
        Severity::Unknown => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coloured_severities_keep_their_columns() {
        assert_eq!(severity_cell(Severity::High, 8, false), "HIGH    ");
        let c = severity_cell(Severity::Critical, 9, true);
        assert_eq!(c, "\x1b[1;31mCRITICAL\x1b[0m ");
        assert_eq!(
            severity_cell(Severity::Low, 8, true),
            "\x1b[34mLOW\x1b[0m     "
        );
    }
}
