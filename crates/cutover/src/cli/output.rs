//! What the CLI prints: tables for people, JSON for machines, and deploy progress.

use crate::protocol::*;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Prints `value` as JSON, or through `text` for people.
pub fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: fn(&T) -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text(value))?;
    }
    Ok(())
}

pub fn time(unix_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `text` with every control character escaped (`\n`, `\t`, `\r`, `\x1b`, `\u{9b}`):
/// client-supplied strings (who deployed, reasons, messages) cannot move the cursor, recolour the
/// terminal or forge a line of a table.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, false)
}

/// Like [`printable`], but keeps line breaks: for multi-line messages (a failing instance's
/// last log lines) that are meant to be read as lines.
pub fn printable_lines(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, true)
}

fn escape_controls(text: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let kept = |c: char| keep_newlines && c == '\n';
    if !text.chars().any(|c| c.is_control() && !kept(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if kept(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Left-aligned columns, two spaces apart; cells are made [`printable`].
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The config a running daemon uses: which file, which version (a sha256 prefix), since when.
fn config_line(config: &ConfigInfo) -> String {
    format!(
        "config: {} (sha256 {}, loaded at {})\n",
        printable(&config.path.display().to_string()),
        config.sha256.get(..12).unwrap_or(&config.sha256),
        time(config.loaded_at)
    )
}

pub fn status(status: &StatusResponse) -> String {
    let mut out = match &status.daemon {
        Some(d) => format!(
            "daemon: running (pid {}, version {}, up since {})\n{}\n",
            d.pid,
            d.version,
            time(d.started_at),
            d.config.as_ref().map(config_line).unwrap_or_default()
        ),
        None => "daemon: NOT RUNNING (showing the last committed state)\n\n".to_owned(),
    };
    let rows: Vec<Vec<String>> = status
        .components
        .iter()
        .map(|c| {
            let serving = match (&c.serving, &c.serving_release, &status.daemon) {
                (Some(s), _, _) => format!("{} (pid {}, port {})", s.release, s.pid, s.port),
                (None, Some(release), _) => release.clone(),
                (None, None, Some(_)) => "nothing".into(),
                (None, None, None) => "-".into(),
            };
            let traffic = c
                .stats
                .map(|s| format!("{} req, {} failed", s.requests, s.failed))
                .unwrap_or_else(|| "-".into());
            let health = c.health.as_ref().map_or_else(
                || "-".into(),
                |h| match h.consecutive_failures {
                    0 => h.state.as_str().to_owned(),
                    n => format!("{} ({n} failed)", h.state.as_str()),
                },
            );
            let deploying = c
                .deploying
                .as_ref()
                .map(|d| format!("-> {} by {}", d.release, d.who))
                .unwrap_or_else(|| "-".into());
            vec![
                c.name.clone(),
                c.listen.clone(),
                c.active.clone().unwrap_or_else(|| "(none)".into()),
                c.previous.clone().unwrap_or_else(|| "-".into()),
                serving,
                health,
                traffic,
                deploying,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "COMPONENT",
            "LISTEN",
            "ACTIVE",
            "PREVIOUS",
            "SERVING",
            "HEALTH",
            "TRAFFIC",
            "DEPLOYING",
        ],
        &rows,
    ));
    out.push_str(&certificates_part(&status.certificates));
    out
}

/// `status`'s short certificates part: each one's expiry and last error.
fn certificates_part(certificates: &[CertificateInfo]) -> String {
    if certificates.is_empty() {
        return String::new();
    }
    let now = crate::vocab::now_millis();
    let rows: Vec<Vec<String>> = certificates
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.not_after
                    .map_or_else(|| "-".into(), |at| expires(at, now)),
                c.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    format!(
        "\n{}",
        table(&["CERTIFICATE", "EXPIRES", "LAST ERROR"], &rows)
    )
}

/// `2025-09-01 12:00:00 (89 days left)`, or `(EXPIRED)`.
pub fn expires(not_after_ms: i64, now_ms: i64) -> String {
    let left = not_after_ms - now_ms;
    let days = match left / 86_400_000 {
        _ if left <= 0 => "EXPIRED".to_owned(),
        1 => "1 day left".to_owned(),
        n => format!("{n} days left"),
    };
    format!("{} ({days})", time(not_after_ms))
}

/// `cutover certs`: one row per certificate, then what went wrong with each that failed.
pub fn certs(certs: &CertsResponse) -> String {
    let mut out = if certs.online {
        String::new()
    } else {
        "daemon: NOT RUNNING (showing the certificates on disk)\n\n".to_owned()
    };
    if certs.certificates.is_empty() {
        out.push_str(
            "no certificates: no component has `tls` files, and `[edge] acme` is not set\n",
        );
        return out;
    }
    let now = crate::vocab::now_millis();
    let rows: Vec<Vec<String>> = certs
        .certificates
        .iter()
        .map(|c| {
            let source = match (c.source, &c.challenge) {
                (CertSource::Acme, Some(challenge)) => format!("acme ({challenge})"),
                (CertSource::Acme, None) => "acme".into(),
                (CertSource::File, _) => format!("file {}", c.path.display()),
            };
            let state = match (c.issuing, c.failures, &c.last_error, c.not_after) {
                (true, _, _, _) => "issuing".to_owned(),
                (false, 0, None, Some(_)) => "ok".into(),
                (false, 0, None, None) if certs.online => "waiting".into(),
                (false, 0, None, None) => "not issued".into(),
                (false, 0, Some(_), _) => "unusable".into(),
                (false, 1, _, _) => "failed once".into(),
                (false, n, _, _) => format!("failed {n} times"),
            };
            vec![
                c.name.clone(),
                c.hosts.join(","),
                source,
                c.not_after
                    .map_or_else(|| "-".into(), |at| expires(at, now)),
                c.renew_at.map_or_else(|| "-".into(), time),
                state,
            ]
        })
        .collect();
    out.push_str(&table(
        &["NAME", "HOSTS", "SOURCE", "EXPIRES", "RENEW AT", "STATE"],
        &rows,
    ));
    for c in certs.certificates.iter() {
        let Some(error) = &c.last_error else {
            continue;
        };
        let next = match c.next_attempt {
            Some(at) if at > now => format!(" (next attempt at {})", time(at)),
            Some(_) => " (next attempt now)".into(),
            None => String::new(),
        };
        // ACME's errors already start with the host, which is the certificate's name.
        let error = match error.starts_with(&format!("{}: ", c.name)) {
            true => error.clone(),
            false => format!("{}: {error}", c.name),
        };
        out.push_str(&format!("\n{}{next}\n", printable(&error)));
    }
    out
}

/// The offline view, when a daemon runs but did not answer (the warning went to stderr).
pub fn status_not_answering(status: &StatusResponse) -> String {
    let table = self::status(status);
    let body = table
        .split_once("\n\n")
        .map_or(table.as_str(), |(_, rest)| rest);
    format!("daemon: NOT ANSWERING (showing the last committed state)\n\n{body}")
}

pub fn releases(releases: &ReleasesResponse) -> String {
    if releases.releases.is_empty() {
        return format!("no releases of {} stored yet\n", releases.component);
    }
    let rows: Vec<Vec<String>> = releases
        .releases
        .iter()
        .map(|r| {
            let mark = match (r.active, r.previous) {
                (true, _) => "active",
                (_, true) => "previous",
                _ => "",
            };
            vec![
                r.id.clone(),
                r.sha256[..r.sha256.len().min(12)].to_owned(),
                size(r.size),
                time(r.stored_at),
                r.outcome
                    .map_or("-", crate::protocol::outcome_words)
                    .to_owned(),
                mark.to_owned(),
            ]
        })
        .collect();
    table(
        &["RELEASE", "SHA256", "SIZE", "STORED", "OUTCOME", ""],
        &rows,
    )
}

pub fn history(history: &HistoryResponse) -> String {
    let daemon = daemon_history(history);
    if history.deploys.is_empty() && history.pipelines.is_empty() {
        return format!("no deploys yet\n{daemon}");
    }
    let pipelines: Vec<Vec<String>> = history
        .pipelines
        .iter()
        .map(|p| {
            let p_deploys: Vec<String> = p.deploys.iter().map(|d| format!("#{d}")).collect();
            let took = p
                .pipeline
                .ended_at
                .map(|end| format!("{:.1}s", (end - p.pipeline.started_at) as f64 / 1000.0))
                .unwrap_or_else(|| "running".into());
            vec![
                format!("#{}", p.pipeline.id),
                time(p.pipeline.started_at),
                p.pipeline.release.clone(),
                p.pipeline.components.join(","),
                p.pipeline
                    .outcome
                    .map_or("running", crate::protocol::outcome_words)
                    .to_owned(),
                took,
                p_deploys.join(" "),
                p.pipeline
                    .reason
                    .as_deref()
                    .map(first_line)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PIPELINE",
            "STARTED",
            "RELEASE",
            "COMPONENTS",
            "OUTCOME",
            "TOOK",
            "DEPLOYS",
            "REASON",
        ],
        &pipelines,
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = history
        .deploys
        .iter()
        .map(|h| {
            let d = &h.deploy;
            let took = d
                .ended_at
                .map(|end| format!("{:.1}s", (end - d.started_at) as f64 / 1000.0))
                .unwrap_or_else(|| "running".into());
            vec![
                format!("#{}", d.id),
                time(d.started_at),
                d.component.clone(),
                format!(
                    "{} -> {}",
                    d.from_release.as_deref().unwrap_or("(none)"),
                    d.to_release
                ),
                d.kind.as_str().to_owned(),
                d.outcome
                    .map_or("running", crate::protocol::outcome_words)
                    .to_owned(),
                took,
                d.who.clone(),
                d.reason.as_deref().map(first_line).unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "DEPLOY",
            "STARTED",
            "COMPONENT",
            "RELEASES",
            "KIND",
            "OUTCOME",
            "TOOK",
            "WHO",
            "REASON",
        ],
        &rows,
    ));
    out.push_str(&daemon);
    out
}

/// Reloads and upgrades, when there were any.
fn daemon_history(history: &HistoryResponse) -> String {
    if history.daemon.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = history
        .daemon
        .iter()
        .map(|e| vec![time(e.at), e.kind.clone(), e.who.clone(), e.summary.clone()])
        .collect();
    format!(
        "\n{}",
        table(&["DAEMON", "KIND", "WHO", "WHAT CHANGED"], &rows)
    )
}

pub fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
